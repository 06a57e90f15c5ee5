"""The WebSocket stream `/ws` (seeds 001 and 004): authenticate, subscribe to channels,
receive events as they happen; ping/pong and a server keep-alive."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from opscenter.auth.deps import SESSION_COOKIE, principal_from
from opscenter.core.context import AppContext
from opscenter.core.errors import AppError
from opscenter.core.principal import Principal
from opscenter.realtime import service

router = APIRouter(tags=["Real-time"])
POLICY_VIOLATION, TOO_BIG, TRY_AGAIN_LATER = 1008, 1009, 1013
MAX_FRAME = 64 * 1024
CLIENT_QUEUE = 256
AUTH_WAIT_SECONDS = 10


class _Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _receive(websocket: WebSocket) -> dict[str, Any]:
    text = await websocket.receive_text()
    if len(text) > MAX_FRAME:
        raise _Closed(TOO_BIG, f"frames are limited to {MAX_FRAME} bytes")
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _trusted_origin(websocket: WebSocket) -> bool:
    """No Origin (not a browser), the server's own (scheme aside: a TLS proxy may sit in
    front), or one of ALLOWED_ORIGINS."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    allowed: list[str] = websocket.app.state.ctx.settings.allowed_origins
    host = websocket.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower() or origin.rstrip("/") in allowed


async def _authenticate(ctx: AppContext, credentials: dict[str, str]) -> Principal:
    try:
        async with ctx.db.read_session() as session:
            return await principal_from(ctx, session, **credentials)
    except AppError as err:
        raise _Closed(POLICY_VIOLATION, err.detail) from None


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    """Auth by `?token=`, the session cookie, or a first `{"type": "auth", "token": ...}`.
    Then `{"type": "subscribe" | "unsubscribe", "channels": [...]}` and `{"type": "ping"}`."""
    ctx: AppContext = websocket.app.state.ctx
    credentials = {
        "token": websocket.query_params.get("token") or "",
        "cookie": websocket.cookies.get(SESSION_COOKIE) or "",
    }
    if not credentials["token"] and credentials["cookie"] and not _trusted_origin(websocket):
        # The browser sends the cookie whatever page opened the socket: only our own pages
        # and ALLOWED_ORIGINS may read the user's stream with it (a 403 before the upgrade).
        await websocket.close(POLICY_VIOLATION, "origin not allowed for a cookie session")
        return
    await websocket.accept()
    try:
        if not any(credentials.values()):
            first = await asyncio.wait_for(_receive(websocket), AUTH_WAIT_SECONDS)
            if first.get("type") != "auth":
                raise _Closed(POLICY_VIOLATION, 'authenticate first: {"type": "auth", ...}')
            credentials = {
                "token": str(first.get("token") or ""),
                "api_key": str(first.get("api_key") or ""),
            }
        credentials = {k: v for k, v in credentials.items() if v}
        principal = await _authenticate(ctx, credentials)
        await websocket.send_json(
            {"type": "connected", "user": principal.username, "role": principal.role}
        )
        await _serve(websocket, ctx, principal, credentials)
    except _Closed as closed:
        await websocket.close(closed.code, closed.reason[:120])
    except TimeoutError:
        await websocket.close(POLICY_VIOLATION, "no authentication received")
    except WebSocketDisconnect:
        return


async def _serve(
    websocket: WebSocket, ctx: AppContext, principal: Principal, credentials: dict[str, str]
) -> None:
    subscriptions: set[str] = set()
    async with ctx.events.subscribe(CLIENT_QUEUE, include_remote=True) as queue:

        async def receive() -> None:
            while True:
                msg = await _receive(websocket)
                kind = msg.get("type")
                if kind == "ping":
                    await websocket.send_json({"type": "pong"})
                elif kind in ("subscribe", "unsubscribe"):
                    channels = msg.get("channels")
                    if not isinstance(channels, list) or not all(
                        isinstance(c, str) and service.CHANNEL.match(c) for c in channels
                    ):
                        await websocket.send_json(
                            {
                                "type": "error",
                                "code": "VALIDATION_ERROR",
                                "detail": "channels: a list of channel names",
                            }
                        )
                        continue
                    if kind == "subscribe":
                        subscriptions.update(channels)
                        if len(subscriptions) > service.MAX_CHANNELS:
                            raise _Closed(POLICY_VIOLATION, "too many subscriptions")
                    else:
                        subscriptions.difference_update(channels)
                    # Seed 004 answers the channels of the request; all of them beside.
                    await websocket.send_json(
                        {
                            "type": f"{kind}d",
                            "channels": sorted(set(channels)),
                            "subscriptions": sorted(subscriptions),
                        }
                    )
                else:
                    await websocket.send_json(
                        {
                            "type": "error",
                            "code": "UNKNOWN_MESSAGE",
                            "detail": "expected ping, subscribe or unsubscribe",
                        }
                    )

        clock = asyncio.get_running_loop().time
        last_event = clock()

        async def send() -> None:
            nonlocal last_event
            while True:
                # Events that came together (a relayed burst) are sent by one wake-up of
                # this task, not one each: with a thousand clients, the wake-ups were a
                # good part of a burst's fan-out.
                events = [await queue.get()]
                while not queue.empty():
                    events.append(queue.get_nowait())
                last_event = clock()
                if ctx.events.overflowed(queue):
                    raise _Closed(TRY_AGAIN_LATER, "too slow: events were lost; reconnect")
                for event in events:
                    if not service.visible(event, principal):
                        continue
                    out = service.rendered(event)
                    if out.channels & subscriptions:
                        await websocket.send_text(out.text)

        async def keepalive() -> None:
            # A quiet stream's keep-alive, in a task of its own rather than a timeout around
            # each wait for an event: that timer, per client and event, slowed the fan-out.
            nonlocal last_event
            every = ctx.settings.ws_keepalive_seconds
            while True:
                await asyncio.sleep(last_event + every - clock())
                if clock() - last_event >= every:
                    # A re-check too: a revoked token or disabled user is cut off.
                    await _authenticate(ctx, credentials)
                    await websocket.send_json({"type": "ping"})
                    last_event = clock()

        tasks = [asyncio.create_task(job()) for job in (receive, send, keepalive)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
