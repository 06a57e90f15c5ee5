"""The 202 answer of every route that queues a job."""

from __future__ import annotations

from fastapi import Request

from opscenter.core.context import get_ctx
from opscenter.core.middleware import defer
from opscenter.jobs.schemas import Accepted


def accepted(request: Request, job_id: int, ident: int, message: str) -> Accepted:
    """Answer 202; the job reaches the runner only once this request's transaction commits."""
    runner = get_ctx(request).runner

    async def submit() -> None:
        runner.submit(job_id)

    defer(request.state, submit)
    return Accepted(
        id=ident,
        status="pending",
        message=message,
        task_id=str(job_id),
        job_id=job_id,
        status_url=f"/api/v1/jobs/{job_id}",
    )
