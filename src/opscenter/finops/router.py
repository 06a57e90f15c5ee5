"""FinOps API (seed 004): `/finops/summary`, `/breakdown`, `/credits`, `/recommendations`,
plus cost imports, budgets, and the prices that make backup storage a cost."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy.exc import IntegrityError

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep, publish_after_commit
from opscenter.core.db import release
from opscenter.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    responses,
)
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, QueryId, paginate
from opscenter.core.principal import Principal
from opscenter.finops import importer, recommend, service
from opscenter.finops.schemas import (
    BackupCostsOut,
    BreakdownOut,
    BudgetIn,
    BudgetOut,
    CreditIn,
    CreditOut,
    ImportDetail,
    ImportFormat,
    ImportOut,
    RecommendationOut,
    RefreshOut,
    StoragePriceIn,
    StoragePriceOut,
    SummaryOut,
)
from opscenter.jobs import service as jobs
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.models import CostImport
from opscenter.models.finops import ImportStatus, RecommendationStatus

router = APIRouter(prefix="/finops", tags=["FinOps"])
ReadFinops = Annotated[Principal, Depends(require("read:finops"))]
WriteFinops = Annotated[Principal, Depends(require("write:finops"))]
# A storage price is storage configuration: admins set it.
WriteStorage = Annotated[Principal, Depends(require("write:storage"))]
WindowQuery = Annotated[
    str, Query(max_length=40, description="today, week, month, lastmonth, 7d, 30d, or a,b dates")
]
IMPORT_KIND = "finops_import"
CSV_TYPES = {
    "text/csv",
    "application/csv",
    "text/plain",
    "application/octet-stream",
    "application/vnd.ms-excel",
}


def _announce(request: Request, type_: str, data: dict[str, Any], team: int | None) -> None:
    publish_after_commit(request, Event(type_, data, team_id=team))


# -- imports --------------------------------------------------------------------------------
@router.post(
    "/imports",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(InvalidInput, NotFound, Forbidden, PayloadTooLarge, UnsupportedMediaType),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def create_import(
    request: Request,
    principal: WriteFinops,
    session: SessionDep,
    ctx: Ctx,
    format: Annotated[
        ImportFormat | None, Query(description="focus, aws_cur or generic; default: detected")
    ] = None,
    filename: Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00-\x1f/\\]+$")] = None,
    team_id: QueryId = None,
) -> Accepted:
    """Import a cost CSV (the raw file as the body). The upload is checked (size,
    encoding, header) at once; the rows are imported by a job. The same file twice is
    imported once: the second upload answers with the first import."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in CSV_TYPES:
        raise UnsupportedMediaType("Send the CSV file as the body with Content-Type: text/csv")
    team = service.team_for(principal, team_id)
    await release(session)  # the upload may take long: hold no lock while it arrives
    upload = await importer.receive(request.stream(), ctx.settings.data_dir)
    try:
        fmt, _ = await asyncio.to_thread(importer.check_header, upload.path, format)
        existing = await service.find_import(session, team, upload.sha256)
        if existing is not None and existing.status != ImportStatus.FAILED:
            importer.remove(upload.path)
            return accepted(
                request,
                existing.job_id or 0,
                existing.id,
                f"This file was already imported (import {existing.id}); nothing was added",
                status=existing.status,
                status_url=f"/api/v1/finops/imports/{existing.id}",
                submit=False,
            )
        imp = existing or CostImport(team_id=team, sha256=upload.sha256)
        imp.filename = filename or "upload.csv"
        imp.format, imp.size_bytes, imp.status = fmt.name, upload.size, ImportStatus.QUEUED
        imp.created_by, imp.error, imp.rejected = principal.user_id or None, None, []
        imp.rows_total = imp.rows_imported = imp.rows_rejected = 0
        session.add(imp)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict("The same file is being imported right now") from None
        job = await jobs.create_job(
            session,
            principal,
            kind=IMPORT_KIND,
            team_id=team,
            lock_key=f"finops-import:{imp.id}",
            resource_type="cost_import",
            resource_id=imp.id,
            params={"import_id": imp.id, "path": str(upload.path)},
        )
        imp.job_id = job.id
        await audit.record(
            session,
            action="finops.import",
            actor=principal,
            resource_type="cost_import",
            resource_id=imp.id,
            details={"format": fmt.name, "sha256": upload.sha256, "size_bytes": upload.size},
            origin=origin_of(request),
            team_id=team,
        )
    except BaseException:
        importer.remove(upload.path)
        raise
    _announce(request, "finops.import_queued", {"import_id": imp.id, "status": "queued"}, team)
    return accepted(
        request,
        job.id,
        imp.id,
        f"Importing {fmt.label} file",
        status=ImportStatus.QUEUED,
        status_url=f"/api/v1/finops/imports/{imp.id}",
    )


