"""Page plumbing: the cookie principal (the API's own session checks), templates, and
errors rendered as pages in words with their code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from opscenter import __version__
from opscenter.auth.deps import SESSION_COOKIE, defer_security_event, principal_from
from opscenter.auth.permissions import checks
from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep, get_ctx
from opscenter.core.errors import AppError, Forbidden, Unauthorized
from opscenter.core.principal import Principal
from opscenter.web.nav import nav_for

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class LoginRequired(Exception):
    """No valid session cookie: the browser goes to the login page and comes back."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageError(Exception):
    """An AppError met while building a page: shown as a page, in words, with its code."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.detail)
        self.error = error


async def login_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)


async def render_page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    principal = getattr(request.state, "principal", None)
    return render(
        request,
        "error.html",
        principal,
        {"code": exc.error.code, "detail": exc.error.detail},
        status_code=exc.error.status_code,
    )


async def cookie_principal(request: Request, session: SessionDep) -> Principal:
    """The same checks as the API's cookie authentication (user active, session not
    revoked); pages are only read here, so no CSRF token is involved."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise LoginRequired(request.url.path)
    try:
        principal = await principal_from(get_ctx(request), session, cookie=cookie)
    except Unauthorized:
        raise LoginRequired(request.url.path) from None
    request.state.principal = principal
    return principal


PagePrincipal = Annotated[Principal, Depends(cookie_principal)]


def can_see(permission: str) -> Callable[..., Awaitable[Principal]]:
    """A page needing `permission`: refused (and audited) like the API refuses it."""

    async def dependency(request: Request, principal: PagePrincipal) -> Principal:
        if not principal.can(permission):
            defer_security_event(
                request,
                action="access.denied",
                actor=principal,
                outcome="denied",
                details={"permission": permission, "method": "GET", "path": request.url.path},
            )
            raise PageError(
                Forbidden(f"Your role '{principal.role}' lacks the permission '{permission}'")
            )
        return principal

    return checks(permission, dependency)


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago' style, for people; the exact time goes in a title attribute."""
    if moment is None:
        return "never"
    seconds = int(((now or utcnow()) - moment).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            text = f"{seconds // size} {unit}"
            break
    else:
        text = f"{seconds} s"
    return f"in {text}" if future else f"{text} ago"


def size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def in_zone(moment: datetime, zone: str) -> str:
    """A wall-clock time in an IANA zone, the way the schedule's owner reads it."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M %Z")


def iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


templates.env.filters.update(age=age, size=size, iso=iso, in_zone=in_zone)
templates.env.globals.update(version=__version__)


def render(
    request: Request,
    name: str,
    principal: Principal | None,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {
            "me": principal,
            "path": request.url.path,
            "nav": nav_for(principal) if principal else [],
            **(context or {}),
        },
        status_code=status_code,
    )
