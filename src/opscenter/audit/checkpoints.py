"""Checkpoints of the audit chain made in the background: every interval, the entries
written since the latest checkpoint are verified and, when they hold, checkpointed, so a
compliance assessment walks only the entries of the last interval."""

from __future__ import annotations

import asyncio

from opscenter.audit import service
from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.core.logging import get_logger

log = get_logger("opscenter.audit")


async def checkpoint(db: Database) -> service.ChainReport:
    """Verify the entries after the latest checkpoint and checkpoint them if they hold."""
    async with db.read_session() as session:
        report = await service.verify_chain(session, await service.latest_checkpoint(session))
    if not report.valid:
        log.error(
            "audit trail broken at entry %s: %s; no checkpoint made",
            report.first_bad_id,
            report.problem,
        )
        return report
    # A write session of its own: on SQLite it holds the one write lock, not for the walk.
    async with db.write_session() as session:
        await service.save_checkpoint(session, report, utcnow())
        await session.commit()
    return report


async def run_forever(db: Database, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await checkpoint(db)
        except Exception:
            log.exception("audit checkpoint failed")
