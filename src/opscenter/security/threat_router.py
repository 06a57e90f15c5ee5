"""ATT&CK coverage (`/secops/mitre/coverage`) and fuzzing results (seed 002's
`/security/fuzzing-results`): imported libFuzzer and AFL++ campaigns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.clock import utcnow
from opscenter.core.context import Ctx, SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.pagination import CursorPaging, KeysetPage, PathId, QueryId, keyset_page
from opscenter.core.principal import Principal
from opscenter.core.scoping import get_readable
from opscenter.models.fuzzing import FuzzEngine, FuzzingCampaign
from opscenter.security import attack, fuzzing, service
from opscenter.security.threat_schemas import CoverageOut, FuzzingIn, FuzzingOut

fuzzing_router = APIRouter(prefix="/security/fuzzing-results", tags=["Security"])
coverage_router = APIRouter(prefix="/secops/mitre", tags=["Security"])
ReadSecurity = Annotated[Principal, Depends(require("read:security"))]
WriteSecurity = Annotated[Principal, Depends(require("write:security"))]


@coverage_router.get("/coverage", response_model=CoverageOut)
async def get_coverage(
    principal: ReadSecurity, session: SessionDep, team_id: QueryId = None
) -> CoverageOut:
    """Per tactic, in the matrix's order: its techniques with the open findings and the
    unresolved incidents naming them (or one of their sub-techniques)."""
    return await attack.coverage(session, principal, team_id)


@fuzzing_router.post(
    "",
    response_model=FuzzingOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(fuzzing.InvalidFuzzingOutput, NotFound, Conflict),
)
async def create_campaign(
    body: FuzzingIn, principal: WriteSecurity, session: SessionDep, request: Request, ctx: Ctx
) -> FuzzingOut:
    """Import one fuzzing run of `target`: libFuzzer's stderr (`logs`, one per worker) or
    AFL++'s `fuzzer_stats` with its `crash_files`. Crashes are deduplicated by stack hash
    (crash kind and top frames, without addresses); each distinct one becomes a finding
    of the asset unless `create_findings` is false. Output that is not what the engine
    writes is refused whole (422) and nothing is kept."""
    stats = fuzzing.read_output(body)
    asset = await service.get_asset(session, principal, body.asset_id)
    campaign = await fuzzing.import_campaign(
        session,
        principal,
        asset,
        body,
        stats,
        utcnow(),
        {str(k): v for k, v in ctx.settings.security_sla_days.items()},
    )
    [out] = await fuzzing.outputs(session, [campaign])
    summary = out.model_dump(
        mode="json",
        include={"id", "asset_id", "target", "engine", "crashes_total", "crashes_unique"},
    )
    await audit.record(
        session,
        action="security.fuzzing_import",
        actor=principal,
        resource_type="fuzzing_campaign",
        resource_id=campaign.id,
        details=summary,
        origin=origin_of(request),
        team_id=campaign.team_id,
    )
    publish_after_commit(
        request, Event("security.fuzzing_imported", summary, team_id=campaign.team_id)
    )
    return out


@fuzzing_router.get("", response_model=KeysetPage[FuzzingOut], responses=responses(InvalidInput))
async def list_campaigns(
    principal: ReadSecurity,
    session: SessionDep,
    paging: CursorPaging,
    asset_id: QueryId = None,
    engine: FuzzEngine | None = None,
) -> KeysetPage[FuzzingOut]:
    """Imported campaigns, newest first: target, engine, duration, executions, coverage,
    and the crashes (unique by stack hash, and in all)."""
    stmt = fuzzing.campaigns_query(principal, asset_id, engine)
    rows, total, next_cursor = await keyset_page(session, stmt, paging, FuzzingCampaign.id)
    return KeysetPage.keyset(await fuzzing.outputs(session, rows), total, paging, next_cursor)


@fuzzing_router.get("/{campaign_id}", response_model=FuzzingOut, responses=responses(NotFound))
async def get_campaign(
    campaign_id: PathId, principal: ReadSecurity, session: SessionDep
) -> FuzzingOut:
    campaign = await get_readable(
        session, FuzzingCampaign, campaign_id, principal, name="Fuzzing campaign"
    )
    [out] = await fuzzing.outputs(session, [campaign])
    return out
