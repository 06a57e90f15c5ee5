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

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from opscenter.audit import service as audit
from opscenter.backups import service as backups
from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep
from opscenter.core.errors import AppError
from opscenter.core.pages import LIST_LIMIT, FilterId, Page, PageNumber, paged
from opscenter.core.principal import Principal
from opscenter.core.schemas import MAX_ID
from opscenter.domains import registry
from opscenter.models import BackupStatus, Role
from opscenter.notifications import service as notifications
from opscenter.notifications.schemas import CONFIG_MODELS
from opscenter.retention import service as retention
from opscenter.schedules import service as schedules
from opscenter.servers import service as servers
from opscenter.servers.schemas import Environment, ServerType
from opscenter.storage import service as storage
from opscenter.storage.schemas import StorageType
from opscenter.tokens import service as tokens
from opscenter.users import service as users
from opscenter.verify import service as verify
from opscenter.web import dashboard
from opscenter.web.pages import PageError, can_see, render

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

ReadBackups = Annotated[Principal, Depends(can_see("read:backups"))]
ReadServers = Annotated[Principal, Depends(can_see("read:servers"))]
ReadSchedules = Annotated[Principal, Depends(can_see("read:schedules"))]
ReadStorage = Annotated[Principal, Depends(can_see("read:storage"))]
ReadRetention = Annotated[Principal, Depends(can_see("read:retention"))]
ReadAudit = Annotated[Principal, Depends(can_see("read:audit"))]
ReadUsers = Annotated[Principal, Depends(can_see("read:users"))]
ReadTokens = Annotated[Principal, Depends(can_see("read:tokens"))]
Restorer = Annotated[Principal, Depends(can_see("execute:restores"))]
ReadNotifications = Annotated[Principal, Depends(can_see("read:notifications"))]
ReadVerification = Annotated[Principal, Depends(can_see("read:verification"))]
TestTypeFilter = Annotated[str | None, Query(pattern="^(|checksum|deep|restore)$")]
RunStatusFilter = Annotated[
    str | None, Query(pattern="^(|queued|running|passed|corrupt|failed|cancelled|interrupted)$")
]


@router.get("/login")
async def login_page(request: Request) -> Response:
    """Public: the form posts to the API's /auth/login, which sets the session cookie."""
    return render(request, "login.html", None)


@router.get("/")
async def dashboard_page(request: Request, principal: ReadBackups, session: SessionDep) -> Response:
    data = await dashboard.build(session, principal, utcnow())
    return render(request, "dashboard.html", principal, {"board": data})


@router.get("/servers")
async def servers_page(request: Request, principal: ReadServers, session: SessionDep) -> Response:
    rows = (await session.scalars(servers.servers_query(principal).limit(LIST_LIMIT))).all()
    return render(
        request,
        "servers.html",
        principal,
        {
            "servers": [servers.server_out(s) for s in rows],
            "types": [t.value for t in ServerType],
            "environments": [e.value for e in Environment],
        },
    )


@router.get("/storage")
async def storage_page(request: Request, principal: ReadStorage, session: SessionDep) -> Response:
    rows = (await session.scalars(storage.providers_query(principal).limit(LIST_LIMIT))).all()
    return render(
        request,
        "storage.html",
        principal,
        {"providers": [storage.storage_out(p) for p in rows], "types": list(StorageType)},
    )


@router.get("/retention")
async def retention_page(
    request: Request, principal: ReadRetention, session: SessionDep
) -> Response:
    rows = (await session.scalars(retention.policies_query(principal).limit(LIST_LIMIT))).all()
    used_by = await retention.users_of(session, [p.id for p in rows])
    schedule_rows = (await session.scalars(schedules.schedules_query(principal))).all()
    return render(
        request,
        "retention.html",
        principal,
        {
            "policies": [retention.policy_out(p, used_by[p.id]) for p in rows],
            "schedules": [schedules.schedule_out(s) for s in schedule_rows],
        },
    )


@router.get("/audit")
async def audit_page(
    request: Request,
    principal: ReadAudit,
    session: SessionDep,
    action: Annotated[str | None, Query(max_length=100)] = None,
    resource_type: Annotated[str | None, Query(max_length=100)] = None,
    page: PageNumber = 1,
) -> Response:
    filters = audit.AuditFilters(
        action=action or None,
        resource_type=resource_type or None,
        **audit.reader_scope(principal),
    )
    shown = {"action": action or "", "resource_type": resource_type or ""}
    rows, pager = await paged(session, audit.filtered(filters), page, shown)
    return render(
        request, "audit.html", principal, {"entries": rows, "filters": shown, "pager": pager}
    )


