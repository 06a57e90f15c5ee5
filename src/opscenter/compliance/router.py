"""Compliance API under seed 002's `/audit` area (the audit domain serves the trail's views
there): `/audit/frameworks`, `/audit/controls`, `/audit/evidence`, `/audit/reports`."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.compliance import catalogue, service
from opscenter.compliance.document import assessment_document
from opscenter.compliance.schemas import (
    ControlOut,
    EvidenceIn,
    EvidenceOut,
    FrameworkAssessment,
    FrameworkOut,
    Moment,
    ReportDetail,
    ReportOut,
    ReportRequest,
)
from opscenter.core.context import Ctx, SessionDep, publish_after_commit
from opscenter.core.db import release
from opscenter.core.errors import Forbidden, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.documents import ReportDocument, to_pdf

router = APIRouter(prefix="/audit", tags=["Compliance"])
ReadCompliance = Annotated[Principal, Depends(require("read:compliance"))]
WriteCompliance = Annotated[Principal, Depends(require("write:compliance"))]
FrameworkId = Annotated[str, Query(min_length=1, max_length=32)]
ControlFilter = Annotated[str | None, Query(min_length=1, max_length=64)]


# -- catalogue ------------------------------------------------------------------------------
@router.get("/frameworks", response_model=Page[FrameworkOut])
async def list_frameworks(_: ReadCompliance) -> Page[FrameworkOut]:
    """SOC 2, ISO/IEC 27001:2022 Annex A and NIST CSF 2.0: each with its requirements and
    the controls of ours mapped to them (one control serves requirements of several)."""
    frameworks = catalogue.frameworks().values()
    return Page.whole([service.framework_out(f) for f in frameworks])


@router.get(
    "/frameworks/{framework_id}", response_model=FrameworkOut, responses=responses(NotFound)
)
async def get_framework(framework_id: str, _: ReadCompliance) -> FrameworkOut:
    return service.framework_out(service.get_framework(framework_id))


@router.get(
    "/frameworks/{framework_id}/assessment",
    response_model=FrameworkAssessment,
    responses=responses(NotFound, InvalidInput),
)
async def assess(
    framework_id: str,
    principal: ReadCompliance,
    session: SessionDep,
    start: Annotated[Moment, Query(description="The period's start (ISO 8601, UTC if no zone)")],
    end: Annotated[Moment, Query(description="The period's end")],
) -> FrameworkAssessment:
    """Each requirement's status over the period, now, with its controls and evidence
    (nothing is stored: `POST /audit/reports/generate` keeps a snapshot).

    A control is `met`, `partial`, `not_met` or `no_evidence`: the platform's own check
    judges it where it found something to judge, else uploaded evidence effective over
    the period (all of it `met`, part `partial`). A requirement is `met` when all its
    controls are, `not_met` when every judged one is, `no_evidence` when none was judged,
    `partial` otherwise, and `not_assessed` when no control is mapped to it."""
    return await service.assess_framework(session, principal, framework_id, start, end)


@router.get("/controls", response_model=Page[ControlOut])
async def list_controls(_: ReadCompliance) -> Page[ControlOut]:
    """Our controls, what satisfies each, and the requirements of every framework each
    one is mapped to."""
    return Page.whole(service.controls_out())


# -- evidence -------------------------------------------------------------------------------
@router.get("/evidence", response_model=Page[EvidenceOut])
async def list_evidence(
    principal: ReadCompliance, session: SessionDep, paging: Paging, control_id: ControlFilter = None
) -> Page[EvidenceOut]:
    rows, total = await paginate(session, service.evidence_query(principal, control_id), paging)
    return Page.of([service.evidence_out(r) for r in rows], total, paging)


@router.post(
    "/evidence",
    response_model=EvidenceOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput, NotFound),
)
async def add_evidence(
    body: EvidenceIn, principal: WriteCompliance, session: SessionDep, request: Request
) -> EvidenceOut:
    """Evidence for controls: a link to the document and/or a statement, with the period
    it is effective for (apart from when it is uploaded)."""
    row = await service.add_evidence(session, principal, body)
    await audit.record(
        session,
        action="compliance.evidence_add",
        actor=principal,
        resource_type="compliance_evidence",
        resource_id=row.id,
        team_id=row.team_id,
        details={"title": row.title, "control_ids": row.control_ids},
        origin=origin_of(request),
    )
    publish_after_commit(
        request, Event("compliance.evidence_added", {"id": row.id}, team_id=row.team_id)
    )
    return service.evidence_out(row)


@router.get("/evidence/{evidence_id}", response_model=EvidenceOut, responses=responses(NotFound))
async def get_evidence(
    evidence_id: PathId, principal: ReadCompliance, session: SessionDep
) -> EvidenceOut:
    return service.evidence_out(await service.get_evidence(session, principal, evidence_id))


@router.delete(
    "/evidence/{evidence_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Forbidden),
)
async def delete_evidence(
    evidence_id: PathId, principal: WriteCompliance, session: SessionDep, request: Request
) -> None:
    """Reports generated before keep it in their snapshots."""
    row = await service.delete_evidence(session, principal, evidence_id)
    await audit.record(
        session,
        action="compliance.evidence_delete",
        actor=principal,
        resource_type="compliance_evidence",
        resource_id=row.id,
        team_id=row.team_id,
        details={"title": row.title},
        origin=origin_of(request),
    )
    publish_after_commit(
        request, Event("compliance.evidence_deleted", {"id": row.id}, team_id=row.team_id)
    )


# -- reports --------------------------------------------------------------------------------
@router.get("/reports", response_model=Page[ReportOut])
async def list_reports(
    principal: ReadCompliance,
    session: SessionDep,
    paging: Paging,
    framework: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
) -> Page[ReportOut]:
    """Generated reports, newest first, with their summaries."""
    rows, total = await paginate(session, service.reports_query(principal, framework), paging)
    return Page.of([service.report_out(r) for r in rows], total, paging)


@router.post(
    "/reports/generate",
    response_model=ReportDetail,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput, NotFound),
)
async def generate_report(
    body: ReportRequest,
    principal: WriteCompliance,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> ReportDetail:
    """Assess a framework over a period and keep the result as an immutable snapshot.
    Runs within the request (an assessment is a few aggregate queries and a walk of the
    audit chain), so the answer is the stored report."""
    scope, team = service.report_scope(principal, body.framework, body.team_id)
    # The reads run in a read session of their own: on SQLite the request's write session
    # would hold the one write lock through the whole assessment.
    await release(session)
    async with ctx.db.read_session() as reading:
        chain = await service.verify_chain(reading)
        assessment = await service.assess_framework(
            reading, scope, body.framework, body.period_start, body.period_end, chain
        )
    row = service.store_report(session, principal, assessment, team)
    await session.flush()
    # The next assessment walks only the entries written after this one's.
    await audit.save_checkpoint(session, chain, assessment.generated_at)
    await audit.record(
        session,
        action="compliance.report_generate",
        actor=principal,
        resource_type="compliance_report",
        resource_id=row.id,
        team_id=row.team_id,
        details={"framework": row.framework, "summary": row.summary},
        origin=origin_of(request),
    )
    publish_after_commit(
        request,
        Event(
            "compliance.report_generated",
            {"id": row.id, "framework": row.framework, "summary": row.summary},
            team_id=row.team_id,
        ),
    )
    return service.report_detail(row)


@router.get("/reports/{report_id}", response_model=ReportDetail, responses=responses(NotFound))
async def get_report(
    report_id: PathId, principal: ReadCompliance, session: SessionDep
) -> ReportDetail:
    return service.report_detail(await service.get_report(session, principal, report_id))


@router.get(
    "/reports/{report_id}/download",
    responses={
        **responses(NotFound),
        200: {
            "description": "The snapshot as JSON, as CSV (a row per requirement, control "
            "and evidence item), or as PDF (each requirement's status and controls)",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ReportDetail"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
)
async def download_report(
    report_id: PathId,
    principal: ReadCompliance,
    session: SessionDep,
    format: Literal["json", "csv", "pdf"] = "json",
) -> Response:
    row = await service.get_report(session, principal, report_id)
    detail = service.report_detail(row)
    stamp = f"compliance-{row.framework}-{row.id}-{_day(row.period_start)}-{_day(row.period_end)}"
    body: str | bytes
    if format == "csv":
        body, media = service.report_csv(detail.assessment), "text/csv"
    elif format == "pdf":
        await release(session)
        # Layout takes seconds of CPU: off the event loop, so other requests go on.
        doc = assessment_document(detail.assessment, f"Report {row.id}")
        body, media = await asyncio.to_thread(_pdf, doc), "application/pdf"
    else:
        body, media = detail.model_dump_json(indent=2), "application/json"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{stamp}.{format}"'},
    )


def _pdf(doc: ReportDocument) -> bytes:
    out = io.BytesIO()
    to_pdf(doc, out)
    return out.getvalue()


def _day(at: datetime) -> str:
    return at.strftime("%Y%m%d")
