"""Single sign-on: providers under `/api/v1/sso/providers` (admins), logout at
`/api/v1/sso/logout`, and the browser's two legs of a login at the root:
`/sso/<slug>/login` (off to the provider) and `/sso/<slug>/callback` (back with a code)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Cookie, Depends, Query, Request, Response, status
from fastapi.responses import RedirectResponse

from opscenter.audit import service as audit
from opscenter.auth.deps import SESSION_COOKIE, CurrentPrincipal, origin_of, require
from opscenter.auth.router import CSRF_COOKIE, set_session_cookies
from opscenter.core.context import Ctx, SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.sso import service
from opscenter.sso.schemas import LogoutOut, ProviderCreate, ProviderOut, ProviderUpdate

router = APIRouter(prefix="/sso", tags=["Single sign-on"])
browser = APIRouter(prefix="/sso", tags=["Single sign-on"], include_in_schema=False)
# Configuring how people log in is user administration.
ReadSso = Annotated[Principal, Depends(require("read:users"))]
WriteSso = Annotated[Principal, Depends(require("write:users"))]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _announce(request: Request, action: str, provider_id: int, name: str) -> None:
    """`sso.provider_<action>` on the event bus once the request has committed."""
    event = Event(f"sso.provider_{action}", {"provider_id": provider_id, "name": name})
    publish_after_commit(request, event)


@router.get("/providers", response_model=Page[ProviderOut])
async def list_providers(
    _: ReadSso, session: SessionDep, paging: Paging, request: Request
) -> Page[ProviderOut]:
    rows, total = await paginate(session, service.providers_query(), paging)
    return Page.of([service.provider_out(p, _base(request)) for p in rows], total, paging)


@router.get("/providers/{provider_id}", response_model=ProviderOut, responses=responses(NotFound))
async def get_provider(
    provider_id: PathId, _: ReadSso, session: SessionDep, request: Request
) -> ProviderOut:
    return service.provider_out(await service.get_provider(session, provider_id), _base(request))


@router.post(
    "/providers",
    response_model=ProviderOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, Conflict, InvalidInput),
)
async def create_provider(
    body: ProviderCreate, principal: WriteSso, session: SessionDep, request: Request, ctx: Ctx
) -> ProviderOut:
    """Register an OpenID Connect provider; its `redirect_uri` goes into the provider's
    client registration. The client secret is stored encrypted and never shown again."""
    provider = await service.create_provider(session, ctx.keyring, body)
    await audit.record(
        session,
        action="sso.provider_create",
        actor=principal,
        resource_type="sso_provider",
        resource_id=provider.id,
        details={"slug": provider.slug, "issuer": provider.issuer, "rules": len(provider.rules)},
        origin=origin_of(request),
    )
    _announce(request, "created", provider.id, provider.name)
    return service.provider_out(provider, _base(request))


@router.put(
    "/providers/{provider_id}",
    response_model=ProviderOut,
    responses=responses(Forbidden, NotFound, InvalidInput),
)
async def update_provider(
    provider_id: PathId,
    body: ProviderUpdate,
    principal: WriteSso,
    session: SessionDep,
    request: Request,
    ctx: Ctx,
) -> ProviderOut:
    provider, changed = await service.update_provider(session, ctx.keyring, provider_id, body)
    await audit.record(
        session,
        action="sso.provider_update",
        actor=principal,
        resource_type="sso_provider",
        resource_id=provider.id,
        details={"slug": provider.slug, "changed": changed},
        origin=origin_of(request),
    )
    _announce(request, "updated", provider.id, provider.name)
    return service.provider_out(provider, _base(request))


@router.delete(
    "/providers/{provider_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(Forbidden, NotFound),
)
async def delete_provider(
    provider_id: PathId, principal: WriteSso, session: SessionDep, request: Request
) -> None:
    """Its users stay, with their local accounts; they can no longer log in through it."""
    provider = await service.delete_provider(session, provider_id)
    await audit.record(
        session,
        action="sso.provider_delete",
        actor=principal,
        resource_type="sso_provider",
        resource_id=provider_id,
        details={"slug": provider.slug},
        origin=origin_of(request),
    )
    _announce(request, "deleted", provider_id, provider.name)


@router.post("/logout", response_model=LogoutOut)
async def logout(
    principal: CurrentPrincipal, session: SessionDep, request: Request, ctx: Ctx
) -> Response:
    """End this login session and clear the cookies, like `/auth/logout`; for a session
    that came from single sign-on, also name the provider's logout page to visit next."""
    await audit.record(
        session,
        action="auth.logout",
        actor=principal,
        resource_type="user",
        resource_id=principal.user_id,
        origin=origin_of(request),
    )
    url = await service.logout(
        session, ctx.keyring, principal, post_logout_redirect_uri=f"{_base(request)}/login"
    )
    response = Response(
        LogoutOut(end_session_url=url).model_dump_json(), media_type="application/json"
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


def _refused(code: str | None = None) -> RedirectResponse:
    query = f"?{urlencode({'code': code})}" if code else ""
    return RedirectResponse(f"/sso/refused{query}", status_code=status.HTTP_303_SEE_OTHER)


@browser.get("/{slug}/login")
async def start_login(
    slug: str,
    session: SessionDep,
    request: Request,
    ctx: Ctx,
    next_path: Annotated[str | None, Query(alias="next", max_length=1000)] = None,
) -> Response:
    """Off to the provider, with a fresh state (also in a cookie of this browser), nonce
    and PKCE challenge."""
    try:
        url, state = await service.begin_login(
            session,
            ctx.keyring,
            ctx.settings,
            slug[:64],
            redirect_uri=f"{_base(request)}/sso/{slug[:64]}/callback",
            next_path=service.safe_next(next_path),
        )
    except service.Refused as refused:
        await service.record_refusal(session, slug, refused, origin_of(request))
        return _refused(refused.code)
    response = RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        service.STATE_COOKIE,
        state,
        max_age=int(service.LOGIN_TTL.total_seconds()),
        httponly=True,
        secure=ctx.settings.secure_cookies,
        samesite="lax",  # sent on the provider's top-level redirect back to the callback
        path="/sso",
    )
    return response


@browser.get("/{slug}/callback")
async def finish_login(
    slug: str,
    session: SessionDep,
    request: Request,
    ctx: Ctx,
    sso_state: Annotated[str | None, Cookie(max_length=200)] = None,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    state: Annotated[str | None, Query(max_length=200)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    answer = service.Callback(slug[:64], state, sso_state, code, error)
    try:
        done = await service.finish_login(
            session, ctx.keyring, ctx.settings, answer, origin_of(request)
        )
    except service.Refused as refused:
        await service.record_refusal(session, slug, refused, origin_of(request))
        # The refusal page reads this browser's login by its state cookie; a refusal
        # without a login row of this browser goes by its code.
        return _refused(None if refused.login_id and sso_state == state else refused.code)
    if done.created:
        user = done.issued.user
        created = Event("user.created", {"user_id": user.id, "username": user.username})
        publish_after_commit(request, created)
    response = RedirectResponse(done.next_path, status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookies(response, ctx, done.issued)
    response.delete_cookie(service.STATE_COOKIE, path="/sso")
    return response
