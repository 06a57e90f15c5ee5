"""The job handlers: run a backup, run a restore. Each turns the engine's classified
errors into a failed job with the same code, and keeps the catalog row in step."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import update

from opscenter.audit import service as audit
from opscenter.backups import service as backup_service
from opscenter.backups.service import FILE_ENGINES, check_restore_target
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.errors import InvalidInput
from opscenter.core.events import Event
from opscenter.core.failures import BackupError, ErrorCode
from opscenter.core.hostfiles import HostFiles
from opscenter.core.logging import get_logger
from opscenter.encryption import service as encryption
from opscenter.jobs.runner import JobContext, JobFailed, JobRunner
from opscenter.models import (
    Backup,
    BackupStatus,
    Job,
    JobStatus,
    ScheduleRun,
    Server,
    StorageProvider,
)
from opscenter.remote.runner import CommandRunner
from opscenter.servers import connect
from opscenter.servers import service as servers
from opscenter.servers.schemas import ServerType
from opscenter.storage import service as storage_service
from opscenter.stores.backends import StorageBackend, StorageError
from opscenter.streaming import keys as backup_keys
from opscenter.streaming.manifest import GLOBALS_INFIX, PART_NAME, read_manifest, scan_catalog
from opscenter.streaming.masking import mask_mysql, mask_postgres, salt_for
from opscenter.streaming.pipeline import BackupOptions, BackupProgress, run_backup, target_directory
from opscenter.streaming.restore import RestoreProgress, drop_created, run_restore
from opscenter.streaming.sinks import (
    DirectoryTarget,
    MySQLTarget,
    PostgresTarget,
    RestoreTarget,
    SqliteTarget,
)
from opscenter.streaming.sources import (
    DirectorySource,
    DumpSource,
    MySQLSource,
    PostgresSource,
    SqliteSource,
)
from opscenter.streaming.streams import Compression

log = get_logger("opscenter.backups")

#: A backup's status once its job ended, by the job's status.
_BACKUP_AFTER_JOB: dict[str, BackupStatus] = {
    JobStatus.SUCCEEDED: BackupStatus.COMPLETED,
    JobStatus.CANCELLED: BackupStatus.CANCELLED,
    JobStatus.INTERRUPTED: BackupStatus.INTERRUPTED,
}


def _source(target: connect.Target, engine: str, database: str) -> DumpSource:
    if engine == "postgresql":
        return PostgresSource(target.pg(database))
    if engine == "mysql":
        return MySQLSource(target.mysql(database))
    if engine == "sqlite":
        return SqliteSource(database)
    return DirectorySource(database)


def _restore_target(
    target: connect.Target,
    engine: str,
    database: str,
    *,
    state: str,
    drop: bool = False,
    jobs: int = 1,
    staging_dir: str | None = None,
) -> RestoreTarget:
    if engine == "postgresql":
        return PostgresTarget(
            target.pg(database),
            create=state == "missing",
            replace=drop and state != "missing",
            jobs=jobs,
            staging_dir=staging_dir,
        )
    if engine == "mysql":
        return MySQLTarget(target.mysql(database), create=state == "missing", replace=drop)
    if engine == "sqlite":
        return SqliteTarget(database, overwrite=drop)
    return DirectoryTarget(database)


def _worth_retrying(err: BackupError) -> bool:
    """Transient failures (unreachable, storage hiccups, a stall, a killed dump) get a
    bounded number of retries; permanent ones (auth, missing database, full disk, ...)
    and the wall-clock limit do not."""
    return err.retryable and err.code != ErrorCode.TIME_LIMIT


def _copy_ids(ctx: JobContext) -> list[int]:
    """The copy rows a backup job writes beside its primary (``storage_ids``)."""
    return [int(i) for i in ctx.params.get("copy_ids") or []]


def _failed(err: BackupError) -> JobFailed:
    return JobFailed(err.code.value, connect.explain(err))


class BackupJobs:
    """Registers the backup and restore job kinds on the runner."""

    def __init__(self, app: AppContext) -> None:
        self.app = app
        self.keys = backup_keys.load_or_create(app.keyring, app.settings.keys_dir)

    def register(self, runner: JobRunner) -> None:
        runner.register("backup", self.run_backup, self.finish_backup, self.retry_backup)
        runner.register("restore", self.run_restore, self.finish_restore)

    # -- backup --------------------------------------------------------------------------
    async def _load(self, backup_id: int) -> tuple[Backup, Server | None, StorageProvider]:
        async with self.app.db.read_session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is None:
                raise JobFailed("not_found", f"backup {backup_id} no longer exists")
            server = await session.get(Server, backup.server_id) if backup.server_id else None
            provider = await session.get(StorageProvider, backup.storage_id)
        if provider is None:
            raise JobFailed("not_found", "the backup's storage provider no longer exists")
        return backup, server, provider

    async def _load_copies(
        self, ctx: JobContext, primary: Backup
    ) -> list[tuple[Backup, StorageProvider]]:
        """The copy rows of this job whose storage can take them; the others fail now."""
        out = []
        for copy_id in _copy_ids(ctx):
            async with self.app.db.read_session() as session:
                row = await session.get(Backup, copy_id)
                provider = await session.get(StorageProvider, row.storage_id) if row else None
            if row is None or row.copy_of_id != primary.id:
                continue
            if provider is None or not provider.is_active:
                await self._update_backup(
                    copy_id,
                    status="failed",
                    error_code="not_found" if provider is None else "storage_disabled",
                    error_message="the copy's storage provider no longer exists"
                    if provider is None
                    else f"storage provider {provider.name} is disabled",
                    completed_at=utcnow(),
                )
                continue
            out.append((row, provider))
        return out

    async def _update_backup(
        self, backup_id: int, *, only_from: tuple[str, ...] | None = None, **values: Any
    ) -> str | None:
        """``only_from``: change the row only while its status is one of these. Returns
        the row's status afterwards (None: no such row)."""
        async with self.app.db.write_session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is not None and (only_from is None or backup.status in only_from):
                for name, value in values.items():
                    setattr(backup, name, value)
            await session.commit()
            return backup.status if backup is not None else None

    async def _pin(self, server_id: int, runner: CommandRunner) -> None:
        """SSH hosts: connect first (the pinned key is checked), pin the key on first use."""
        ssh = connect.ssh_of(runner)
        if ssh is None:
            return
        seen = await ssh.connect()
        async with self.app.db.write_session() as session:
            server = await session.get(Server, server_id)
            if server is not None and servers.pin_host_key(server, seen):
                await session.commit()

    async def _recipients(self) -> tuple[str, ...]:
        """The installation's key and every escrow recipient, read at the start of
        each backup so an added or removed escrow key applies from the next one."""
        async with self.app.db.read_session() as session:
            escrow = await encryption.escrow_recipients(session)
        return (self.keys.recipient, *(r.recipient for r in escrow))

    async def run_backup(self, ctx: JobContext) -> dict[str, Any]:
        backup_id = int(ctx.params["backup_id"])
        backup, server, provider = await self._load(backup_id)
        if server is None:
            raise JobFailed("not_found", "the backup's server no longer exists")
        if ServerType(server.type) in servers.ON_THIS_HOST and backup.db_type in FILE_ENGINES:
            # Checked again now: a symlink may point elsewhere than when it was set.
            try:
                HostFiles(self.app.settings).check_readable(backup.database_name)
            except InvalidInput as err:
                raise JobFailed(ErrorCode.INVALID_CONFIG.value, err.detail) from None
        target = servers.target_of(self.app.keyring, server)
        copies = await self._load_copies(ctx, backup)
        for b in (backup, *(c for c, _ in copies)):
            await self._update_backup(b.id, status="running", started_at=utcnow())
        self.app.events.publish(
            Event(
                "backup.started",
                {
                    "backup_id": backup.id,
                    "job_id": ctx.job_id,
                    "server_id": server.id,
                    "database_name": backup.database_name,
                    "schedule_id": backup.schedule_id,
                    "copies": [c.id for c, _ in copies],
                },
                team_id=ctx.team_id,
            )
        )
        await ctx.progress(phase="dumping", bytes_done=0)
        loop = asyncio.get_running_loop()
        # The dump's total is unknown until it ends: the source's size estimates it.
        estimate: int | None = None

        def on_progress(p: BackupProgress) -> None:
            percent = min(99.0, 100.0 * p.bytes_read / estimate) if estimate else None
            loop.call_soon_threadsafe(
                lambda: loop.create_task(
                    ctx.progress(bytes_done=p.bytes_read, bytes_total=estimate, percent=percent)
                )
            )

        options = BackupOptions(
            compression=Compression(backup.compression_type),
            recipients=await self._recipients() if backup.is_encrypted else (),
            on_progress=on_progress,
            stall_timeout=self.app.settings.backup_stall_seconds,
            time_limit=self.app.settings.backup_time_limit_seconds or None,
            row_counts=backup.db_type in {"postgresql", "mysql"},
            parallel_streams=backup.parallel_streams,
            labels={
                "backup_id": str(backup.id),
                "server_id": str(server.id),
                "server": server.name,
                "team_id": str(backup.team_id),
            },
        )
        storage = self.app.storages.get(provider)
        attempts = 1 + self.app.settings.backup_retries
        for attempt in range(1, attempts + 1):
            try:
                async with connect.open_runner(target) as runner:
                    await self._pin(server.id, runner)
                    if estimate is None:
                        estimate = await connect.size_of(
                            runner, target, backup.db_type, backup.database_name
                        )
                        if estimate:
                            await ctx.progress(phase="dumping", bytes_total=estimate, percent=0)
                    result = await run_backup(
                        _source(target, backup.db_type, backup.database_name),
                        storage,
                        options=options,
                        runner=runner,
                        copies=[self.app.storages.get(p) for _, p in copies],
                    )
                break
            except BackupError as err:
                if not _worth_retrying(err) or attempt == attempts:
                    raise JobFailed(
                        err.code.value, connect.explain(err), {"attempts": attempt}
                    ) from None
                delay = self.app.settings.backup_retry_seconds * 4 ** (attempt - 1)
                log.warning(
                    "backup attempt failed, retrying",
                    backup_id=backup_id,
                    attempt=attempt,
                    code=err.code.value,
                    delay=delay,
                )
                await ctx.progress(phase=f"retrying in {delay:g} s ({err.code.value})")
                await asyncio.sleep(delay)
        async with self.app.db.write_session() as session:
            row = await session.get(StorageProvider, provider.id)
            if row is not None and storage_service.pin_host_key(row, storage):
                await session.commit()
        manifest = result.manifest
        completed: dict[str, Any] = {
            "status": BackupStatus.COMPLETED,
            "storage_key": result.key,
            "size_bytes": result.size_bytes,
            "original_size_bytes": result.original_size_bytes,
            "checksum": f"sha256:{result.sha256}",
            "encryption_key_ids": list(result.recipient_key_ids),
            "completed_at": result.finished_at,
            "duration_seconds": round(result.duration_seconds, 3),
            "row_counts": dict(manifest.row_counts.tables)
            if manifest and manifest.row_counts
            else {},
            "server_version": manifest.server_version if manifest else None,
        }
        await self._update_backup(backup_id, **completed)
        copy_results = []
        for (copy_row, _), outcome in zip(copies, result.copies, strict=True):
            if outcome.committed:
                await self._update_backup(copy_row.id, **completed)
            else:
                copy_err = outcome.error or BackupError(
                    ErrorCode.STORAGE_FAILED, "copy not written"
                )
                log.warning(
                    "backup copy failed",
                    backup_id=copy_row.id,
                    copy_of=backup_id,
                    code=copy_err.code.value,
                )
                await self._update_backup(
                    copy_row.id,
                    status="failed",
                    error_code=copy_err.code.value,
                    error_message=connect.explain(copy_err),
                    completed_at=utcnow(),
                )
            copy_results.append(
                {
                    "backup_id": copy_row.id,
                    "storage_id": copy_row.storage_id,
                    "status": BackupStatus.COMPLETED if outcome.committed else BackupStatus.FAILED,
                    "error_code": outcome.error.code.value if outcome.error else None,
                }
            )
        out: dict[str, Any] = {
            "storage_key": result.key,
            "size_bytes": result.size_bytes,
            "original_size_bytes": result.original_size_bytes,
            "sha256": result.sha256,
        }
        if copy_results:
            out["copies"] = copy_results
        return out

    async def retry_backup(self, ctx: JobContext) -> int | None:
        async with self.app.db.write_session() as session:
            job = await backup_service.queue_retry(
                session, int(ctx.params["backup_id"]), int(ctx.params.get("attempt", 1)) + 1
            )
            await session.commit()
        return job.id if job is not None else None

    async def finish_backup(
        self, ctx: JobContext, status: str, code: str | None, message: str | None
    ) -> None:
        backup_id = int(ctx.params["backup_id"])
        backup_status: str = _BACKUP_AFTER_JOB.get(status, BackupStatus.FAILED)
        if backup_status != BackupStatus.COMPLETED:
            # A restart can interrupt the finisher of a backup that had completed: it
            # stays completed, and its after-steps below (retention, checks) run again.
            settled = await self._update_backup(
                backup_id,
                only_from=(BackupStatus.PENDING, BackupStatus.RUNNING)
                if status == JobStatus.INTERRUPTED
                else None,
                status=backup_status,
                error_code=code,
                error_message=message,
                completed_at=utcnow(),
            )
            if settled == BackupStatus.COMPLETED:
                backup_status, code, message = settled, None, None
        await self._settle_schedule_run(ctx.job_id, backup_status)
        # Copies: those the run settled keep their own outcome; the others share the
        # primary's (the one dump failed, was cancelled or interrupted).
        copies: list[tuple[int, str, str | None, str | None]] = []
        for copy_id in _copy_ids(ctx):
            async with self.app.db.write_session() as session:
                row = await session.get(Backup, copy_id)
                if row is None:
                    continue
                if row.status in (BackupStatus.PENDING, BackupStatus.RUNNING):
                    row.status, row.error_code, row.error_message = backup_status, code, message
                    row.completed_at = utcnow()
                copies.append((row.id, row.status, row.error_code, row.error_message))
                await session.commit()
        events = [
            Event(
                f"backup.{row_status}",
                {
                    "backup_id": row_id,
                    "job_id": ctx.job_id,
                    "status": row_status,
                    "error_code": row_code,
                    "error": row_message,
                    **({"copy_of_id": backup_id} if row_id != backup_id else {}),
                },
                team_id=ctx.team_id,
            )
            for row_id, row_status, row_code, row_message in (
                (backup_id, backup_status, code, message),
                *copies,
            )
        ]
        for event in events:
            self.app.events.publish(event)
        if status == JobStatus.INTERRUPTED:  # the process died mid-write: clear its temp files
            await self._cleanup_interrupted(ctx, backup_id)
        # Per completed row (primary and each copy), what other domains do after it
        # (retention, the check its schedule asks for) is done before the job ends.
        for event in events:
            await self.app.events.react(event)

    async def _settle_schedule_run(self, job_id: int, backup_status: str) -> None:
        """The schedule's run record of this job (if any) ends with its backup."""
        async with self.app.db.write_session() as session:
            await session.execute(
                update(ScheduleRun)
                .where(ScheduleRun.job_id == job_id, ScheduleRun.status == "started")
                .values(status=backup_status)
            )
            await session.commit()

    async def _cleanup_interrupted(self, ctx: JobContext, backup_id: int) -> None:
        async with self.app.db.read_session() as session:
            rows = [await session.get(Backup, i) for i in (backup_id, *_copy_ids(ctx))]
            provider_ids = sorted({r.storage_id for r in rows if r is not None})
            providers = [await session.get(StorageProvider, i) for i in provider_ids]
        for provider in providers:
            if provider is None:
                continue
            storage = self.app.storages.get(provider)
            removed = await storage.cleanup_partials()
            orphans = await self._remove_orphan_parts(storage, rows[0])
            async with self.app.db.write_session() as session:
                await audit.record(
                    session,
                    action="backup.interrupted",
                    username="system",
                    resource_type="backup",
                    resource_id=backup_id,
                    details={
                        "job_id": ctx.job_id,
                        "storage_id": provider.id,
                        "partial_files_removed": removed,
                        "orphans_removed": orphans,
                    },
                )
                await session.commit()
            log.warning(
                "interrupted backup reconciled",
                backup_id=backup_id,
                storage_id=provider.id,
                removed=removed,
            )

    async def _remove_orphan_parts(
        self, storage: StorageBackend, backup: Backup | None
    ) -> list[str]:
        """The cluster globals, and the parts of a parallel backup, that a killed
        PostgreSQL or MySQL backup stored before its manifest: nothing refers to them. No
        other job runs on this target (one job per target), so every such object there
        without a manifest is such a leftover."""
        if backup is None or backup.db_type not in ("postgresql", "mysql"):
            return []
        scan = await scan_catalog(storage, target_directory(backup.db_type, backup.database_name))
        removed = []
        for key in scan.orphans:
            name = key.rpartition("/")[2]
            if GLOBALS_INFIX in name or PART_NAME.search(name):
                with contextlib.suppress(StorageError):
                    await storage.delete(key)
                    removed.append(key)
        return removed

    # -- restore -------------------------------------------------------------------------
    def _publish_restore(self, ctx: JobContext, action: str, extra: dict[str, Any]) -> None:
        params = ctx.params
        self.app.events.publish(
            Event(
                f"restore.{action}",
                {
                    "backup_id": params["backup_id"],
                    "job_id": ctx.job_id,
                    "target_server_id": params["target_server_id"],
                    "target_database": params["target_database"],
                    **extra,
                },
                team_id=ctx.team_id,
            )
        )

    async def finish_restore(
        self, ctx: JobContext, status: str, code: str | None, message: str | None
    ) -> None:
        """`restore.completed` / `restore.failed` (also cancelled, interrupted)."""
        action = {"succeeded": "completed", "cancelled": "cancelled"}.get(status, "failed")
        extra: dict[str, Any] = {}
        if status == "interrupted":
            action = "interrupted"
            message, extra = await self._reconcile_target(ctx, message)
        extra.update(status=action, error_code=code, error=message)
        if action == "failed" or extra.get("target_damaged"):
            extra["severity"] = "error"
        self._publish_restore(ctx, action, extra)
        if code in backup_service.DAMAGE:
            async with self.app.db.write_session() as session:
                backup = await session.get(Backup, int(ctx.params["backup_id"]))
                event = None
                if backup is not None:
                    event = await backup_service.mark_damaged(
                        session, backup, code, message, "restore"
                    )
                await session.commit()
            if event is not None:
                self.app.events.publish(event)

    async def _reconcile_target(
        self, ctx: JobContext, message: str | None
    ) -> tuple[str | None, dict[str, Any]]:
        """After a crash, from the mark the restore left before writing (``run_restore``):
        a database it created is dropped; one it was writing without a transaction to
        roll back is reported damaged (job message, audit trail, notification)."""
        async with self.app.db.read_session() as session:
            job = await session.get(Job, ctx.job_id)
            mark = dict(job.result or {}).get("writing") if job is not None else None
            server = await session.get(Server, int(ctx.params["target_server_id"]))
        if not isinstance(mark, dict) or server is None:
            return message, {}
        database = str(ctx.params["target_database"])
        where = f"{database} on {server.name}"
        details = {"job_id": ctx.job_id, "target_server_id": server.id, "target_database": database}
        if mark.get("state") == "missing":
            target = servers.target_of(self.app.keyring, server)
            restore_target = _restore_target(target, mark["engine"], database, state="missing")
            async with connect.open_runner(target) as runner:
                await drop_created(runner, restore_target)
            action, note = "restore.cleanup", f"the database it was creating, {where}, was dropped"
        elif not mark.get("atomic"):
            action = "restore.target_damaged"
            note = f"{where} was left partly restored: restore it again"
        else:
            return message, {}
        message = f"{message}; {note}"
        async with self.app.db.write_session() as session:
            job = await session.get(Job, ctx.job_id)
            if job is not None:
                job.error_message = message
            await audit.record(
                session,
                action=action,
                username="system",
                resource_type="backup",
                resource_id=int(ctx.params["backup_id"]),
                details={**details, "message": note},
            )
            await session.commit()
        log.warning("interrupted restore reconciled", job_id=ctx.job_id, action=action)
        return message, {"target_damaged": action != "restore.cleanup"}

    async def run_restore(self, ctx: JobContext) -> dict[str, Any]:
        params = ctx.params
        backup, _, provider = await self._load(int(params["backup_id"]))
        async with self.app.db.read_session() as session:
            server = await session.get(Server, int(params["target_server_id"]))
        if server is None or not backup.storage_key:
            raise JobFailed("not_found", "the target server or the backup's artifact is gone")
        target = servers.target_of(self.app.keyring, server)
        database = str(params["target_database"])
        storage = self.app.storages.get(provider)
        engine = backup.db_type
        try:
            check_restore_target(HostFiles(self.app.settings), server, engine, database)
        except InvalidInput as err:
            raise JobFailed(ErrorCode.INVALID_CONFIG.value, err.detail) from None
        self._publish_restore(ctx, "started", {"server_name": server.name})
        try:
            manifest = await read_manifest(storage, backup.storage_key)
            await ctx.progress(phase="checking target")
            state = await connect.database_state(target, database, engine)
            loop = asyncio.get_running_loop()

            total = manifest.total_size_bytes

            def on_progress(p: RestoreProgress) -> None:
                percent = 100.0 * p.bytes_read / total if total else None
                loop.call_soon_threadsafe(
                    lambda: loop.create_task(ctx.progress(bytes_done=p.bytes_read, percent=percent))
                )

            await ctx.progress(phase="restoring", bytes_total=total)
            jobs = int(params.get("parallel_jobs", 1))
            # A failure or crash while writing leaves the target as it was if one
            # transaction or a staged rename holds the whole restore.
            atomic = engine in ("sqlite", "files") or (
                engine == "postgresql" and jobs == 1 and not manifest.parts
            )
            writing = False

            async def on_write() -> None:
                nonlocal writing
                writing = True
                mark = {"engine": engine, "state": state, "atomic": atomic}
                await ctx.runner.write(
                    ctx.job_id, phase="writing the target", result={"writing": mark}
                )

            async with connect.open_runner(target) as runner:
                await self._pin(server.id, runner)
                result = await run_restore(
                    storage,
                    manifest,
                    _restore_target(
                        target,
                        engine,
                        database,
                        state=state,
                        drop=bool(params["drop_existing"]),
                        jobs=jobs,
                        staging_dir=str(self.app.settings.data_dir / "tmp"),
                    ),
                    identities=(self.keys.identity,),
                    runner=runner,
                    on_progress=on_progress,
                    on_write=on_write,
                    stall_timeout=self.app.settings.backup_stall_seconds,
                    time_limit=self.app.settings.backup_time_limit_seconds or None,
                )
                masked: dict[str, Any] = {}
                rules: dict[str, str] = params.get("masking_rules") or {}
                if rules:
                    await ctx.progress(phase="masking")
                    salt = salt_for(self.keys.identity)
                    if engine == "postgresql":
                        report = await mask_postgres(runner, target.pg(database), rules, salt)
                    else:
                        report = await mask_mysql(runner, target.mysql(database), rules, salt)
                    masked = {"columns": report.columns, "rows_updated": report.rows_updated}
        except BackupError as err:
            failed = _failed(err)
            if writing and not atomic and state != "missing":
                failed.message += (
                    f"; {database} on {server.name} was left partly restored: restore it again"
                )
            raise failed from None
        return {
            "target_server_id": server.id,
            "target_database": database,
            "bytes_read": result.bytes_read,
            "bytes_restored": result.bytes_restored,
            "duration_seconds": round(result.duration_seconds, 3),
            "masked": masked,
        }
