"""Outgoing HTTP for integrations: every request passes the outbound address policy at send
time and goes to the address that was checked (pinned), so a DNS answer that changes
between check and connect cannot reach an internal host. Redirects are never followed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from opscenter.core.errors import InvalidInput
from opscenter.core.outbound import OutboundPolicy

_MAX_ERROR_CHARS = 300


class DeliveryError(Exception):
    """A failed request. `permanent` errors (refused address, bad configuration) are not
    retried. The message never holds a secret: callers pass theirs to `redact`."""

    def __init__(
        self, message: str, *, status_code: int | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message[:_MAX_ERROR_CHARS]
        self.status_code = status_code
        self.permanent = permanent


@dataclass
class Sent:
    status_code: int
    body: Any  # parsed JSON when the answer is JSON, else None


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class OutboundClient:
    def __init__(self, policy: OutboundPolicy, timeout: float) -> None:
        self.policy = policy
        self._client = httpx.AsyncClient(
            follow_redirects=False, timeout=timeout, trust_env=False, verify=True
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def check_url(self, url: str) -> None:
        """The address policy's verdict on a URL, without blocking the loop on DNS."""
        await asyncio.to_thread(self.policy.check_url, url)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
        data: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Sent:
        parts = urlsplit(url)
        try:
            await self.check_url(url)
            addresses = await asyncio.to_thread(
                self.policy.check_host, parts.hostname or "", parts.port
            )
        except InvalidInput as err:
            raise DeliveryError(f"refused: {err.detail}", permanent=True) from None
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        address = addresses[0]
        host = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))
        all_headers = {**(headers or {}), "Host": parts.netloc}
        # TLS still checks the certificate against the name, not the pinned address.
        extensions = {"sni_hostname": parts.hostname} if scheme == "https" else None
        started = time.perf_counter()
        try:
            response = await self._client.request(
                method,
                pinned,
                headers=all_headers,
                content=content,
                json=json,
                data=data,
                params=params,
                auth=auth,
                extensions=extensions,
            )
        except httpx.TimeoutException:
            raise DeliveryError(f"timed out after {time.perf_counter() - started:.1f} s") from None
        except httpx.HTTPError as err:
            raise DeliveryError(f"{type(err).__name__}: {err}") from None
        if 300 <= response.status_code < 400:
            raise DeliveryError(
                f"HTTP {response.status_code}: redirects are not followed; give the final URL",
                status_code=response.status_code,
            )
        if response.status_code >= 400:
            raise DeliveryError(
                f"HTTP {response.status_code}: {response.text[:200]}",
                status_code=response.status_code,
            )
        body: Any = None
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = response.json()
            except ValueError:
                body = None
        return Sent(response.status_code, body)
