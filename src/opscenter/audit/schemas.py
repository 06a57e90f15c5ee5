from __future__ import annotations

from typing import Any

from opscenter.core.pagination import KeysetPage
from opscenter.core.schemas import OutputModel, UtcDatetime


class AuditLogOut(OutputModel):
    id: int
    created_at: UtcDatetime
    user_id: int | None
    username: str | None
    team_id: int | None
    api_key_id: int | None
    action: str
    resource_type: str | None
    resource_id: str | None
    outcome: str
    details: dict[str, Any]
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    hash: str


class AuditPage(KeysetPage[AuditLogOut]):
    """A page of the trail, newest first."""


class ChainReportOut(OutputModel):
    valid: bool
    checked: int
    first_bad_id: int | None
    problem: str | None
    head_hash: str | None
