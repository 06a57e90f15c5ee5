"""Authentication (Bearer JWT, X-API-Key, session cookie) and permission dependencies.

Every request reloads the user, role and key from the database, so disabling a user,
changing a role or revoking a key takes effect on the very next request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opscenter.audit import service as audit
from opscenter.auth.permissions import checks
from opscenter.core.clock import utcnow
from opscenter.core.context import SAFE_METHODS, AppContext, SessionDep, client_ip, get_ctx
from opscenter.core.errors import Forbidden, Unauthorized
from opscenter.core.middleware import defer
from opscenter.core.principal import Principal
from opscenter.core.security import InvalidToken, sha256_hex
from opscenter.models import ApiKey, RefreshToken, User

SESSION_COOKIE = "session_token"
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


async def _from_jwt(
    ctx: AppContext, session: AsyncSession, token: str, *, via_cookie: bool
) -> Principal:
    try:
        claims = ctx.keyring.decode_jwt(token)
    except InvalidToken:
        raise Unauthorized("Invalid or expired token; log in again") from None
    if claims.get("typ") != ("session" if via_cookie else "access"):
        raise Unauthorized("This token cannot be used here")
    user = await load_user(session, int(claims["sub"]))
    if user is None or not user.is_active or claims.get("sv") != user.session_version:
        raise Unauthorized("Session is no longer valid; log in again")
    family = str(claims.get("sid", ""))
    revoked = await session.scalar(
        select(RefreshToken.id)
        .where(RefreshToken.family_id == family, RefreshToken.revoked_at.is_not(None))
        .limit(1)
    )
    if revoked is not None:
        raise Unauthorized("Session was logged out; log in again")
    return principal_for(user, session_id=family, via_cookie=via_cookie)


async def _from_api_key(session: AsyncSession, raw_key: str) -> Principal:
    key = await session.scalar(
        select(ApiKey)
        .where(ApiKey.key_hash == sha256_hex(raw_key))
        .options(selectinload(ApiKey.role), selectinload(ApiKey.user))
    )
    now = utcnow()
    if key is None or key.revoked_at is not None or (key.expires_at and key.expires_at <= now):
        raise Unauthorized("Invalid, revoked or expired API key")
    owner = await load_user(session, key.user_id)
    if owner is None or not owner.is_active:
        raise Unauthorized("The API key's owner is disabled")
    key.last_used_at = now
    # A key never does more than its owner can do today, whatever it was created with.
    permissions = frozenset(key.role.permissions) & frozenset(owner.role.permissions)
    return Principal(
        user_id=owner.id,
        username=owner.username,
        role=key.role.name,
        permissions=permissions,
        team_ids=frozenset(t.id for t in owner.teams),
        api_key_id=key.id,
    )


async def authenticate(
    request: Request,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Principal:
    ctx = get_ctx(request)
    if bearer is not None:
        principal = await _from_jwt(ctx, session, bearer.credentials, via_cookie=False)
    elif api_key:
        principal = await _from_api_key(session, api_key)
    elif cookie:
        principal = await _from_jwt(ctx, session, cookie, via_cookie=True)
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
        return await _from_jwt(ctx, session, token, via_cookie=False)
    if api_key:
        return await _from_api_key(session, api_key)
    if cookie:
        return await _from_jwt(ctx, session, cookie, via_cookie=True)
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
