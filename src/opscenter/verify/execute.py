"""The `verify` job kind: checksum, deep, or a restore test into a scratch database.

A restore test creates its scratch database (named when the run was created), restores
the artifact with every integrity check of a real restore, counts the rows of every
table, compares them with the counts taken at dump time, and drops the database again,
on success, failure and cancellation alike (and from the finisher, after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.audit import service as audit
from opscenter.backups import service as backups
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.failures import BackupError, ErrorCode
from opscenter.core.logging import get_logger
from opscenter.engines import mysql, postgres
from opscenter.engines.mysql import mysql_client_command, resolve_mysql_tool
from opscenter.engines.postgres import psql_command, select_pg_tool
from opscenter.jobs.runner import JobContext, JobFailed, JobRunner
from opscenter.models import Backup, Server, StorageProvider, VerificationRun
from opscenter.remote.runner import CommandRunner
from opscenter.servers import connect
from opscenter.servers import service as servers
from opscenter.stores.backends import StorageBackend
from opscenter.streaming import keys as backup_keys
from opscenter.streaming.manifest import Manifest, RowCounts, collect_row_counts, read_manifest
from opscenter.streaming.restore import RestoreProgress, run_restore
from opscenter.streaming.sinks import MySQLTarget, PostgresTarget, RestoreTarget
from opscenter.streaming.sources import DumpSource, MySQLSource, PostgresSource
from opscenter.streaming.verification import deep_verify, quick_verify
from opscenter.verify import service

log = get_logger("opscenter.verify")
SAMPLE_TABLES = 10
#: Count every row of every table in the scratch database: it is ours, and exact.
EXACT_ALWAYS = 2**62


class VerificationFailed(Exception):
    """A check that ran and found the backup wanting (not a BackupError of the engine)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def compare_counts(
    expected: RowCounts, actual: dict[str, int], *, sample: int | None, seed: int
) -> list[dict[str, Any]]:
    """Per table: ok, missing (in the dump-time counts, absent after restore), differs,
    estimated (dump-time count was the catalog's estimate: only its presence is checked)
    or extra (restored but not counted at dump time). With `sample`, at most that many
    of the dump-time tables are compared, chosen at random (seeded by the run)."""
    names = sorted(expected.tables)
    if sample is not None and len(names) > sample:
        # Not security: a reproducible choice of tables, the same for the same run.
        names = sorted(random.Random(seed).sample(names, sample))  # noqa: S311
    rows: list[dict[str, Any]] = []
    for name in names:
        want, got = expected.tables[name], actual.get(name)
        if got is None:
            status = "missing"
        elif name in expected.estimated:
            status = "estimated"
        else:
            status = "ok" if got == want else "differs"
        rows.append({"table": name, "expected": want, "actual": got, "status": status})
    if sample is None:
        for name in sorted(set(actual) - set(expected.tables)):
            rows.append(
                {"table": name, "expected": None, "actual": actual[name], "status": "extra"}
            )
    return rows


def _scratch_target(
    target: connect.Target, engine: str, database: str, *, no_owner: bool = False
) -> RestoreTarget:
    if engine == "postgresql":
        return PostgresTarget(target.pg(database), create=True, no_owner=no_owner)
    return MySQLTarget(target.mysql(database), create=True)


def _ownership_error(err: BackupError) -> str | None:
    """The line of a failed PostgreSQL restore saying its user may not take on the dump's
    owners or grants (roles the sandbox lacks, or that its user is no member of)."""
    for line in err.detail.splitlines():
        if "must be member of role" in line or ("role" in line and "does not exist" in line):
            return line.strip()
    return None


def _source(target: connect.Target, engine: str, database: str) -> DumpSource:
    if engine == "postgresql":
        return PostgresSource(target.pg(database))
    return MySQLSource(target.mysql(database))


async def drop_scratch(
    runner: CommandRunner, target: connect.Target, engine: str, database: str
) -> str | None:
    """Drop the scratch database if it exists. Returns why it could not be, or None."""
    try:
        if engine == "postgresql":
            psql = (await select_pg_tool(runner, "psql", None)).path
            quoted = postgres.quote_ident(database)
            command = psql_command(
                psql, target.pg("postgres"), f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
            )
        else:
            client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
            quoted = mysql.quote_ident(database)
            command = mysql_client_command(
                client, target.mysql(), "-e", f"DROP DATABASE IF EXISTS {quoted}"
            )
        result = await runner.run(command, limit_seconds=120)
    except (BackupError, OSError) as err:
        return str(err)
    if result.returncode != 0:
        return result.stderr.strip()[-500:] or f"exit status {result.returncode}"
    return None


