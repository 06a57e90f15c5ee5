"""The `report` job: build the document from the team's rows, render it, write it to the
team's storage with its SHA-256, then record the version. A job that does not succeed
leaves no version row, and its finisher removes the file if one was written."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from contextlib import suppress
from dataclasses import replace
from typing import Any, BinaryIO

from sqlalchemy import select

from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.failures import ErrorCode
from opscenter.core.logging import get_logger
from opscenter.documents import ReportDocument, to_csv, to_json, to_pdf
from opscenter.jobs.runner import JobContext, JobFailed
from opscenter.models import JobStatus, Report, ReportVersion, StorageProvider, Team
from opscenter.reports import service
from opscenter.reports.kinds import KINDS, Scope
from opscenter.reports.periods import parse_period
from opscenter.stores.backends import StorageError

log = get_logger(__name__)
CHUNK = 1024 * 1024


def render(doc: ReportDocument, fmt: str, out: BinaryIO) -> None:
    """Blocking: run in a thread."""
    if fmt == "pdf":
        to_pdf(doc, out)
    elif fmt == "csv":
        for line in to_csv(doc):
            out.write(line.encode())
    else:
        out.write(to_json(doc))


class ReportJobs:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def register(self) -> None:
        self.ctx.runner.register(service.JOB_KIND, self.run, self.finish)

    async def build(self, report_id: int) -> tuple[Report, ReportDocument]:
        async with self.ctx.db.read_session() as session:
            report = await session.get(Report, report_id)
            if report is None:
                raise JobFailed(ErrorCode.INVALID_CONFIG, f"Report {report_id} no longer exists")
            team = await session.scalar(select(Team.name).where(Team.id == report.team_id))
            # Stored canonical and already begun when it was asked for: it parses again.
            period = parse_period(report.period, utcnow().date())
            kind = KINDS[report.kind]
            doc = await kind.build(session, Scope(report.team_id, team or ""), period)
        return report, replace(doc, title=report.title)

    async def run(self, job: JobContext) -> dict[str, Any]:
        p = job.params
        report_id, fmt, key = int(p["report_id"]), str(p["format"]), str(p["storage_key"])
        await job.progress(phase="collecting", percent=5)
        report, doc = await self.build(report_id)
        async with self.ctx.db.read_session() as session:
            provider = await session.get(StorageProvider, int(p["storage_id"]))
        if provider is None:
            raise JobFailed(ErrorCode.STORAGE_FAILED, "The report's storage provider was removed")
        storage = self.ctx.storages.get(provider)
        with tempfile.TemporaryFile(prefix="opscenter-report-") as tmp:
            await job.progress(phase="rendering", percent=30)
            await asyncio.to_thread(render, doc, fmt, tmp)
            await job.progress(phase="storing", percent=80)
            digest, size = hashlib.sha256(), 0
            tmp.seek(0)
            try:
                async with await storage.open_writer(key) as writer:
                    while chunk := await asyncio.to_thread(tmp.read, CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        await writer.write(chunk)
                    await writer.commit()
            except StorageError as err:
                raise JobFailed(
                    ErrorCode.STORAGE_FAILED, f"Storing the report failed: {err}"
                ) from None
        async with self.ctx.db.write_session() as session:
            report = await session.get_one(Report, report_id)
            version = ReportVersion(
                report_id=report_id,
                version=await service.next_version(session, report_id),
                format=fmt,
                title=report.title,
                size_bytes=size,
                sha256=digest.hexdigest(),
                storage_id=provider.id,
                storage_key=key,
                job_id=job.job_id,
                generated_by_id=p.get("generated_by_id"),
                generated_by=str(p.get("generated_by", "")),
            )
            session.add(version)
            report.latest_version = version.version
            report.updated_at = utcnow()
            await session.commit()
        log.info(
            "report generated",
            report_id=report_id,
            version=version.version,
            format=fmt,
            size_bytes=size,
        )
        data = {
            "report_id": report_id,
            "version": version.version,
            "format": fmt,
            "size_bytes": size,
            "sha256": version.sha256,
        }
        self.ctx.events.publish(
            Event(
                "reports.generated",
                {"kind": report.kind, "period": report.period, **data},
                team_id=job.team_id,
            )
        )
        return data

    async def finish(
        self, job: JobContext, status: str, code: str | None, message: str | None
    ) -> None:
        if status == JobStatus.SUCCEEDED:
            return
        p = job.params
        async with self.ctx.db.read_session() as session:
            kept = await session.scalar(
                select(ReportVersion.id).where(ReportVersion.job_id == job.job_id)
            )
            provider = await session.get(StorageProvider, int(p["storage_id"]))
        if kept is not None:
            return  # the version was recorded before the job was stopped: it stands
        if provider is not None:
            with suppress(StorageError):
                await self.ctx.storages.get(provider).delete(str(p["storage_key"]))
        log.info(
            "report not generated",
            report_id=p["report_id"],
            status=status,
            code=code,
            error=message,
        )
        self.ctx.events.publish(
            Event(
                "reports.failed",
                {
                    "report_id": p["report_id"],
                    "job_id": job.job_id,
                    "status": status,
                    "error": message,
                },
                team_id=job.team_id,
            )
        )
