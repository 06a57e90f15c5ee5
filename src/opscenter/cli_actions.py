"""What the CLI's commands do, kept apart from argument parsing."""

from __future__ import annotations

import asyncio
import signal

from opscenter.audit import service as audit
from opscenter.bootstrap import bootstrap
from opscenter.config import Settings, get_settings
from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.core.principal import SYSTEM
from opscenter.users import service as users
from opscenter.users.schemas import UserCreate


async def _database() -> Database:
    settings = get_settings()
    db = Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout,
    )
    await bootstrap(settings, db)
    return db


async def create_user(username: str, email: str, role: str, full_name: str, password: str) -> int:
    db = await _database()
    try:
        data = UserCreate(
            username=username, email=email, role=role, full_name=full_name, password=password
        )
        async with db.write_session() as session:
            user = await users.create_user(session, SYSTEM, data)
            await audit.record(
                session,
                action="user.create",
                username="system (cli)",
                resource_type="user",
                resource_id=user.id,
                details={"username": user.username, "role": role},
            )
            await session.commit()
            return user.id
    finally:
        await db.dispose()


async def verify_audit() -> audit.ChainReport:
    """Walk the whole chain; when it holds, record a checkpoint at its head, so that
    assessments walk only the entries written after it."""
    db = await _database()
    try:
        async with db.read_session() as session:
            report = await audit.verify_chain(session)
        # A write session of its own: on SQLite it holds the one write lock, not for the walk.
        async with db.write_session() as session:
            await audit.save_checkpoint(session, report, utcnow())
            await session.commit()
        return report
    finally:
        await db.dispose()


async def run_worker(settings: Settings) -> None:
    """A worker process: jobs, the reactions they trigger and the event relay; no API, no
    scheduler. Runs until SIGTERM or SIGINT, then stops gracefully."""
    from opscenter.core.logging import configure_logging, get_logger
    from opscenter.runtime import build_context, running

    configure_logging(settings.log_level)
    log = get_logger("opscenter.worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ctx = build_context(settings)
    async with running(ctx):
        log.info("worker started", worker=ctx.runner.worker_id, concurrency=ctx.runner.concurrency)
        await stop.wait()
        log.info(
            "worker stopping: running jobs may finish",
            grace_seconds=settings.job_shutdown_grace_seconds,
        )
    log.info("worker stopped", worker=ctx.runner.worker_id)
