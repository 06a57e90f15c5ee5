"""The `command` job: run one execution on each of its targets, at most FANOUT at once
and at most PER_SERVER commands at once on any one server; record each result and stream
the output on the WebSocket channel `command:<execution_id>`."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from opscenter.commands import run as target_run
from opscenter.commands.service import JOB_KIND, sealed_context
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.failures import BackupError
from opscenter.core.logging import get_logger
from opscenter.engines.mysql import mysql_client_command, resolve_mysql_tool
from opscenter.engines.postgres import PG_BIN_GLOBS, find_psql, psql_command
from opscenter.jobs.runner import JobContext, JobFailed
from opscenter.models import CommandExecution, CommandResult, ResultStatus, Server
from opscenter.remote.docker import DockerRunner
from opscenter.remote.runner import Command, CommandRunner
from opscenter.servers import connect
from opscenter.servers import service as servers

log = get_logger("opscenter.commands")
FANOUT = 32
PER_SERVER = 4
LINE_CAP = 4000
_ORDER = (ResultStatus.CANCELLED, ResultStatus.TIMED_OUT, ResultStatus.FAILED)


def log_dir(ctx: AppContext, execution_id: int, result_id: int) -> Path:
    return ctx.settings.data_dir / "command-logs" / str(execution_id) / str(result_id)


def overall(statuses: list[str]) -> str:
    for status in _ORDER:
        if status in statuses:
            return status
    return ResultStatus.COMPLETED


# At most PER_SERVER commands at once on one server, whoever started them.
_PER_SERVER: defaultdict[int, asyncio.Semaphore] = defaultdict(
    lambda: asyncio.Semaphore(PER_SERVER)
)


class CommandJobs:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def register(self) -> None:
        self.ctx.runner.register(JOB_KIND, self.run, self.finish)

    def publish(self, team_id: int, type_: str, data: dict[str, Any]) -> None:
        self.ctx.events.publish(Event(type_, data, team_id=team_id))

    async def run(self, job: JobContext) -> dict[str, Any]:
        execution_id = int(job.params["execution_id"])
        status = await self.execute(execution_id, job.params["sealed"])
        if status != ResultStatus.COMPLETED:
            raise JobFailed(f"command_{status}", f"the command {status} on at least one target")
        return {"execution_id": execution_id, "status": status}

    async def execute(self, execution_id: int, sealed_text: str) -> str:
        """Run an execution on all its targets (in a job of its own, or a runbook's)."""
        sealed = json.loads(
            self.ctx.keyring.decrypt_secret(sealed_text, context=sealed_context(execution_id))
        )
        async with self.ctx.db.write_session() as session:
            execution = await session.get(CommandExecution, execution_id)
            if execution is None:
                raise JobFailed("not_found", f"execution {execution_id} is gone")
            execution.status = ResultStatus.RUNNING
            execution.started_at = utcnow()
            results = (
                await session.scalars(
                    select(CommandResult)
                    .where(CommandResult.execution_id == execution_id)
                    .order_by(CommandResult.id)
                )
            ).all()
            server_ids = [r.server_id for r in results if r.server_id is not None]
            found = await session.scalars(select(Server).where(Server.id.in_(server_ids)))
            by_id = {s.id: s for s in found}
            await session.commit()
        team_id, timeout = execution.team_id, execution.timeout_seconds
        self.publish(
            team_id,
            "command.started",
            {
                "execution_id": execution_id,
                "command_id": execution.command_id,
                "status": "running",
                "targets": len(results),
            },
        )
        fanout = asyncio.Semaphore(FANOUT)

        async def one(result: CommandResult) -> str:
            async with fanout:
                server = by_id.get(result.server_id or 0)
                return await self._target(execution, result, server, sealed, timeout, team_id)

        try:
            statuses = await asyncio.gather(*(one(r) for r in results))
        except asyncio.CancelledError:
            await asyncio.shield(self._finish_execution(execution_id, ResultStatus.CANCELLED))
            raise
        status = overall(list(statuses))
        await self._finish_execution(execution_id, status)
        return status

    async def _target(
        self,
        execution: CommandExecution,
        result: CommandResult,
        server: Server | None,
        sealed: dict[str, Any],
        limit_seconds: int,
        team_id: int,
    ) -> str:
        base = {"execution_id": execution.id, "result_id": result.id, "server_id": result.server_id}
        started = utcnow()
        await self._write_result(result.id, status=ResultStatus.RUNNING, started_at=started)

        # Lines and per-target ends are progress (`command.progress`: notification policies
        # skip it); the execution's end is news (`command.completed`, `command.failed`, ...).
        def on_line(stream: str, line: str) -> None:
            self.publish(
                team_id, "command.progress", {**base, "stream": stream, "line": line[:LINE_CAP]}
            )

        if server is None:
            outcome = target_run.Outcome(
                ResultStatus.FAILED, None, "", "", 0, 0, False, 0.0, "the server was deleted"
            )
        else:
            try:
                async with _PER_SERVER[server.id]:
                    outcome = await self._run(
                        execution, result, server, sealed, limit_seconds, on_line
                    )
            except asyncio.CancelledError:
                await self._write_result(
                    result.id,
                    status=ResultStatus.CANCELLED,
                    completed_at=utcnow(),
                    error="cancelled by request; the command was killed",
                )
                self.publish(team_id, "command.progress", {**base, "result_status": "cancelled"})
                raise
            except BackupError as exc:
                message = connect.explain(exc)
                outcome = target_run.Outcome(
                    ResultStatus.FAILED, None, "", message, 0, 0, False, 0.0, message
                )
            except Exception as exc:  # one target's surprise must not lose the others
                log.exception("command target failed", execution_id=execution.id)
                message = f"unexpected error ({type(exc).__name__}); see the server log"
                outcome = target_run.Outcome(
                    ResultStatus.FAILED, None, "", message, 0, 0, False, 0.0, message
                )
        await self._write_result(
            result.id,
            status=outcome.status,
            exit_code=outcome.exit_code,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            stdout_bytes=outcome.stdout_bytes,
            stderr_bytes=outcome.stderr_bytes,
            truncated=outcome.truncated,
            error=outcome.error,
            completed_at=utcnow(),
            duration_seconds=round(outcome.duration, 3),
        )
        self.publish(
            team_id,
            "command.progress",
            {**base, "result_status": outcome.status, "exit_code": outcome.exit_code},
        )
        return outcome.status

    async def _run(
        self,
        execution: CommandExecution,
        result: CommandResult,
        server: Server,
        sealed: dict[str, Any],
        limit_seconds: int,
        on_line: Any,
    ) -> target_run.Outcome:
        target = servers.target_of(self.ctx.keyring, server)
        secrets = tuple(sealed.get("secrets") or ())
        where = log_dir(self.ctx, execution.id, result.id)
        async with connect.open_runner(target) as runner:
            if execution.type == "sql":
                command = await _sql_command(runner, target, sealed)
                command = Command(
                    command.argv, command.env, command.secret_files, (*command.secrets, *secrets)
                )
                wrapped = target_run.watched(command, limit_seconds)
            else:
                if execution.type == "shell" and isinstance(runner, DockerRunner):
                    runner = runner.host  # shell: on the container's host
                wrapped = target_run.shell_command(sealed["script"], limit_seconds)
                wrapped = Command(wrapped.argv, wrapped.env, secrets=secrets)
            return await target_run.run_on(
                runner, wrapped, limit_seconds=limit_seconds, log_dir=where, on_line=on_line
            )

    async def _write_result(self, result_id: int, **values: Any) -> None:
        async with self.ctx.db.write_session() as session:
            await session.execute(
                update(CommandResult).where(CommandResult.id == result_id).values(**values)
            )
            await session.commit()

    async def _finish_execution(self, execution_id: int, status: str | None = None) -> None:
        """Sum the results up in the execution (seed 001's single-server fields)."""
        async with self.ctx.db.write_session() as session:
            execution = await session.get(CommandExecution, execution_id)
            if execution is None:
                return
            results = (
                await session.scalars(
                    select(CommandResult)
                    .where(CommandResult.execution_id == execution_id)
                    .order_by(CommandResult.id)
                )
            ).all()
            for r in results:  # the ones that never got to run
                if r.status in (ResultStatus.PENDING, ResultStatus.RUNNING):
                    r.status = ResultStatus.CANCELLED
                    r.completed_at = utcnow()
            status = status or overall([r.status for r in results])
            now = utcnow()
            execution.status = status
            execution.completed_at = now
            if execution.started_at is not None:
                execution.duration_seconds = round((now - execution.started_at).total_seconds(), 3)
            codes = [r.exit_code for r in results if r.exit_code not in (None, 0)]
            execution.exit_code = (
                codes[0]
                if codes
                else (0 if results and all(r.exit_code == 0 for r in results) else None)
            )
            if len(results) == 1:
                execution.stdout, execution.stderr = results[0].stdout, results[0].stderr
            else:
                execution.stdout = "".join(
                    f"=== {r.server_name}: {r.status} ===\n{r.stdout}" for r in results
                )[: target_run.ROW_CAP]
                execution.stderr = "".join(
                    f"=== {r.server_name} ===\n{r.stderr}\n" for r in results if r.stderr
                )[: target_run.ROW_CAP]
            team_id, command_id = execution.team_id, execution.command_id
            await session.commit()
        self.publish(
            team_id,
            f"command.{status}",
            {"execution_id": execution_id, "command_id": command_id, "status": status},
        )

    async def finish(
        self, job: JobContext, status: str, code: str | None, message: str | None
    ) -> None:
        """Cancelled, interrupted or crashed: the execution's record ends too."""
        execution_id = int(job.params["execution_id"])
        async with self.ctx.db.read_session() as session:
            execution = await session.get(CommandExecution, execution_id)
        if execution is not None and execution.status in (
            ResultStatus.PENDING,
            ResultStatus.RUNNING,
        ):
            await self._finish_execution(
                execution_id, ResultStatus.CANCELLED if status != "failed" else ResultStatus.FAILED
            )


async def _sql_command(
    runner: CommandRunner, target: connect.Target, sealed: dict[str, Any]
) -> Command:
    engine = target.engine()
    sql, database, writes = sealed["script"], sealed.get("database"), bool(sealed.get("writes"))
    if engine == "postgresql":
        psql = await find_psql(runner, PG_BIN_GLOBS)
        command = psql_command(psql, target.pg(database or "postgres"), sql)
        if not writes:  # every transaction of the session read-only, set before the first
            env = {**command.env, "PGOPTIONS": "-c default_transaction_read_only=on"}
            command = Command(command.argv, env, command.secret_files, command.secrets)
        return command
    if engine == "mysql":
        client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
        init = () if writes else ("--init-command=SET SESSION TRANSACTION READ ONLY",)
        return mysql_client_command(
            client, target.mysql(), "--batch", *init, "-e", sql, database=database
        )
    raise JobFailed("invalid_target", f"no SQL engine on this server ({engine})")


def remove_logs(ctx: AppContext, execution_id: int) -> None:
    shutil.rmtree(ctx.settings.data_dir / "command-logs" / str(execution_id), ignore_errors=True)
