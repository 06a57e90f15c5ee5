"""Per-application state and the request-scoped dependencies every router uses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.config import Settings
from opscenter.core.cache import TtlCache
from opscenter.core.db import Database, read_scope, session_scope
from opscenter.core.events import Event, EventBus
from opscenter.core.middleware import SAFE_METHODS, defer
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.principal import Principal
from opscenter.core.ratelimit import RateLimiter
from opscenter.core.security import Keyring

if TYPE_CHECKING:
    from opscenter.jobs.runner import JobRunner
    from opscenter.storage.service import StoragePool


@dataclass
class AppContext:
    settings: Settings
    db: Database
    keyring: Keyring
    limiter: RateLimiter
    events: EventBus
    runner: JobRunner
    outbound: OutboundPolicy
    storages: StoragePool
    #: Who a token or key stands for, by its claims or digest (`auth/deps.py`).
    principals: TtlCache[tuple[str, ...], Principal]


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    db = get_ctx(request).db
    if request.method in SAFE_METHODS:
        scope = read_scope(db.request_read_session)
    else:
        scope = session_scope(db.write_session)
    async for session in scope:
        yield session


def publish_after_commit(request: Request, event: Event) -> None:
    """Publish `event` once the request's transaction has committed; a request that fails
    and rolls back publishes nothing, so no screen shows a change that was not kept."""
    events = get_ctx(request).events

    async def publish() -> None:
        events.publish(event)

    defer(request.state, publish)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _ctx(request: Request) -> AppContext:
    # A dependency that is a plain `def` runs in a worker thread: a hand-over per request.
    return get_ctx(request)


Ctx = Annotated[AppContext, Depends(_ctx)]
# "function": the transaction commits when the route returns, before the answer is sent,
# so a client that got its 201 reads what it made, and a failed commit is not answered
# as a success (the default, "request", commits after the answer left).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
