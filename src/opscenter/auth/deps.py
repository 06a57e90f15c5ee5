"""Authentication (Bearer JWT, X-API-Key, session cookie) and permission dependencies.

Who a token or key stands for (user, role, teams, key) is read from the database and kept
in `ctx.principals` for `OPSCENTER_AUTH_CACHE_SECONDS` (5 s); the requests that miss it
together (an entry expiring under load) share one lookup. A commit that changes a
user, role, team, key or login session in this process empties that cache, so disabling a
user, changing a role, revoking a key or logging out takes effect on the very next request
here, and within those seconds in other processes. The token's signature and expiry are
checked on every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Executable, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opscenter.audit import service as audit
from opscenter.auth.permissions import checks
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext, SessionDep, client_ip, get_ctx
from opscenter.core.db import waits_for_writers
from opscenter.core.errors import Forbidden, Unauthorized
from opscenter.core.middleware import SAFE_METHODS, defer
from opscenter.core.principal import Principal
from opscenter.core.security import sha256_hex
from opscenter.models import ApiKey, RefreshToken, User

SESSION_COOKIE = "session_token"
#: The tables whose rows decide who a token or key stands for.
PRINCIPAL_TABLES = ("users", "roles", "teams", "team_members", "api_keys", "refresh_tokens")
CSRF_HEADER = "X-CSRF-Token"

bearer_scheme = HTTPBearer(auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description=(
        "The browser session that login sets. Writes (POST, PUT, PATCH, DELETE) with it "
        f"also need the `{CSRF_HEADER}` header: the `csrf_token` of the login answer, also "
        "readable by the page's script in the `csrf_token` cookie."
    ),
)


def defer_security_event(request: Request, **fields: Any) -> None:
    """Audit a refusal in its own transaction, after the refused request rolled back."""
    db = get_ctx(request).db
    origin = origin_of(request)

    async def write() -> None:
        async with db.write_session() as session:
            await audit.record(session, origin=origin, **fields)
            await session.commit()

    defer(request.state, write)


def origin_of(request: Request) -> audit.Origin:
    return audit.Origin(
        ip_address=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
    )


async def load_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.scalar(
        select(User)
        .where(User.id == user_id)
        .options(selectinload(User.role), selectinload(User.teams))
    )


def principal_for(
    user: User, *, session_id: str | None = None, via_cookie: bool = False
) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        role=user.role.name,
        permissions=frozenset(user.role.permissions),
        team_ids=frozenset(t.id for t in user.teams),
        session_id=session_id,
        via_cookie=via_cookie,
    )


def forget_principals_on_change(ctx: AppContext) -> None:
    ctx.db.on_commit_changing(PRINCIPAL_TABLES, ctx.principals.clear)


def _shareable(session: AsyncSession) -> bool:
    """Whether other requests may wait on a lookup in this session: not when it may wait
    for SQLite's write lock (a write request's), which they need not."""
    return not waits_for_writers(session)


async def _from_jwt(
    ctx: AppContext,
    session: AsyncSession,
    claims: dict[str, Any] | None,
    *,
    via_cookie: bool,
) -> Principal:
    if claims is None:
        raise Unauthorized("Invalid or expired token; log in again")
    typ = "session" if via_cookie else "access"
    if claims.get("typ") != typ:
        raise Unauthorized("This token cannot be used here")
    family = str(claims.get("sid", ""))
    cache_key = ("jwt", typ, str(claims["sub"]), family, str(claims.get("sv")))

    async def load() -> tuple[Principal, float | None]:
        user = await load_user(session, int(claims["sub"]))
        if user is None or not user.is_active or claims.get("sv") != user.session_version:
            raise Unauthorized("Session is no longer valid; log in again")
        revoked = await session.scalar(
            select(RefreshToken.id)
            .where(RefreshToken.family_id == family, RefreshToken.revoked_at.is_not(None))
            .limit(1)
        )
        if revoked is not None:
            raise Unauthorized("Session was logged out; log in again")
        return principal_for(user, session_id=family, via_cookie=via_cookie), None

    return await ctx.principals.get_or_load(cache_key, load, share=_shareable(session))


async def _write(ctx: AppContext, statement: Executable) -> None:
    """After the answer, in a short transaction of its own: a read request stays a reader."""
    async with ctx.db.write_session() as session:
        await session.execute(statement)
        await session.commit()


async def _from_api_key(
    ctx: AppContext,
    session: AsyncSession,
    raw_key: str,
    request: Request | None = None,
) -> Principal:
    cache_key = ("key", sha256_hex(raw_key))

    async def load() -> tuple[Principal, float | None]:
        key = await session.scalar(
            select(ApiKey)
            .where(ApiKey.key_hash == cache_key[1])
            .options(selectinload(ApiKey.role), selectinload(ApiKey.user))
        )
        now = utcnow()
        if key is None or key.revoked_at is not None or (key.expires_at and key.expires_at <= now):
            raise Unauthorized("Invalid, revoked or expired API key")
        owner = await load_user(session, key.user_id)
        if owner is None or not owner.is_active:
            raise Unauthorized("The API key's owner is disabled")
        # Noted when the key is read, so at most once per cache lifetime; not a change of who
        # the key stands for, so the cache is kept.
        touch = (
            update(ApiKey)
            .where(ApiKey.id == key.id)
            .values(last_used_at=now)
            .execution_options(unwatched=True)
        )
        if request is None:
            await session.execute(touch)
        else:
            defer(request.state, lambda: _write(ctx, touch))
        # A key never does more than its owner can do today, whatever it was created with.
        permissions = frozenset(key.role.permissions) & frozenset(owner.role.permissions)
        principal = Principal(
            user_id=owner.id,
            username=owner.username,
            role=key.role.name,
            permissions=permissions,
            team_ids=frozenset(t.id for t in owner.teams),
            api_key_id=key.id,
        )
        expires_in = (key.expires_at - now).total_seconds() if key.expires_at else None
        return principal, expires_in

    return await ctx.principals.get_or_load(cache_key, load, share=_shareable(session))


async def authenticate(
    request: Request,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Principal:
    ctx = get_ctx(request)
    if bearer is not None:
        claims = ctx.keyring.claims_or_none(bearer.credentials)
        principal = await _from_jwt(ctx, session, claims, via_cookie=False)
    elif api_key:
        principal = await _from_api_key(ctx, session, api_key, request)
    elif cookie:
        claims = ctx.keyring.claims_or_none(cookie)
        principal = await _from_jwt(ctx, session, claims, via_cookie=True)
        if request.method not in SAFE_METHODS:
            csrf = request.headers.get(CSRF_HEADER, "")
            if not ctx.keyring.verify_signature(f"csrf:{principal.session_id}", csrf):
                raise Forbidden(
                    f"Missing or wrong {CSRF_HEADER} header for a cookie session: send the "
                    "csrf_token of the login answer (also in the csrf_token cookie)"
                )
    else:
        raise Unauthorized()
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


async def principal_from(
    ctx: AppContext,
    session: AsyncSession,
    *,
    token: str | None = None,
    cookie: str | None = None,
    api_key: str | None = None,
) -> Principal:
    """The same checks as a request's, for callers that are not requests (WebSockets)."""
    if token:
        return await _from_jwt(ctx, session, ctx.keyring.claims_or_none(token), via_cookie=False)
    if api_key:
        return await _from_api_key(ctx, session, api_key)
    if cookie:
        return await _from_jwt(ctx, session, ctx.keyring.claims_or_none(cookie), via_cookie=True)
    raise Unauthorized()


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller must hold `permission`; a refusal is audited."""

    async def dependency(request: Request, principal: CurrentPrincipal) -> Principal:
        if not principal.can(permission):
            defer_security_event(
                request,
                action="access.denied",
                actor=principal,
                outcome="denied",
                details={
                    "permission": permission,
                    "method": request.method,
                    "path": request.url.path,
                },
            )
            raise Forbidden(f"Your role '{principal.role}' lacks the permission '{permission}'")
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return checks(permission, dependency)
