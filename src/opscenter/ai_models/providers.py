"""The providers' HTTP APIs, called directly: OpenAI chat completions (also Ollama,
llama.cpp, vLLM and every other OpenAI-compatible server) and Anthropic's Messages API.

Every request passes the outbound address policy at send time and goes to the address
that was checked (pinned), redirects are never followed, and no error message carries
the API key (the provider's own error text is scrubbed of it, and a refused key's answer
is not quoted at all)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from opscenter.core.errors import InvalidInput
from opscenter.core.outbound import OutboundPolicy

DEFAULT_ENDPOINTS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
ANTHROPIC_VERSION = "2023-06-01"
TRANSIENT = frozenset({"timeout", "rate_limited", "server_error", "unreachable"})


@dataclass(frozen=True)
class Target:
    """One model of a chain, with what a call needs (the key decrypted, in memory only)."""

    model_id: int
    name: str
    provider: str
    model: str
    endpoint: str
    api_key: str | None = field(repr=False)
    parameters: dict[str, Any]
    price_in: float
    price_out: float


@dataclass(frozen=True)
class Reply:
    text: str
    tokens_in: int
    tokens_out: int
    status_code: int


class CallFailed(Exception):
    """An attempt that did not answer; `outcome` classifies it, `transient` ones retry."""

    def __init__(self, outcome: str, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message[:480]
        self.status_code = status_code

    @property
    def transient(self) -> bool:
        return self.outcome in TRANSIENT


def scrub(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def _request(target: Target, messages: list[dict[str, str]]) -> tuple[str, dict[str, str], Any]:
    """The URL, headers and JSON body of one call in the provider's protocol."""
    params = target.parameters
    base = target.endpoint.rstrip("/")
    if target.provider == "anthropic":
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, Any] = {
            "model": target.model,
            "max_tokens": int(params.get("max_tokens") or 1024),
            "messages": [m for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = system
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if target.api_key:
            headers["x-api-key"] = target.api_key
        url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
    else:
        body = {
            "model": target.model,
            "messages": messages,
            "max_tokens": int(params.get("max_tokens") or 1024),
        }
        headers = {}
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        url = f"{base}/chat/completions"
    for name in ("temperature", "top_p"):
        if params.get(name) is not None:
            body[name] = params[name]
    return url, headers, body


def _parse(provider: str, data: Any) -> tuple[str, int, int]:
    """The answer's text and token counts; KeyError/TypeError/ValueError when malformed."""
    if provider == "anthropic":
        text = "".join(b["text"] for b in data["content"] if b.get("type") == "text")
        usage = data.get("usage") or {}
        return text, int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    text = data["choices"][0]["message"]["content"] or ""
    usage = data.get("usage") or {}
    return str(text), int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _provider_error(response: httpx.Response) -> str:
    """The provider's own error message (both protocols nest it as error.message)."""
    try:
        data = response.json()
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        message = ""
    return str(message or response.text or response.reason_phrase)[:300]


def _classify(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth_failed"
    if status >= 500 or status == 408:
        return "server_error"
    return "client_error"


async def _pinned(policy: OutboundPolicy, url: str) -> tuple[str, dict[str, str], Any]:
    """The URL with the host replaced by the address the policy approved."""
    parts = urlsplit(url)
    try:
        addresses = await asyncio.to_thread(policy.check_host, parts.hostname or "", parts.port)
    except InvalidInput as err:
        raise CallFailed("refused", f"refused: {err.detail}") from None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = addresses[0]
    host = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{host}:{port}", parts.path, "", ""))
    # TLS still checks the certificate against the name, not the pinned address.
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else None
    return pinned, {"Host": parts.netloc}, extensions


async def complete(
    client: httpx.AsyncClient,
    policy: OutboundPolicy,
    target: Target,
    messages: list[dict[str, str]],
) -> Reply:
    """One attempt against one model; raises CallFailed with a message free of the key."""
    url, headers, body = _request(target, messages)
    pinned, host_header, extensions = await _pinned(policy, url)
    timeout = float(target.parameters.get("timeout_seconds") or 60)
    started = time.perf_counter()
    try:
        response = await client.post(
            pinned,
            json=body,
            headers={**headers, **host_header},
            timeout=timeout,
            extensions=extensions,
        )
    except httpx.TimeoutException:
        raise CallFailed(
            "timeout", f"no answer within {time.perf_counter() - started:.1f} s"
        ) from None
    except httpx.HTTPError as err:
        message = scrub(f"{type(err).__name__}: {err}", target.api_key)
        raise CallFailed("unreachable", message) from None
    status = response.status_code
    if 300 <= status < 400:
        raise CallFailed("client_error", f"HTTP {status}: redirects are not followed", status)
    if status >= 400:
        outcome = _classify(status)
        if outcome == "auth_failed":  # some providers echo part of a refused key
            raise CallFailed(outcome, f"HTTP {status}: the provider refused the API key", status)
        detail = scrub(_provider_error(response), target.api_key)
        raise CallFailed(outcome, f"HTTP {status}: {detail}", status)
    try:
        text, tokens_in, tokens_out = _parse(target.provider, response.json())
    except (ValueError, KeyError, IndexError, TypeError):
        raise CallFailed(
            "bad_response", f"HTTP {status}: not a {target.provider} answer", status
        ) from None
    return Reply(text, tokens_in, tokens_out, status)
