"""Reports API models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from opscenter.core.clock import utcnow
from opscenter.core.schemas import Id, InputModel, NoControlChars, OutputModel, UtcDatetime
from opscenter.reports.kinds import KINDS
from opscenter.reports.periods import HELP, parse_period

Format = Literal["pdf", "csv", "json"]


def _known_kind(value: str) -> str:
    if value not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)}")
    return value


class GenerateIn(InputModel):
    kind: Annotated[str, StringConstraints(max_length=32), AfterValidator(_known_kind)] = Field(
        description="backup_summary, restore_tests, incident_summary, security_findings, costs"
    )
    period: str = Field(max_length=32, description=f"The days the report covers: {HELP}")
    format: Format = "pdf"
    team_id: Id | None = Field(None, description="Whose rows; the caller's only team if omitted")
    title: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
            NoControlChars,
        ]
        | None
    ) = Field(None, description="Defaults to the kind's title")

    @field_validator("period")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return parse_period(value, utcnow().date()).name


class KindOut(OutputModel):
    name: str
    title: str
    description: str


class VersionOut(OutputModel):
    id: int
    report_id: int
    version: int
    format: str
    title: str
    size_bytes: int
    sha256: str
    job_id: int | None
    generated_by: str
    created_at: UtcDatetime
    download_url: str


class ReportOut(OutputModel):
    id: int
    team_id: int
    kind: str
    period: str
    title: str
    latest_version: int
    created_at: UtcDatetime
    updated_at: UtcDatetime
    latest: VersionOut | None = None
    versions_url: str
