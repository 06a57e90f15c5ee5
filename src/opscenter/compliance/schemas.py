"""Request and response models of the compliance API: the framework catalogue, evidence,
assessments and their stored reports (under seed 002's `/audit`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from opscenter.core.clock import as_utc
from opscenter.core.schemas import Id, InputModel, OutputModel, UtcDatetime

#: A moment given by a client; one without a zone is taken as UTC.
Moment = Annotated[datetime, AfterValidator(as_utc)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ControlId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Link = Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[^\s/$.?#][^\s]*$")]


class Status(StrEnum):
    """A control's or a requirement's standing over a period."""

    MET = "met"
    PARTIAL = "partial"
    NOT_MET = "not_met"
    NO_EVIDENCE = "no_evidence"
    NOT_ASSESSED = "not_assessed"  # a requirement no control of ours is mapped to


# -- the catalogue --------------------------------------------------------------------------
class FrameworkRef(OutputModel):
    id: str
    name: str
    version: str


class RequirementOut(OutputModel):
    id: str
    title: str
    group: str = Field(description="The family it belongs to (CC6, A.8, PR.DS, ...)")
    group_title: str
    controls: list[str] = Field(description="Ids of our controls mapped to it")


class ControlOut(OutputModel):
    id: str
    title: str
    satisfied_by: str = Field(description="What evidence satisfies the control")
    gathered_by_platform: bool = Field(
        description="The platform gathers its evidence itself; otherwise it is uploaded"
    )
    requirements: dict[str, list[str]] = Field(
        description="Requirement ids it is mapped to, per framework id"
    )


class FrameworkOut(FrameworkRef):
    publisher: str
    requirement_count: int
    requirements: list[RequirementOut]
    controls: list[ControlOut] = Field(description="Our controls mapped into this framework")


# -- evidence -------------------------------------------------------------------------------
class EvidenceIn(InputModel):
    title: Title
    control_ids: Annotated[list[ControlId], Field(min_length=1, max_length=50)]
    effective_from: Moment = Field(description="From when the evidence holds")
    effective_to: Moment = Field(description="Until when it holds (inclusive)")
    description: Annotated[str, StringConstraints(max_length=20_000)] = ""
    link: Link | None = Field(None, description="Where the document is kept (http or https)")
    team_id: Id | None = Field(
        None,
        description="The team it is evidence for; default: the caller's only team. "
        "Left out by someone who sees every team: evidence for the whole installation",
    )

    @model_validator(mode="after")
    def _period(self) -> EvidenceIn:
        if self.effective_to < self.effective_from:
            raise ValueError("effective_to must not be before effective_from")
        if not self.description.strip() and self.link is None:
            raise ValueError("give a link or a description (or both)")
        return self


class EvidenceOut(OutputModel):
    id: int
    team_id: int | None
    title: str
    description: str
    link: str | None
    control_ids: list[str]
    effective_from: UtcDatetime
    effective_to: UtcDatetime
    uploaded_by: str
    uploaded_by_id: int | None
    created_at: UtcDatetime


# -- assessments ----------------------------------------------------------------------------
class EvidenceItem(OutputModel):
    kind: str = Field(description="backups, verifications, audit_chain, document, ...")
    source: Literal["platform", "upload"]
    title: str
    effective_from: UtcDatetime
    effective_to: UtcDatetime
    detail: str
    link: str | None = None


class ControlAssessment(OutputModel):
    id: str
    title: str
    status: Status
    evidence: list[EvidenceItem]


class RequirementAssessment(OutputModel):
    id: str
    title: str
    group: str
    status: Status
    controls: list[ControlAssessment]


class FrameworkAssessment(OutputModel):
    framework: FrameworkRef
    period_start: UtcDatetime
    period_end: UtcDatetime
    generated_at: UtcDatetime
    summary: dict[Status, int] = Field(description="Requirements per status")
    requirements: list[RequirementAssessment]


class ReportRequest(InputModel):
    framework: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    period_start: Moment
    period_end: Moment
    team_id: Id | None = Field(
        None,
        description="Assess one team; default: the caller's only team, or every team for "
        "someone who sees them all",
    )

    @model_validator(mode="after")
    def _period(self) -> ReportRequest:
        if self.period_end <= self.period_start:
            raise ValueError("period_end must be after period_start")
        return self


class ReportOut(OutputModel):
    id: int
    team_id: int | None
    framework: str
    period_start: UtcDatetime
    period_end: UtcDatetime
    generated_at: UtcDatetime
    generated_by: str
    summary: dict[str, int]


class ReportDetail(ReportOut):
    assessment: FrameworkAssessment