@router.get("/imports", response_model=Page[ImportOut])
async def list_imports(
    principal: ReadFinops, session: SessionDep, paging: Paging
) -> Page[ImportOut]:
    rows, total = await paginate(session, service.imports_query(principal), paging)
    return Page.of([service.import_out(i) for i in rows], total, paging)


@router.get("/imports/{import_id}", response_model=ImportDetail, responses=responses(NotFound))
async def get_import(import_id: PathId, principal: ReadFinops, session: SessionDep) -> ImportDetail:
    """An import with its report: rows imported, and rejected rows (line, column, reason)."""
    return service.import_detail(await service.get_import(session, principal, import_id))


@router.delete(
    "/imports/{import_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Conflict),
)
async def delete_import(
    import_id: PathId, principal: WriteFinops, session: SessionDep, request: Request
) -> None:
    """Remove an import and every cost line it brought (a wrong file, a corrected bill)."""
    imp = await service.delete_import(session, principal, import_id)
    await audit.record(
        session,
        action="finops.import_delete",
        actor=principal,
        resource_type="cost_import",
        resource_id=imp.id,
        details={"sha256": imp.sha256, "rows_imported": imp.rows_imported},
        origin=origin_of(request),
        team_id=imp.team_id,
    )
    _announce(request, "finops.import_deleted", {"import_id": imp.id}, imp.team_id)


# -- figures --------------------------------------------------------------------------------
@router.get("/summary", response_model=SummaryOut, responses=responses(InvalidInput))
async def summary(
    principal: ReadFinops,
    session: SessionDep,
    window: WindowQuery = "30d",
    step: Annotated[str | None, Query(max_length=10, description="1d, 7d, ...")] = None,
) -> SummaryOut:
    """Totals per currency for the window, the change against the window before it, and
    the month's forecast (month-to-date spend run on to the month's end)."""
    span = service.parse_window(window, service.today())
    return await service.summary(session, principal, span, service.parse_step(step, span))


@router.get("/breakdown", response_model=BreakdownOut, responses=responses(InvalidInput))
async def breakdown(
    principal: ReadFinops,
    session: SessionDep,
    window: WindowQuery = "30d",
    aggregate: Annotated[
        str,
        Query(
            max_length=140,
            description="service, team, environment, provider, region, category or tag:<key>",
        ),
    ] = "service",
) -> BreakdownOut:
    span = service.parse_window(window, service.today())
    return await service.breakdown(session, principal, span, service.parse_aggregate(aggregate))


@router.get("/backup-costs", response_model=BackupCostsOut, responses=responses(InvalidInput))
async def backup_costs(
    principal: ReadFinops, session: SessionDep, window: WindowQuery = "month"
) -> BackupCostsOut:
    """What this platform's backups cost: stored bytes over time times the price per
    GB-month of their storage, per provider, per database target and per schedule."""
    return await service.backup_costs(
        session, principal, service.parse_window(window, service.today())
    )


@router.get("/storage-prices", response_model=Page[StoragePriceOut])
async def list_prices(principal: ReadFinops, session: SessionDep) -> Page[StoragePriceOut]:
    return Page.whole(await service.list_prices(session, principal))


@router.put(
    "/storage-prices/{storage_id}",
    response_model=StoragePriceOut,
    responses=responses(NotFound, Forbidden),
)
async def set_price(
    storage_id: PathId,
    body: StoragePriceIn,
    principal: WriteStorage,
    session: SessionDep,
    request: Request,
) -> StoragePriceOut:
    out = await service.set_price(session, principal, storage_id, body)
    await audit.record(
        session,
        action="finops.storage_price",
        actor=principal,
        resource_type="storage",
        resource_id=storage_id,
        details={"price_per_gb_month": str(body.price_per_gb_month), "currency": body.currency},
        origin=origin_of(request),
        team_id=out.team_id,
    )
    _announce(request, "finops.price_set", {"storage_id": storage_id}, out.team_id)
    return out


