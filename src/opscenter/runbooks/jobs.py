"""The `sop` job: takes a run from its current step as far as it goes without a person.

Manual and approval steps end the job with the run `waiting`; ticking or approving the
step queues the next job. Command steps run their command in this job (cancelling the run
kills it); wait steps poll their condition until it holds or their time is up.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.audit import service as audit
from opscenter.backups import service as backups
from opscenter.backups.schemas import RestoreRequest
from opscenter.commands import service as commands
from opscenter.commands.jobs import CommandJobs
from opscenter.commands.schemas import ExecuteRequest
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.errors import AppError, NotFound
from opscenter.core.events import Event
from opscenter.core.hostfiles import HostFiles
from opscenter.core.logging import get_logger
from opscenter.jobs.runner import TERMINAL as JOB_TERMINAL
from opscenter.jobs.runner import JobContext
from opscenter.models import (
    Backup,
    Command,
    Job,
    ResultStatus,
    Server,
    SopRun,
    SopStepRun,
    VerificationRun,
)
from opscenter.runbooks import rotation, service
from opscenter.runbooks.service import JOB_KIND, TERMINAL
from opscenter.servers import service as servers
from opscenter.verify import service as verify
from opscenter.verify.schemas import VerifyRequest

log = get_logger("opscenter.runbooks")

#: A backup counts as verified once a deep check or a restore test passed (verify's words).
VERIFIED = ("deep_ok", "restore_verified")
#: Steps that run as other domains' jobs and wait for them (settled by `watch`).
ON_JOBS = ("verify", "restore")
#: How often a wait step looks at its condition again.
POLL_SECONDS = 2.0


class RunbookJobs:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.commands = CommandJobs(ctx)

    def register(self) -> None:
        self.ctx.runner.register(JOB_KIND, self.advance, self.finish)

    def publish(self, run: SopRun, action: str, **data: Any) -> None:
        self.ctx.events.publish(
            Event(
                f"sop.{action}",
                {"run_id": run.id, "sop_id": run.sop_id, "sop": run.sop_name, **data},
                team_id=run.team_id,
            )
        )

    async def advance(self, job: JobContext) -> dict[str, Any]:
        run_id = int(job.params["run_id"])
        while True:
            async with self.ctx.db.write_session() as session:
                run = await session.get(SopRun, run_id)
                if run is None or run.status in TERMINAL:
                    return {"run_id": run_id}
                if run.paused:
                    run.status = "paused"
                    await session.commit()
                    self.publish(run, "paused", status="paused")
                    return {"run_id": run_id, "status": "paused"}
                steps = await service.step_runs(session, run_id)
                if run.current_step >= len(steps):
                    run.status = "completed"
                    run.completed_at = utcnow()
                    await session.commit()
                    self.publish(run, "completed", status="completed")
                    return {"run_id": run_id, "status": "completed"}
                step = steps[run.current_step]
                if step.status in ("completed", "skipped") or (
                    step.status == "failed" and step.definition.get("continue_on_failure")
                ):
                    run.current_step += 1
                    await session.commit()
                    continue
                if step.status == "failed":  # settled by the watcher: the run stops here
                    run.status = "failed"
                    run.error = f"step {step.position + 1} ({step.name}) failed"
                    run.completed_at = utcnow()
                    await session.commit()
                    self.publish(run, "failed", status="failed", error=run.error)
                    return {"run_id": run_id, "status": "failed"}
                if step.type in ON_JOBS and step.status == "waiting":
                    return {"run_id": run_id, "status": "running", "step": step.position}
                if step.type in ON_JOBS:
                    start = self._start_verify if step.type == "verify" else self._start_restore
                    submitted = await start(session, run, step)
                    await session.commit()
                    for job_id in submitted:
                        self.ctx.runner.submit(job_id)
                    if submitted:  # the watcher moves the run on once they all ended
                        return {"run_id": run_id, "status": "running", "step": step.position}
                    if not step.definition.get("continue_on_failure"):
                        run.status = "failed"
                        run.error = f"step {step.position + 1} ({step.name}) failed"
                        run.completed_at = utcnow()
                        await session.commit()
                        self.publish(run, "failed", status="failed", error=run.error)
                        return {"run_id": run_id, "status": "failed"}
                    continue
                if step.type in ("manual", "approval"):
                    step.status = "waiting"
                    step.started_at = step.started_at or utcnow()
                    run.status = "waiting"
                    await session.commit()
                    self.publish(
                        run,
                        "waiting",
                        status="waiting",
                        step=step.position,
                        step_name=step.name,
                        step_type=step.type,
                        approver_role=step.definition.get("approver_role")
                        if step.type == "approval"
                        else None,
                    )
                    return {"run_id": run_id, "status": "waiting", "step": step.position}
                step.status = "running"
                step.started_at = utcnow()
                run.status = "running"
                await session.commit()
            self.publish(
                run, "progress", step=step.position, step_name=step.name, step_status="running"
            )
            if step.type == "command":
                ok, outputs = await self._command(run, step)
            elif step.type == "rotate_password":
                ok, outputs = await self._rotate(run, step)
            else:
                ok, outputs = await self._wait(run, step)
            async with self.ctx.db.write_session() as session:
                run = await session.get(SopRun, run_id)
                row = await session.get(SopStepRun, step.id)
                assert run is not None and row is not None
                row.status = "completed" if ok else "failed"
                row.outputs = outputs
                row.completed_at = utcnow()
                if run.status in TERMINAL:
                    await session.commit()
                    return {"run_id": run_id}
                stops = not ok and not row.definition.get("continue_on_failure")
                if stops:
                    run.status = "failed"
                    run.error = f"step {row.position + 1} ({row.name}) failed"
                    run.completed_at = utcnow()
                else:
                    run.current_step += 1
                await session.commit()
            # After the commit: a page that reloads on this event must find the step settled.
            self.publish(
                run, "progress", step=row.position, step_name=row.name, step_status=row.status
            )
            if stops:
                self.publish(run, "failed", status="failed", error=run.error)
                return {"run_id": run_id, "status": "failed"}

    async def _start_verify(
        self, session: AsyncSession, run: SopRun, step: SopStepRun
    ) -> list[int]:
        """Queue a check of the newest completed backup of each database of the targets;
        the step waits for their jobs (without holding a job slot: `watch` ends it)."""
        targets = service.step_targets(step.definition, run.server_ids)
        newest = (
            select(Backup.server_id, Backup.database_name, func.max(Backup.id).label("id"))
            .where(
                Backup.team_id == run.team_id,
                Backup.status == "completed",
                Backup.server_id.in_(targets),
                Backup.copy_of_id.is_(None),
            )
            .group_by(Backup.server_id, Backup.database_name)
        )
        backup_ids = sorted(row.id for row in (await session.execute(newest)).all())
        step.started_at = utcnow()
        if not backup_ids:
            step.status = "failed"
            step.completed_at = utcnow()
            step.outputs = {"error": "no completed backup of these servers to verify"}
            return []
        request = VerifyRequest(test_type=step.definition.get("test_type", "deep"))
        runs, job_ids = [], []
        for backup_id in backup_ids:
            vrun, job = await verify.create_verification(
                session, service.requester(run), backup_id, request, trigger="runbook"
            )
            runs.append(vrun.id)
            job_ids.append(job.id)
        step.status = "waiting"
        step.outputs = {"backup_ids": backup_ids, "verification_ids": runs, "job_ids": job_ids}
        run.status = "running"
        return job_ids

    async def _start_restore(
        self, session: AsyncSession, run: SopRun, step: SopStepRun
    ) -> list[int]:
        """Queue the restore of the newest completed backup of the step's database on the
        run's first target (the restore checks the target as `POST /backups/{id}/restore`)."""
        d = step.definition
        step.started_at = utcnow()
        source = service.step_targets(d, run.server_ids)[0]
        backup_id = await session.scalar(
            select(func.max(Backup.id)).where(
                Backup.team_id == run.team_id,
                Backup.server_id == source,
                Backup.database_name == d["database_name"],
                Backup.status == "completed",
            )
        )
        try:
            if backup_id is None:
                raise NotFound("Completed backup", f"of {d['database_name']} on server {source}")
            request = RestoreRequest(
                target_server_id=d["target_server_id"],
                target_database=d["target_database"],
                drop_existing=bool(d.get("drop_existing")),
                confirm=d["target_database"],  # the run was confirmed when it started
                mask_sensitive_data=bool(d.get("masking_rules")),
                masking_rules=d.get("masking_rules") or {},
            )
            _, job = await backups.queue_restore(
                session,
                service.requester(run),
                self.ctx.keyring,
                HostFiles(self.ctx.settings),
                backup_id,
                request,
                None,
            )
        except (AppError, ValueError) as exc:
            row = await session.get(SopStepRun, step.id)
            assert row is not None
            row.status = "failed"
            row.completed_at = utcnow()
            row.outputs = {"error": getattr(exc, "detail", None) or str(exc)}
            return []
        row = await session.get(SopStepRun, step.id)
        assert row is not None
        row.status = "waiting"
        row.outputs = {"backup_id": backup_id, "job_ids": [job.id]}
        return [job.id]

    async def watch(self) -> None:
        """Ends verify and restore steps whose jobs all ended, and moves their runs on."""
        await self.settle_job_steps()
        async with self.ctx.events.subscribe() as queue:
            while True:
                event = await queue.get()
                kind = event.data.get("kind")
                if (
                    event.type.startswith("job.")
                    and kind in (verify.JOB_KIND, "restore")
                    and (event.data.get("status") in JOB_TERMINAL)
                ):
                    try:
                        await self.settle_job_steps()
                    except Exception:
                        log.exception("settling runbook steps failed")

    async def settle_job_steps(self) -> None:
        submit: list[int] = []
        async with self.ctx.db.write_session() as session:
            waiting = (
                await session.scalars(
                    select(SopStepRun).where(
                        SopStepRun.type.in_(ON_JOBS), SopStepRun.status == "waiting"
                    )
                )
            ).all()
            for step in waiting:
                ids = list(step.outputs.get("job_ids") or [])
                found = (await session.scalars(select(Job).where(Job.id.in_(ids)))).all()
                if any(j.status not in JOB_TERMINAL for j in found):
                    continue
                if step.type == "verify":
                    vruns = (
                        await session.scalars(
                            select(VerificationRun).where(
                                VerificationRun.id.in_(step.outputs.get("verification_ids") or [])
                            )
                        )
                    ).all()
                    ok = sum(v.status == "passed" for v in vruns) == len(ids)
                    results = {str(v.backup_id): v.status for v in vruns}
                else:
                    ok = all(j.status == "succeeded" for j in found) and len(found) == len(ids)
                    results = {str(j.id): j.error_message or j.status for j in found}
                step.status = "completed" if ok else "failed"
                step.completed_at = utcnow()
                step.outputs = {**step.outputs, "results": results}
                run = await session.get(SopRun, step.run_id)
                if run is not None and run.status not in TERMINAL:
                    # The advance job stops the run at a failed step, or goes on.
                    job = await service.advance_job(session, service.requester(run), run)
                    submit.append(job.id)
            await session.commit()
        for job_id in submit:
            self.ctx.runner.submit(job_id)

    async def _command(self, run: SopRun, step: SopStepRun) -> tuple[bool, dict[str, Any]]:
        d = step.definition
        async with self.ctx.db.write_session() as session:
            cmd = await session.get(Command, d["command_id"])
            if cmd is None:
                return False, {"error": "the command was deleted"}
            try:
                execution, sealed = await commands.create_execution(
                    session,
                    self.ctx.keyring,
                    service.requester(run),
                    cmd,
                    ExecuteRequest(
                        server_ids=service.step_targets(d, run.server_ids),
                        variables=d.get("variables") or {},
                        confirm=cmd.name,  # the run was confirmed when it started
                    ),
                    sop_run_id=run.id,
                )
            except AppError as exc:
                return False, {"error": exc.detail}
            row = await session.get(SopStepRun, step.id)
            assert row is not None
            row.command_execution_id = execution.id
            await session.commit()
        status = await self.commands.execute(execution.id, sealed)
        return status == ResultStatus.COMPLETED, {
            "execution_id": execution.id,
            "status": status,
        }

    async def _rotate(self, run: SopRun, step: SopStepRun) -> tuple[bool, dict[str, Any]]:
        """Each target in turn; the first that fails stops the step (the rest untouched)."""
        done: dict[str, Any] = {}
        for server_id in service.step_targets(step.definition, run.server_ids):
            async with self.ctx.db.read_session() as session:
                server = await session.get(Server, server_id)
            if server is None or server.team_id != run.team_id:
                return False, {"servers": done, "error": f"server {server_id} is gone"}
            password = rotation.new_password()
            try:
                user = await rotation.rotate(servers.target_of(self.ctx.keyring, server), password)
            except rotation.RotationFailed as exc:
                return False, {"servers": done, "error": f"{server.name}: {exc}"}
            async with self.ctx.db.write_session() as session:
                row = await session.get(Server, server_id)
                if row is None:
                    return False, {
                        "servers": done,
                        "error": f"{server.name} was deleted while its password changed; "
                        "the new password was not stored",
                    }
                servers.replace_db_password(self.ctx.keyring, row, password)
                await audit.record(
                    session,
                    action="server.rotate_password",
                    actor=service.requester(run),
                    resource_type="server",
                    resource_id=row.id,
                    details={"database_user": user, "sop_run_id": run.id},
                )
                await session.commit()
            done[str(server_id)] = {"server": server.name, "database_user": user}
            self.ctx.events.publish(
                Event(
                    "server.credentials_rotated",
                    {"server_id": server_id, "database_user": user, "sop_run_id": run.id},
                    team_id=run.team_id,
                )
            )
        return True, {"servers": done}

    async def _wait(self, run: SopRun, step: SopStepRun) -> tuple[bool, dict[str, Any]]:
        d = step.definition
        targets = service.step_targets(d, run.server_ids)
        deadline = asyncio.get_running_loop().time() + int(d.get("wait_timeout_seconds", 3600))
        while True:
            since = utcnow() - timedelta(minutes=int(d.get("within_minutes", 60)))
            stmt = select(Backup.id).where(
                Backup.team_id == run.team_id,
                Backup.status == "completed",
                Backup.completed_at >= since,
            )
            if targets:
                stmt = stmt.where(Backup.server_id.in_(targets))
            if d.get("condition") == "backup_verified_within":
                stmt = stmt.where(Backup.verification_status.in_(VERIFIED))
            async with self.ctx.db.read_session() as session:
                found = await session.scalar(stmt.order_by(Backup.id.desc()).limit(1))
            if found is not None:
                return True, {"condition": d.get("condition"), "backup_id": found}
            if asyncio.get_running_loop().time() >= deadline:
                return False, {
                    "condition": d.get("condition"),
                    "error": f"not met within {d.get('wait_timeout_seconds')} s",
                }
            await asyncio.sleep(POLL_SECONDS)

    async def finish(
        self, job: JobContext, status: str, code: str | None, message: str | None
    ) -> None:
        """A job that ended otherwise than by returning (cancelled, interrupted, crashed)
        leaves its run `failed` or `cancelled`, never `running`."""
        if status == "succeeded":
            return
        run_id = int(job.params["run_id"])
        async with self.ctx.db.write_session() as session:
            run = await session.get(SopRun, run_id)
            if run is None or run.status in TERMINAL or run.paused:
                return
            run.status = "cancelled" if status == "cancelled" else "failed"
            run.error = message
            run.completed_at = utcnow()
            for step in await service.step_runs(session, run_id):
                if step.status in ("pending", "waiting", "running"):
                    step.status = "cancelled" if status == "cancelled" else "failed"
            await session.commit()
        self.publish(run, run.status, status=run.status)
