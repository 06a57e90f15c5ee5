"""The web UI's pages: the shell's own here, and every page a domain registered
(`<domain>/pages.py`, `registry.page(...)`) mounted here behind its permission.

Design (option (b) of issue #6, with server-rendered reads): every page is rendered on the
server, from the same team-scoped *service reads* the JSON API serves, with the
principal of the API's own session cookie (`pages.cookie_principal` reuses
`auth.deps.principal_from`). Every *change*, and every question to a remote system
(connection test, database list, storage space), is a call of the JSON API from the
browser (`static/app.js`: `fetch` with the `X-CSRF-Token` header), so validation,
permissions, audit records and job submission exist once, in the API. After a change, htmx
re-renders the affected partial from here, and the WebSocket `/ws` (cookie auth) pushes
progress and failures. Buttons a role lacks are hidden; the API refuses them anyway.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, get_type_hints

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep
from opscenter.core.errors import AppError
from opscenter.core.pages import Page
from opscenter.core.principal import Principal
from opscenter.domains import registry
from opscenter.web import dashboard
from opscenter.web.pages import PageError, can_see, render

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

ReadBackups = Annotated[Principal, Depends(can_see("read:backups"))]


@router.get("/login")
async def login_page(request: Request) -> Response:
    """Public: the form posts to the API's /auth/login, which sets the session cookie."""
    return render(request, "login.html", None)


@router.get("/")
async def dashboard_page(request: Request, principal: ReadBackups, session: SessionDep) -> Response:
    data = await dashboard.build(session, principal, utcnow())
    widgets = [
        await w.handler(principal=principal, session=session)
        for w in sorted(registry().widgets, key=lambda w: w.rank)
        if principal.can(w.permission)
    ]
    return render(request, "dashboard.html", principal, {"board": data, "widgets": widgets})


def _endpoint(page: Page) -> Callable[..., Awaitable[Response]]:
    """The route of a domain's page: `can_see` guards it, the shell renders its `View`, and
    an `AppError` it raises is shown as an error page. FastAPI reads the handler's own
    parameters (resolved here, as the handler's module names them) from the signature."""
    hints = get_type_hints(page.handler, include_extras=True)
    keyword = inspect.Parameter.KEYWORD_ONLY
    own = [
        inspect.Parameter(name, keyword, default=param.default, annotation=hints[name])
        for name, param in inspect.signature(page.handler).parameters.items()
        if name != "principal"
    ]
    guard = []
    if page.permission is not None:  # None: a public page, its handler takes no principal
        checked = Annotated[Principal, Depends(can_see(page.permission))]
        guard.append(inspect.Parameter("principal", keyword, annotation=checked))

    async def endpoint(
        request: Request, principal: Principal | None = None, **params: Any
    ) -> Response:
        if guard:
            params["principal"] = principal
        try:
            view = await page.handler(**params)
        except AppError as err:
            raise PageError(err) from None
        return render(request, view.template, principal, dict(view.context))

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", keyword, annotation=Request), *guard, *own]
    )
    return endpoint


for _page in registry().pages:
    router.add_api_route(_page.path, _endpoint(_page), methods=["GET"])