class VerifyJobs:
    """Registers the `verify` job kind on the runner."""

    def __init__(self, app: AppContext) -> None:
        self.app = app
        self.keys = backup_keys.load_or_create(app.keyring, app.settings.keys_dir)

    def register(self, runner: JobRunner) -> None:
        runner.register(service.JOB_KIND, self.run, self.finish)

    async def _update_run(self, run_id: int, **values: Any) -> None:
        async with self.app.db.write_session() as session:
            run = await session.get(VerificationRun, run_id)
            if run is not None:
                for name, value in values.items():
                    setattr(run, name, value)
            await session.commit()

    async def _load(
        self, run_id: int
    ) -> tuple[VerificationRun, Backup, StorageProvider, Server | None]:
        async with self.app.db.read_session() as session:
            run = await session.get(VerificationRun, run_id)
            backup = await session.get(Backup, run.backup_id) if run is not None else None
            if run is None or backup is None or not backup.storage_key:
                raise JobFailed("not_found", f"verification run {run_id} or its backup is gone")
            provider = await session.get(StorageProvider, backup.storage_id)
            server = (
                await session.get(Server, run.target_server_id) if run.target_server_id else None
            )
        if provider is None:
            raise JobFailed("not_found", "the backup's storage provider no longer exists")
        return run, backup, provider, server

    # -- run ---------------------------------------------------------------------------------
    async def run(self, ctx: JobContext) -> dict[str, Any]:
        run_id = int(ctx.params["run_id"])
        run, backup, provider, server = await self._load(run_id)
        await self._update_run(run_id, status="running", started_at=utcnow())
        self.app.events.publish(
            Event(
                "verification.started",
                {"run_id": run_id, "backup_id": backup.id, "test_type": run.test_type},
                team_id=backup.team_id,
            )
        )
        storage = self.app.storages.get(provider)
        t0 = time.monotonic()
        try:
            await ctx.progress(phase="reading manifest")
            manifest = await read_manifest(storage, backup.storage_key or "")
            if backup.checksum and backup.checksum != f"sha256:{manifest.sha256}":
                raise BackupError(
                    ErrorCode.CHECKSUM_MISMATCH,
                    f"the manifest's sha256 differs from the catalog's ({backup.checksum})",
                    stage="verify",
                )
            if run.test_type == "checksum":
                await ctx.progress(phase="checksum", bytes_total=manifest.total_size_bytes)
                quick = await quick_verify(storage, manifest)
                detail = f"size {quick.size_bytes} bytes and sha256 match {quick.detail}".strip()
                extra: dict[str, Any] = {}
            elif run.test_type == "deep":
                await ctx.progress(phase="deep", bytes_total=manifest.total_size_bytes)
                deep = await deep_verify(
                    storage,
                    manifest,
                    identities=(self.keys.identity,),
                    stall_timeout=self.app.settings.backup_stall_seconds,
                    time_limit=self.app.settings.backup_time_limit_seconds or None,
                )
                detail = f"{deep.detail}; {deep.dump_bytes} dump bytes read"
                extra = {"dump_bytes": deep.dump_bytes}
            else:
                if server is None:
                    raise JobFailed("not_found", "the restore test's target server is gone")
                detail, extra = await self._restore_test(
                    ctx, run, backup, manifest, server, storage
                )
        except BackupError as err:
            await self._update_run(run_id, duration_seconds=round(time.monotonic() - t0, 3))
            raise JobFailed(err.code.value, connect.explain(err)) from None
        except VerificationFailed as err:
            await self._update_run(run_id, duration_seconds=round(time.monotonic() - t0, 3))
            raise JobFailed(err.code, err.message) from None
        duration = round(time.monotonic() - t0, 3)
        await self._update_run(run_id, detail=detail, duration_seconds=duration)
        return {"run_id": run_id, "detail": detail, "duration_seconds": duration, **extra}

    async def _restore_test(
        self,
        ctx: JobContext,
        run: VerificationRun,
        backup: Backup,
        manifest: Manifest,
        server: Server,
        storage: StorageBackend,
    ) -> tuple[str, dict[str, Any]]:
        scratch = run.scratch_database
        assert scratch is not None
        target = servers.target_of(self.app.keyring, server)
        engine = backup.db_type
        loop = asyncio.get_running_loop()

        def on_progress(p: RestoreProgress) -> None:
            total = manifest.total_size_bytes
            percent = 100.0 * p.bytes_read / total if total else None
            loop.call_soon_threadsafe(
                lambda: loop.create_task(ctx.progress(bytes_done=p.bytes_read, percent=percent))
            )

        untested = ""
        async with connect.open_runner(target) as runner:
            try:
                await ctx.progress(phase="restoring", bytes_total=manifest.total_size_bytes)
                t0 = time.monotonic()

                async def restore(no_owner: bool) -> None:
                    await run_restore(
                        storage,
                        manifest,
                        _scratch_target(target, engine, scratch, no_owner=no_owner),
                        identities=(self.keys.identity,),
                        runner=runner,
                        on_progress=on_progress,
                        stall_timeout=self.app.settings.backup_stall_seconds,
                        time_limit=self.app.settings.backup_time_limit_seconds or None,
                    )

                # As a real restore does, owners and grants included; only if the
                # sandbox cannot take them is the data tested without, and the result
                # says so (a real restore by this user would fail the same way).
                try:
                    await restore(no_owner=False)
                except BackupError as err:
                    refused = _ownership_error(err) if engine == "postgresql" else None
                    if refused is None:
                        raise
                    untested = (
                        f"; owners and grants not tested: restoring them failed ({refused}), "
                        "so the scratch copy was restored without them"
                    )
                    t0 = time.monotonic()
                    await restore(no_owner=True)
                rto = round(time.monotonic() - t0, 3)
                await self._update_run(run.id, rto_seconds=rto)
                await ctx.progress(phase="counting rows")
                restored = await collect_row_counts(
                    _source(target, engine, scratch), runner, exact_max_rows=EXACT_ALWAYS
                )
            finally:
                with contextlib.suppress(Exception):
                    await ctx.progress(phase="dropping scratch database")
                leftover = await asyncio.shield(drop_scratch(runner, target, engine, scratch))
                if leftover is not None:
                    log.warning("scratch database not dropped", run_id=run.id, database=scratch)
        note = f"; the scratch database {scratch} could not be dropped" if leftover else ""
        note = untested + note
        if manifest.row_counts is None:
            detail = f"restored in {rto} s; the dump has no row counts to compare{note}"
            return detail, {"rto_seconds": rto}
        rows = compare_counts(
            manifest.row_counts,
            restored.tables if restored else {},
            sample=SAMPLE_TABLES if run.scope == "sample" else None,
            seed=run.id,
        )
        await self._update_run(run.id, table_comparison=rows)
        missing = [r["table"] for r in rows if r["status"] == "missing"]
        if missing:
            raise VerificationFailed(
                "table_missing",
                f"{len(missing)} table(s) counted at dump time are missing after the restore: "
                + ", ".join(missing[:20]),
            )
        # Counts are taken just before the dump, in their own transaction: on a busy
        # database they may differ a little from the dump's snapshot. A difference is
        # shown per table, not called corruption; a missing table is.
        differs = sum(1 for r in rows if r["status"] == "differs")
        detail = f"restored in {rto} s into {scratch}; {len(rows)} table(s) compared"
        if differs:
            detail += f", {differs} with a different row count (see table_comparison)"
        detail += note
        return detail, {"rto_seconds": rto, "tables_compared": len(rows), "differs": differs}

    # -- finish ------------------------------------------------------------------------------
    async def finish(
        self, ctx: JobContext, status: str, code: str | None, message: str | None
    ) -> None:
        run_id = int(ctx.params["run_id"])
        outcome = service.outcome_of(status, code)
        async with self.app.db.write_session() as session:
            run = await session.get(VerificationRun, run_id)
            backup = await session.get(Backup, run.backup_id) if run is not None else None
            if run is None or backup is None:
                return
            if status == "interrupted" and run.scratch_database and run.target_server_id:
                await self._drop_after_restart(session, run)
            before = backup.verification_status
            run.status = outcome
            run.error_code = code
            run.error_message = message
            run.finished_at = utcnow()
            backup.verification_status = service.status_after(before, run.test_type, outcome)
            damage = None
            if outcome == service.CORRUPT:  # corrupt, or missing: backups.DAMAGE says which
                damage = await backups.mark_damaged(
                    session, backup, code, message, f"{run.test_type} check"
                )
            await audit.record(
                session,
                action=f"verification.{outcome}",
                username="system (verification)",
                resource_type="backup",
                resource_id=backup.id,
                outcome="success" if outcome == "passed" else "failure",
                details={
                    "run_id": run.id,
                    "job_id": ctx.job_id,
                    "test_type": run.test_type,
                    "trigger": run.trigger,
                    "error_code": code,
                    "verification_status": [before, backup.verification_status],
                },
            )
            await session.commit()
            data = {
                "run_id": run.id,
                "job_id": ctx.job_id,
                "backup_id": backup.id,
                "server_id": backup.server_id,
                "database_name": backup.database_name,
                "test_type": run.test_type,
                "status": outcome,
                "verification_status": backup.verification_status,
                "error_code": code,
                "message": message or run.detail,
            }
        kind = {"passed": "completed", "cancelled": "cancelled"}.get(outcome, "failed")
        self.app.events.publish(Event(f"verification.{kind}", data, team_id=backup.team_id))
        if damage is not None:
            log.warning("backup found damaged", backup_id=backup.id, code=code)
            damage.data["run_id"] = run.id
            self.app.events.publish(damage)

    async def _drop_after_restart(self, session: AsyncSession, run: VerificationRun) -> None:
        """The process died mid-test: the scratch database may still exist."""
        server = await session.get(Server, run.target_server_id)
        backup = await session.get(Backup, run.backup_id)
        if server is None or backup is None or run.scratch_database is None:
            return
        target = servers.target_of(self.app.keyring, server)
        with contextlib.suppress(Exception):
            async with connect.open_runner(target) as runner:
                await drop_scratch(runner, target, backup.db_type, run.scratch_database)