# -- credits --------------------------------------------------------------------------------
@router.get("/credits", response_model=Page[CreditOut])
async def list_credits(
    principal: ReadFinops, session: SessionDep, paging: Paging
) -> Page[CreditOut]:
    """Credits with amount, applied (as negative lines against their provider's spending),
    remaining and expiry."""
    rows, total = await paginate(session, service.credits_query(principal), paging)
    uses = await service.credit_uses(session, principal, rows)
    return Page.of([service.credit_out(u) for u in uses], total, paging)


@router.post(
    "/credits",
    response_model=CreditOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput, NotFound),
)
async def create_credit(
    body: CreditIn, principal: WriteFinops, session: SessionDep, request: Request
) -> CreditOut:
    credit = await service.create_credit(session, principal, body)
    await audit.record(
        session,
        action="finops.credit_create",
        actor=principal,
        resource_type="cost_credit",
        resource_id=credit.id,
        details={"name": credit.name, "amount": str(body.amount), "currency": credit.currency},
        origin=origin_of(request),
        team_id=credit.team_id,
    )
    _announce(request, "finops.credit_created", {"credit_id": credit.id}, credit.team_id)
    [use] = await service.credit_uses(session, principal, [credit])
    return service.credit_out(use)


@router.delete(
    "/credits/{credit_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound)
)
async def delete_credit(
    credit_id: PathId, principal: WriteFinops, session: SessionDep, request: Request
) -> None:
    credit = await service.get_credit(session, principal, credit_id)
    await session.delete(credit)
    await audit.record(
        session,
        action="finops.credit_delete",
        actor=principal,
        resource_type="cost_credit",
        resource_id=credit_id,
        details={"name": credit.name},
        origin=origin_of(request),
        team_id=credit.team_id,
    )
    _announce(request, "finops.credit_deleted", {"credit_id": credit_id}, credit.team_id)


# -- budgets --------------------------------------------------------------------------------
@router.get("/budgets", response_model=Page[BudgetOut])
async def list_budgets(
    principal: ReadFinops, session: SessionDep, paging: Paging
) -> Page[BudgetOut]:
    """Budgets with this month's spending, forecast and state (ok, warning, exceeded)."""
    rows, total = await paginate(session, service.budgets_query(principal), paging)
    return Page.of(await service.budget_states(session, principal, rows), total, paging)


@router.post(
    "/budgets",
    response_model=BudgetOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput, NotFound, Conflict),
)
async def create_budget(
    body: BudgetIn, principal: WriteFinops, session: SessionDep, request: Request
) -> BudgetOut:
    budget = await service.create_budget(session, principal, body)
    await audit.record(
        session,
        action="finops.budget_create",
        actor=principal,
        resource_type="budget",
        resource_id=budget.id,
        details={"name": budget.name, "amount": str(body.amount), "currency": budget.currency},
        origin=origin_of(request),
        team_id=budget.team_id,
    )
    _announce(request, "finops.budget_created", {"budget_id": budget.id}, budget.team_id)
    return await service.budget_state(session, principal, budget)


@router.get("/budgets/{budget_id}", response_model=BudgetOut, responses=responses(NotFound))
async def get_budget(budget_id: PathId, principal: ReadFinops, session: SessionDep) -> BudgetOut:
    budget = await service.get_budget(session, principal, budget_id)
    return await service.budget_state(session, principal, budget)


@router.delete(
    "/budgets/{budget_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound)
)
async def delete_budget(
    budget_id: PathId, principal: WriteFinops, session: SessionDep, request: Request
) -> None:
    budget = await service.get_budget(session, principal, budget_id)
    await session.delete(budget)
    await audit.record(
        session,
        action="finops.budget_delete",
        actor=principal,
        resource_type="budget",
        resource_id=budget_id,
        details={"name": budget.name},
        origin=origin_of(request),
        team_id=budget.team_id,
    )
    _announce(request, "finops.budget_deleted", {"budget_id": budget_id}, budget.team_id)


