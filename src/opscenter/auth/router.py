from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials

from opscenter.audit import service as audit
from opscenter.auth import service
from opscenter.auth.deps import (
    SESSION_COOKIE,
    CurrentPrincipal,
    bearer_scheme,
    load_user,
    origin_of,
    principal_from,
)
from opscenter.auth.schemas import (
    AccessToken,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    TokenPair,
)
from opscenter.core.context import Ctx, SessionDep, client_ip
from opscenter.core.errors import BadRequest, Forbidden, RateLimited, Unauthorized, responses
from opscenter.users.schemas import UserOut
from opscenter.users.service import user_out

router = APIRouter(prefix="/auth", tags=["Auth"])
CSRF_COOKIE = "csrf_token"


def set_session_cookies(response: Response, ctx: Ctx, issued: service.IssuedSession) -> None:
    """The browser session of a login (password here, single sign-on in `sso/`)."""
    max_age = ctx.settings.jwt_expiration_hours * 3600
    secure = ctx.settings.secure_cookies
    response.set_cookie(
        SESSION_COOKIE,
        issued.session_token,
        max_age=max_age,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )
    # Readable by the page's script, which echoes it in X-CSRF-Token on writes.
    response.set_cookie(
        CSRF_COOKIE,
        issued.csrf_token,
        max_age=max_age,
        httponly=False,
        secure=secure,
        samesite="lax",
        path="/",
    )


def _pair(issued: service.IssuedSession) -> TokenPair:
    return TokenPair(
        access_token=issued.access_token,
        token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_at=issued.access_expires_at,
        expiresAt=issued.access_expires_at,
        refresh_expires_at=issued.refresh_expires_at,
        csrf_token=issued.csrf_token,
        user=user_out(issued.user),
    )


@router.post(
    "/login", response_model=TokenPair, responses=responses(Unauthorized, Forbidden, RateLimited)
)
async def login(
    body: LoginRequest, request: Request, response: Response, ctx: Ctx, session: SessionDep
) -> TokenPair:
    """Log in by `username` or `email`. Returns a token pair and sets the session cookie."""
    account = await service.login_limit_key(session, body.identifier)
    for rule, scope in (
        (ctx.settings.rate_limit_login_account, f"account:{account}"),
        (ctx.settings.rate_limit_login_address, f"address:{client_ip(request)}"),
    ):
        verdict = await ctx.limiter.hit(rule, "login", scope)
        if not verdict.allowed:
            raise RateLimited(
                f"Too many login attempts; retry in {verdict.retry_after} s",
                headers={**verdict.headers(), "Retry-After": str(verdict.retry_after)},
            )
    try:
        user = await service.authenticate_password(session, body.identifier, body.password)
    except service.LoginFailed as failed:
        await audit.record(
            session,
            action="auth.login_failed",
            username=body.identifier[:64],
            user_id=failed.user.id if failed.user else None,
            outcome="failure",
            resource_type="user",
            resource_id=failed.user.id if failed.user else None,
            details={"reason": failed.reason},
            origin=origin_of(request),
        )
        await session.commit()  # the failure is kept although the request fails
        if failed.reason == "disabled":
            raise Forbidden("This account is disabled; ask an administrator") from None
        raise Unauthorized("Invalid username or password") from None
    issued = await service.start_session(session, ctx.keyring, ctx.settings, user)
    await audit.record(
        session,
        action="auth.login",
        user_id=user.id,
        username=user.username,
        resource_type="user",
        resource_id=user.id,
        origin=origin_of(request),
        details={"session": issued.family_id},
    )
    set_session_cookies(response, ctx, issued)
    return _pair(issued)


@router.post(
    "/refresh",
    response_model=TokenPair | AccessToken,
    responses=responses(Unauthorized, BadRequest),
)
async def refresh(
    request: Request,
    response: Response,
    ctx: Ctx,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    body: RefreshRequest | None = None,
) -> TokenPair | AccessToken:
    """Rotate a refresh token (body `refresh_token`, or the token as a Bearer header).
    Each refresh token works once; presenting a used one revokes its whole session.

    A Bearer *access* token (seed 004's Step 3) gets a new access token of the same login
    session instead (`token`, `expiresAt`), while that session is neither logged out nor
    older than `JWT_EXPIRATION_HOURS`."""
    raw = body.refresh_token if body else (bearer.credentials if bearer else None)
    if not raw:
        raise BadRequest("Give the refresh token in the body or as a Bearer header")
    if body is None and not raw.startswith(service.REFRESH_PREFIX):
        return await _extend(ctx, session, raw)
    try:
        issued = await service.rotate_refresh(session, ctx.keyring, ctx.settings, raw)
    except service.RefreshRejected as rejected:
        if rejected.reused:
            await audit.record(
                session,
                action="auth.refresh_reuse",
                outcome="denied",
                resource_type="user",
                resource_id=rejected.user_id,
                details={"revoked": "session family"},
                origin=origin_of(request),
            )
            await session.commit()  # keep the revocation although the request fails
        raise Unauthorized(f"Refresh token rejected ({rejected.reason}); log in again") from None
    set_session_cookies(response, ctx, issued)
    return _pair(issued)


async def _extend(ctx: Ctx, session: SessionDep, access_token: str) -> AccessToken:
    principal = await principal_from(ctx, session, token=access_token)
    user = await load_user(session, principal.user_id)
    if user is None or principal.session_id is None:
        raise Unauthorized()
    try:
        token, expires = await service.extend_session(
            session, ctx.keyring, ctx.settings, user, principal.session_id
        )
    except service.RefreshRejected as rejected:
        raise Unauthorized(f"Session ended ({rejected.reason}); log in again") from None
    return AccessToken(access_token=token, token=token, expires_at=expires, expiresAt=expires)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=responses(Unauthorized))
async def logout(
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
    session: SessionDep,
    body: LogoutRequest | None = None,
) -> Response:
    """Revoke this login session (and the one of a given refresh token), clear the cookie."""
    families = {principal.session_id} if principal.session_id else set()
    if body and body.refresh_token:
        family = await service.family_of(session, body.refresh_token)
        if family:
            families.add(family)
    for family in families:
        await service.revoke_family(session, family)
    await audit.record(
        session,
        action="auth.logout",
        actor=principal,
        resource_type="user",
        resource_id=principal.user_id,
        origin=origin_of(request),
    )
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=UserOut, responses=responses(Unauthorized))
async def me(principal: CurrentPrincipal, session: SessionDep) -> UserOut:
    user = await load_user(session, principal.user_id)
    if user is None:
        raise Unauthorized()
    out = user_out(user)
    if principal.api_key_id is not None:  # a key sees what it may do, not its owner's all
        out = out.model_copy(
            update={"role": principal.role, "permissions": sorted(principal.permissions)}
        )
    return out
