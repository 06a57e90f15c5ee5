"""Large scanner reports are imported by a job: the request streams the report to a file,
checks its start (`formats.sniff`: a plainly wrong file is still a 422 with nothing
kept), queues the job and answers 202; the job reads the report whole and imports it in
one transaction, so a report broken further in fails the job and changes nothing."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.principal import SYSTEM
from opscenter.jobs.runner import JobContext, JobFailed
from opscenter.models import JobStatus
from opscenter.models.security import SecurityAsset
from opscenter.security import service
from opscenter.security.importers import ReportProblem
from opscenter.security.importers.formats import Scanner, read
from opscenter.security.upload import Upload, remove

IMPORT_KIND = "security_import"


def keep(upload: Upload, spool_dir: Path) -> Path:
    """The uploaded file under a name of its own for the job (the request's temp file is
    removed when the request ends)."""
    assert upload.path is not None
    kept = spool_dir / f"security-import-{uuid.uuid4().hex}.json"
    os.replace(upload.path, kept)
    upload.path = None
    return kept


def params(
    asset: SecurityAsset, path: Path, scanner: Scanner | None, upload: Upload, user: int | None
) -> dict[str, Any]:
    return {
        "asset_id": asset.id,
        "path": str(path),
        "scanner": scanner.value if scanner else None,
        "filename": upload.filename,
        "sha256": upload.sha256,
        "size": upload.size,
        "created_by": user,
    }


def wire(ctx: AppContext) -> None:
    async def run(job: JobContext) -> dict[str, Any]:
        p = job.params
        claimed = Scanner(p["scanner"]) if p["scanner"] else None
        await job.progress(phase="reading")
        try:
            scanner, parsed = await asyncio.to_thread(read, Path(p["path"]), claimed)
        except ReportProblem as problem:
            raise JobFailed(
                "INVALID_SECURITY_REPORT", f"The report is not valid: {problem}"
            ) from None
        await job.progress(phase="importing")
        async with ctx.db.write_session() as session:
            asset = await session.get(SecurityAsset, int(p["asset_id"]))
            if asset is None:
                raise JobFailed("NOT_FOUND", "The asset was deleted before its report was read")
            imp = await service.import_findings(
                session,
                SYSTEM,
                asset,
                scanner,
                parsed,
                service.ReportFile(p["filename"], p["sha256"], int(p["size"])),
                utcnow(),
                {str(k): v for k, v in ctx.settings.security_sla_days.items()},
            )
            imp.created_by = p["created_by"]
            await session.flush()
            out = service.import_out(imp)
            await session.commit()
        ctx.events.publish(
            Event(
                "security.imported",
                out.model_dump(mode="json", exclude={"sha256"}),
                team_id=imp.team_id,
            )
        )
        return out.model_dump(mode="json", include={"id", "reported", "new", "reopened", "closed"})

    async def finish(job: JobContext, status: str, code: str | None, message: str | None) -> None:
        # The import is one transaction: a job that did not succeed left nothing behind.
        remove(Path(job.params["path"]))
        if status != JobStatus.SUCCEEDED:
            ctx.events.publish(
                Event(
                    "security.import_failed",
                    {"asset_id": job.params["asset_id"], "status": status, "error": message},
                    team_id=job.team_id,
                )
            )

    ctx.runner.register(IMPORT_KIND, run, finish)
