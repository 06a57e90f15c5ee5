"""The verification pages: the runs (with a form to start one) and one run's details."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from opscenter.backups import service as backups
from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, FilterId, View
from opscenter.core.principal import Principal
from opscenter.core.schemas import MAX_ID
from opscenter.models import BackupStatus
from opscenter.verify import service as verify

TestTypeFilter = Annotated[str | None, Query(pattern="^(|checksum|deep|restore)$")]
RunStatusFilter = Annotated[
    str | None, Query(pattern="^(|queued|running|passed|corrupt|failed|cancelled|interrupted)$")
]


async def verification_page(
    principal: Principal,
    session: SessionDep,
    test_type: TestTypeFilter = None,
    status: RunStatusFilter = None,
    backup_id: FilterId = None,
) -> View:
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
    return View(
        "verification.html",
        {
            "runs": [verify.run_out(r, r.backup) for r in runs],
            "backup_names": {r.backup.id: r.backup.database_name for r in runs},
            "backups": [backups.backup_out(b) for b in backup_rows],
            "filters": {"test_type": test_type or "", "status": status or ""},
            "selected_backup": backup_id,
        },
    )


async def verification_detail_page(
    principal: Principal,
    session: SessionDep,
    backup_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    run_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> View:
    run, backup = await verify.get_run(session, principal, backup_id, run_id)
    return View(
        "verification_run.html",
        {"run": verify.run_out(run, backup), "backup": backups.backup_out(backup)},
    )
