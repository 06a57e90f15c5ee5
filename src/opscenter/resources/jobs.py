"""The collection round as a job (`POST /resources/collect`) and as a background loop."""

from __future__ import annotations

import asyncio
from typing import Any

from opscenter.core.context import AppContext
from opscenter.core.logging import get_logger
from opscenter.jobs.runner import JobContext
from opscenter.resources import service

log = get_logger("opscenter.resources")


def register_jobs(app: AppContext, kind: str) -> None:
    async def run(job: JobContext) -> dict[str, Any]:
        await job.progress(phase="collecting")
        result = await service.collect_round(app)
        return result.model_dump()

    app.runner.register(kind, run)


async def run_forever(app: AppContext, interval_seconds: float) -> None:
    while True:
        try:
            await service.collect_round(app)
        except Exception:
            log.exception("resource collection round failed")
        await asyncio.sleep(interval_seconds)
