"""The pure ASGI layer in front of the routes: request ids, logs and metrics, deferred work,
rate limit, body limit."""

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
#: Methods that change nothing: a lighter rate limit, a read session, no log line.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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


class RateLimits:
    """Per caller (user, API key, or address when anonymous): a general limit on every
    request and a stricter one on writes."""

    def __init__(
        self, limiter: RateLimiter, keyring: Keyring, default_rule: str, write_rule: str
    ) -> None:
        self.limiter = limiter
        self.keyring = keyring
        self.default_rule = default_rule
        self.write_rule = write_rule

    def caller(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
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

    async def verdict(self, scope: Scope, caller: str) -> Verdict:
        # An API key is only checked after this, so each made-up key would get a fresh
        # budget: keys that fail authentication count against the address (`refused_key`),
        # and once they have spent its budget, unverified keys from there are limited as
        # the address.
        address = _address(scope)
        if caller.startswith("key:") and not await self.limiter.test(
            self.default_rule, "all", address
        ):
            caller = address
        verdict = await self.limiter.hit(self.default_rule, "all", caller)
        if verdict.allowed and scope["method"] not in SAFE_METHODS:
            write = await self.limiter.hit(self.write_rule, "write", caller)
            verdict = write if not write.allowed else verdict
        return verdict

    async def refused_key(self, scope: Scope) -> None:
        await self.limiter.hit(self.default_rule, "all", _address(scope))


class Gateway:
    """The one pure-ASGI layer in front of the routes, doing in order:

    - `/servers/` is `/servers`: the seeds write collection routes both ways, and a redirect
      would make clients resend (or drop) their body and credentials;
    - a request id (the caller's `X-Request-ID` if well formed), the request's log line and
      metrics, and the work `defer`red until after the response;
    - rate limits on /api/: headers on every response, 429 + Retry-After past them;
    - the body limit: 413 before parsing, by Content-Length and by counting a chunked body
      as it arrives (uploads that stream to storage are `body_exempt`).

    One layer rather than one per concern: each layer wraps `send` (and adds a frame) for
    every request, a cost measured in the filtered list's requests per second.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: RateLimits,
        max_body_bytes: int,
        body_exempt: tuple[re.Pattern[str], ...] = (),
    ) -> None:
        self.app = app
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.body_exempt = body_exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            raw: bytes = scope.get("raw_path") or path.encode()
            scope = {**scope, "path": path.rstrip("/") or "/", "raw_path": raw.rstrip(b"/") or b"/"}
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        added = [(b"x-request-id", request_id.encode())]
        status = 0  # none sent yet
        started = time.perf_counter()

        async def respond(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                own = message.get("headers", [])
                present = {k.lower() for k, _ in own}
                message["headers"] = [*own, *(h for h in added if h[0] not in present)]
            await send(message)

        try:
            caller = await self._limited(scope, headers, receive, respond, added)
            if status == 401 and caller.startswith("key:"):
                await self.limits.refused_key(scope)
        except _TooLarge as err:
            if not status:
                await send_error(respond, 413, "PAYLOAD_TOO_LARGE", err.detail)
        finally:
            self._finished(scope, status or 500, time.perf_counter() - started, request_id)
            for task in state.get("after_response", []):
                try:
                    await task()
                except Exception:
                    log.exception("after_response task failed", request_id=request_id)

    async def _limited(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        receive: Receive,
        respond: Send,
        added: list[tuple[bytes, bytes]],
    ) -> str:
        """Answer the request unless a limit refuses it; returns the rate-limited caller
        ("" off /api/)."""
        path: str = scope["path"]
        exempt = any(pattern.fullmatch(path) for pattern in self.body_exempt)
        too_big = f"Request body larger than {self.max_body_bytes} bytes"
        length = headers.get(b"content-length")
        declared_too_big = length is not None and (
            not length.isdigit() or int(length) > self.max_body_bytes
        )
        if not exempt and declared_too_big:
            await send_error(respond, 413, "PAYLOAD_TOO_LARGE", too_big)
            return ""
        caller = ""
        if path.startswith("/api/"):
            caller = self.limits.caller(scope, headers)
            verdict = await self.limits.verdict(scope, caller)
            if not verdict.allowed:
                await send_error(
                    respond,
                    429,
                    "RATE_LIMITED",
                    f"Too many requests; retry in {verdict.retry_after} s",
                    {**verdict.headers(), "Retry-After": str(verdict.retry_after)},
                )
                return caller
            added += [(k.lower().encode(), v.encode()) for k, v in verdict.headers().items()]
        if not exempt and (length is None or int(length) > 0):
            receive = self._counted(receive, too_big)
        await self.app(scope, receive, respond)
        return caller

    def _counted(self, receive: Receive, too_big: str) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(too_big)
            return message

        return counted

    @staticmethod
    def _finished(scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        REQUESTS.labels(method, route, str(status)).inc()
        LATENCY.labels(method, route).observe(elapsed)
        # Every change and every failure is logged; a successful read only at DEBUG:
        # writing a line per read costs more than the read itself.
        quiet = status < 400 and scope["method"] in SAFE_METHODS
        (log.debug if quiet else log.info)(
            "request",
            method=scope["method"],
            path=scope["path"],
            route=route,
            status=status,
            ms=round(elapsed * 1000, 1),
            request_id=request_id,
        )


class _TooLarge(HTTPException):
    """Raised from receive(); an HTTPException, so FastAPI's body parsing lets it through
    as a 413 instead of wrapping it into a 400."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")
