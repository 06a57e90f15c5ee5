"""The 202 answer of every route that queues a job."""

from __future__ import annotations

from fastapi import Request

from opscenter.core.context import get_ctx
from opscenter.core.middleware import defer
from opscenter.jobs.schemas import Accepted


def accepted(
    request: Request,
    job_id: int,
    ident: int,
    message: str,
    *,
    status: str = "pending",
    status_url: str | None = None,
    submit: bool = True,
) -> Accepted:
    """Answer 202; the job reaches the runner only once this request's transaction commits.
    `submit=False` for a replayed answer (same idempotency key): that job is already queued."""
    if submit:
        runner = get_ctx(request).runner

        async def submit_job() -> None:
            runner.submit(job_id)

        defer(request.state, submit_job)
    return Accepted(
        id=ident,
        status=status,
        message=message,
        task_id=str(job_id),
        job_id=job_id,
        status_url=status_url or f"/api/v1/jobs/{job_id}",
    )
