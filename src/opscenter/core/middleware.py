"""Pure ASGI middleware: request ids, logs and metrics, deferred work, body limit, rate limit."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.logging import get_logger
from opscenter.core.metrics import LATENCY, REQUESTS
from opscenter.core.ratelimit import RateLimiter, Verdict
from opscenter.core.security import Keyring, sha256_hex

log = get_logger("opscenter.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
AfterTask = Callable[[], Awaitable[None]]
# Metric labels take these methods as they are and any other as "OTHER": a client that
# makes methods up must not make up time series too.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def send_error(
    send: Send, status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail, "code": code, "timestamp": isoformat_z(utcnow())}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def defer(scope_state: Any, task: AfterTask) -> None:
    """Run `task` once the request (and its database session) has finished.

    Used for writes that must survive the request's rollback: security events of a
    refused request. Runs after the response, outside the request's transaction.
    """
    tasks: list[AfterTask] = getattr(scope_state, "after_response", None) or []
    tasks.append(task)
    scope_state.after_response = tasks


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            # Every change and every failure is logged; a successful read only at DEBUG:
            # writing a line per read costs more than the read itself.
            quiet = status < 400 and scope["method"] in {"GET", "HEAD", "OPTIONS"}
            (log.debug if quiet else log.info)(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route,
                status=status,
                ms=round(elapsed * 1000, 1),
                request_id=request_id,
            )
            for task in state.get("after_response", []):
                try:
                    await task()
                except Exception:
                    log.exception("after_response task failed", request_id=request_id)


class TrailingSlashMiddleware:
    """`/servers/` is `/servers`: the seeds write collection routes both ways, and a redirect
    would make clients resend (or drop) their body and credentials."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and len(path) > 1 and path.endswith("/"):
            stripped = path.rstrip("/") or "/"
            raw: bytes = scope.get("raw_path") or path.encode()
            scope = {**scope, "path": stripped, "raw_path": raw.rstrip(b"/") or b"/"}
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 before parsing: by Content-Length, and by counting a chunked body as it arrives."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        exempt: tuple[re.Pattern[str], ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    def _exempt(self, path: str) -> bool:
        return any(pattern.fullmatch(path) for pattern in self.exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        too_big = f"Request body larger than {self.max_bytes} bytes"
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await send_error(send, 413, "PAYLOAD_TOO_LARGE", too_big)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(too_big)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_error(send, 413, "PAYLOAD_TOO_LARGE", too_big)


class _TooLarge(HTTPException):
    """Raised from receive(); an HTTPException, so FastAPI's body parsing lets it through
    as a 413 instead of wrapping it into a 400."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class RateLimitMiddleware:
    """Per caller (user, API key, or address when anonymous): a general limit on every
    request and a stricter one on writes. Headers on every response, 429 + Retry-After."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        keyring: Keyring,
        default_rule: str,
        write_rule: str,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.keyring = keyring
        self.default_rule = default_rule
        self.write_rule = write_rule

    def _caller(self, scope: Scope) -> str:
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not token:
            cookies = headers.get(b"cookie", b"").decode("latin-1")
            match = re.search(r"(?:^|;\s*)session_token=([^;]+)", cookies)
            token = match.group(1) if match else ""
        claims = self.keyring.claims_or_none(token) if token else None
        if claims is not None:
            return "user:" + str(claims["sub"])
        api_key = headers.get(b"x-api-key")
        if api_key:
            return "key:" + sha256_hex(api_key.decode("latin-1"))[:24]
        return _address(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        caller = self._caller(scope)
        address = _address(scope)
        # An API key is only checked after this middleware, so each made-up key would get a
        # fresh budget: keys that fail authentication count against the address, and once
        # they have spent its budget, unverified keys from there are limited as the address.
        if caller.startswith("key:") and not await self.limiter.test(
            self.default_rule, "all", address
        ):
            caller = address
        verdict = await self.limiter.hit(self.default_rule, "all", caller)
        if verdict.allowed and scope["method"] not in {"GET", "HEAD", "OPTIONS"}:
            write = await self.limiter.hit(self.write_rule, "write", caller)
            verdict = write if not write.allowed else verdict
        if not verdict.allowed:
            await _send_limited(send, verdict)
            return

        status = 0

        async def with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in verdict.headers().items()
                    if k.lower().encode() not in present
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
        if status == 401 and caller.startswith("key:"):
            await self.limiter.hit(self.default_rule, "all", address)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


async def _send_limited(send: Send, verdict: Verdict) -> None:
    await send_error(
        send,
        429,
        "RATE_LIMITED",
        f"Too many requests; retry in {verdict.retry_after} s",
        {**verdict.headers(), "Retry-After": str(verdict.retry_after)},
    )
