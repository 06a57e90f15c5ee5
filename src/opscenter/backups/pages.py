"""The backups pages: the list (and its live-refreshed rows) and the restore form."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.backups import service as backups
from opscenter.backups.schemas import MaskingRule
from opscenter.core.context import SessionDep
from opscenter.core.pages import FilterId, PageNumber, View, paged
from opscenter.core.principal import Principal
from opscenter.servers import service as servers

BackupStatusFilter = Annotated[
    str | None, Query(pattern="^(|pending|running|completed|failed|cancelled|interrupted)$")
]
DatabaseFilter = Annotated[str | None, Query(max_length=4096)]


async def _backup_rows(
    session: AsyncSession,
    principal: Principal,
    server_id: int | None,
    status: str | None,
    database_name: str | None,
    page: int,
) -> dict[str, object]:
    stmt = backups.filter_backups(
        backups.backups_query(principal),
        server_id=server_id,
        db_type=None,
        status=status or None,
        database_name=database_name or None,
        schedule_id=None,
        start=None,
        end=None,
    )
    filters = {"server_id": server_id, "status": status, "database_name": database_name}
    rows, pager = await paged(session, stmt, page, filters)
    names = {s.id: s.name for s in (await session.scalars(servers.servers_query(principal))).all()}
    return {
        "backups": [backups.backup_out(b) for b in rows],
        "server_names": names,
        "pager": pager,
        "filters": filters,
    }


async def backups_page(
    principal: Principal,
    session: SessionDep,
    server_id: FilterId = None,
    status: BackupStatusFilter = None,
    database_name: DatabaseFilter = None,
    page: PageNumber = 1,
) -> View:
    context = await _backup_rows(session, principal, server_id, status, database_name, page)
    server_list = (await session.scalars(servers.servers_query(principal))).all()
    return View(
        "backups.html", {**context, "servers": [servers.server_out(s) for s in server_list]}
    )


async def backup_rows_partial(
    principal: Principal,
    session: SessionDep,
    server_id: FilterId = None,
    status: BackupStatusFilter = None,
    database_name: DatabaseFilter = None,
    page: PageNumber = 1,
) -> View:
    """The table body alone, re-rendered by htmx when the WebSocket reports a change."""
    context = await _backup_rows(session, principal, server_id, status, database_name, page)
    return View("partials/backup_rows.html", context)


async def restore_page(backup_id: int, principal: Principal, session: SessionDep) -> View:
    backup = await backups.get_backup(session, principal, backup_id)
    targets = (await session.scalars(servers.servers_query(principal))).all()
    return View(
        "restore.html",
        {
            "backup": backups.backup_out(backup),
            "servers": [servers.server_out(s) for s in targets],
            "rules": [r.value for r in MaskingRule],
        },
    )
