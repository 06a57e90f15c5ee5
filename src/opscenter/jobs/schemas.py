from __future__ import annotations

from typing import Any

from opscenter.core.schemas import OutputModel, UtcDatetime


class JobOut(OutputModel):
    id: int
    team_id: int
    kind: str
    status: str
    phase: str | None
    progress: float | None
    bytes_done: int
    bytes_total: int | None
    resource_type: str | None
    resource_id: int | None
    params: dict[str, Any]
    result: dict[str, Any]
    error_code: str | None
    error_message: str | None
    cancel_requested: bool
    created_by: int | None
    # The process that runs or ran it ("host:pid"): with several workers, where to look.
    worker: str | None
    heartbeat_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    created_at: UtcDatetime


class Accepted(OutputModel):
    """202 for work that was started: poll `status_url`, or follow the events."""

    id: int
    status: str
    message: str
    task_id: str
    job_id: int
    status_url: str