@router.get("/users")
async def users_page(request: Request, principal: ReadUsers, session: SessionDep) -> Response:
    user_rows = (await session.scalars(users.users_query().limit(LIST_LIMIT))).all()
    teams = (await session.scalars(users.teams_query())).all()
    roles = (await session.scalars(select(Role).order_by(Role.name))).all()
    return render(
        request,
        "users.html",
        principal,
        {
            "users": [users.user_out(u) for u in user_rows],
            "teams": teams,
            "roles": [r.name for r in roles],
        },
    )


@router.get("/tokens")
async def tokens_page(request: Request, principal: ReadTokens, session: SessionDep) -> Response:
    rows = (await session.scalars(tokens.keys_query().limit(LIST_LIMIT))).all()
    roles = (await session.scalars(select(Role).order_by(Role.name))).all()
    return render(
        request,
        "tokens.html",
        principal,
        {"tokens": [tokens.token_out(k) for k in rows], "roles": [r.name for r in roles]},
    )


async def _inbox(session: SessionDep, principal: Principal) -> dict[str, object]:
    stmt = notifications.notifications_query(principal).limit(LIST_LIMIT)
    rows = (await session.scalars(stmt)).all()
    return {
        "inbox": [notifications.notification_out(n) for n in rows],
        "unread": await notifications.unread_count(session, principal),
    }


@router.get("/notifications")
async def notifications_page(
    request: Request, principal: ReadNotifications, session: SessionDep
) -> Response:
    channel_rows = (
        await session.scalars(notifications.channels_query(principal).limit(LIST_LIMIT))
    ).all()
    return render(
        request,
        "notifications.html",
        principal,
        {
            **await _inbox(session, principal),
            "channels": [notifications.channel_out(c) for c in channel_rows],
            "channel_types": list(CONFIG_MODELS),
        },
    )


@router.get("/notifications/inbox")
async def inbox_partial(
    request: Request, principal: ReadNotifications, session: SessionDep
) -> Response:
    """The notification center's list, re-rendered after a change or a live event."""
    return render(request, "partials/inbox.html", principal, await _inbox(session, principal))


@router.get("/verification")
async def verification_page(
    request: Request,
    principal: ReadVerification,
    session: SessionDep,
    test_type: TestTypeFilter = None,
    status: RunStatusFilter = None,
    backup_id: FilterId = None,
) -> Response:
    stmt = verify.filter_runs(
        verify.runs_query(principal), test_type=test_type or None, status=status or None
    )
    runs = (await session.scalars(stmt.limit(LIST_LIMIT))).all()
    completed = backups.filter_backups(
        backups.backups_query(principal),
        server_id=None,
        db_type=None,
        status=BackupStatus.COMPLETED,
        database_name=None,
        schedule_id=None,
        start=None,
        end=None,
    )
    backup_rows = (await session.scalars(completed.limit(LIST_LIMIT))).all()
    return render(
        request,
        "verification.html",
        principal,
        {
            "runs": [verify.run_out(r, r.backup) for r in runs],
            "backup_names": {r.backup.id: r.backup.database_name for r in runs},
            "backups": [backups.backup_out(b) for b in backup_rows],
            "filters": {"test_type": test_type or "", "status": status or ""},
            "selected_backup": backup_id,
        },
    )


@router.get("/verification/{backup_id}/runs/{run_id}")
async def verification_detail_page(
    request: Request,
    principal: ReadVerification,
    session: SessionDep,
    backup_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    run_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> Response:
    try:
        run, backup = await verify.get_run(session, principal, backup_id, run_id)
    except AppError as err:
        raise PageError(err) from None
    return render(
        request,
        "verification_run.html",
        principal,
        {"run": verify.run_out(run, backup), "backup": backups.backup_out(backup)},
    )


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
    guard = Annotated[Principal, Depends(can_see(page.permission))]

    async def endpoint(request: Request, principal: Principal, **params: Any) -> Response:
        try:
            view = await page.handler(principal=principal, **params)
        except AppError as err:
            raise PageError(err) from None
        return render(request, view.template, principal, dict(view.context))

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", keyword, annotation=Request),
            inspect.Parameter("principal", keyword, annotation=guard),
            *own,
        ]
    )
    return endpoint


for _page in registry().pages:
    router.add_api_route(_page.path, _endpoint(_page), methods=["GET"])