@router.post("/budgets/evaluate", response_model=Page[BudgetOut])
async def evaluate_budgets(
    principal: WriteFinops, session: SessionDep, request: Request
) -> Page[BudgetOut]:
    """Check the budgets now: thresholds newly crossed and spending above its trailing
    level raise `finops.budget_threshold` and `finops.anomaly` (each once)."""
    raised = await service.evaluate_budgets(session, principal)
    await audit.record(
        session,
        action="finops.budget_evaluate",
        actor=principal,
        resource_type="budget",
        details={"events": [t for t, _, _ in raised]},
        origin=origin_of(request),
    )
    for type_, data, team in raised:
        _announce(request, type_, data, team)
    budgets = (await session.scalars(service.budgets_query(principal))).all()
    return Page.whole(await service.budget_states(session, principal, budgets))


# -- recommendations ------------------------------------------------------------------------
@router.get("/recommendations", response_model=Page[RecommendationOut])
async def list_recommendations(
    principal: ReadFinops,
    session: SessionDep,
    paging: Paging,
    status_filter: Annotated[
        Literal["open", "dismissed", "applied"] | None, Query(alias="status")
    ] = None,
    rule: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[RecommendationOut]:
    """Findings of the typed rules, largest estimated monthly saving first."""
    stmt = recommend.recommendations_query(principal, status_filter, rule)
    rows, total = await paginate(session, stmt, paging)
    return Page.of([recommend.recommendation_out(r) for r in rows], total, paging)


@router.post("/recommendations/refresh", response_model=RefreshOut)
async def refresh_recommendations(
    principal: WriteFinops, session: SessionDep, request: Request
) -> RefreshOut:
    """Run every rule now (the server also does so every hour)."""
    out = await recommend.refresh(session, principal)
    await audit.record(
        session,
        action="finops.recommendations_refresh",
        actor=principal,
        resource_type="recommendation",
        details={"created": out.created, "resolved": out.resolved},
        origin=origin_of(request),
    )
    # Each of the caller's teams hears of it; an admin in no team, everyone it may see.
    teams: list[int | None] = [*sorted(principal.team_ids)] or [None]
    for team in teams:
        _announce(request, "finops.recommendations_refreshed", out.model_dump(), team)
    return out


async def _set_status(
    rec_id: int,
    new: RecommendationStatus,
    principal: Principal,
    session: SessionDep,
    request: Request,
) -> RecommendationOut:
    rec = await recommend.set_status(session, principal, rec_id, new)
    await audit.record(
        session,
        action=f"finops.recommendation_{new}",
        actor=principal,
        resource_type="recommendation",
        resource_id=rec.id,
        details=recommend.details(rec),
        origin=origin_of(request),
        team_id=rec.team_id,
    )
    _announce(
        request,
        "finops.recommendation_updated",
        {"recommendation_id": rec.id, "status": rec.status},
        rec.team_id,
    )
    return recommend.recommendation_out(rec)


@router.post(
    "/recommendations/{rec_id}/dismiss",
    response_model=RecommendationOut,
    responses=responses(NotFound),
)
async def dismiss(
    rec_id: PathId, principal: WriteFinops, session: SessionDep, request: Request
) -> RecommendationOut:
    return await _set_status(rec_id, RecommendationStatus.DISMISSED, principal, session, request)


@router.post(
    "/recommendations/{rec_id}/apply",
    response_model=RecommendationOut,
    responses=responses(NotFound),
)
async def apply(
    rec_id: PathId, principal: WriteFinops, session: SessionDep, request: Request
) -> RecommendationOut:
    """Mark it applied (the change itself is made where the link points)."""
    return await _set_status(rec_id, RecommendationStatus.APPLIED, principal, session, request)


@router.post(
    "/recommendations/{rec_id}/reopen",
    response_model=RecommendationOut,
    responses=responses(NotFound),
)
async def reopen(
    rec_id: PathId, principal: WriteFinops, session: SessionDep, request: Request
) -> RecommendationOut:
    return await _set_status(rec_id, RecommendationStatus.OPEN, principal, session, request)
