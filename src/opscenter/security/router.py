"""Security API: seed 002's `/security` (imports, vulnerabilities, metrics) and seed 004's
`/secops` (assets, vulnerabilities), two views over one store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.clock import isoformat_z, utcnow
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
from opscenter.core.schemas import Id
from opscenter.jobs import service as jobs
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.models.security import Finding, FindingStatus, SecurityAsset, Severity
from opscenter.security import import_job, service
from opscenter.security.importers import ReportProblem
from opscenter.security.importers.formats import REPORTS, Scanner, read, sniff
from opscenter.security.scan_schemas import ScanSource
from opscenter.security.schemas import (
    AcceptanceIn,
    AssetIn,
    AssetOut,
    AssetUpdate,
    FindingOut,
    ImportOut,
    MetricsOut,
    SlaOut,
)
from opscenter.security.upload import Upload, receive, remove

security_router = APIRouter(prefix="/security", tags=["Security"])
secops_router = APIRouter(prefix="/secops", tags=["Security"])
ReadSecurity = Annotated[Principal, Depends(require("read:security"))]
WriteSecurity = Annotated[Principal, Depends(require("write:security"))]


class InvalidReport(InvalidInput):
    code = "INVALID_SECURITY_REPORT"


def _announce(request: Request, action: str, data: dict[str, Any], team: int | None) -> None:
    publish_after_commit(request, Event(f"security.{action}", data, team_id=team))


# -- imports --------------------------------------------------------------------------------
@security_router.post(
    "/imports",
    response_model=ImportOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        202: {"model": Accepted, "description": "A large report, imported by the job"},
        **responses(InvalidReport, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "asset_id": {"type": "integer"},
                            "server_id": {"type": "integer"},
                            "scanner": {"type": "string", "enum": [s.value for s in REPORTS]},
                        },
                    }
                }
            },
        }
    },
)
async def create_import(
    request: Request, principal: WriteSecurity, session: SessionDep, ctx: Ctx
) -> ImportOut | JSONResponse:
    """Import a scanner report (SARIF 2.1.0, Trivy, Grype or OSV JSON) for one asset
    (`asset_id`, or `server_id` for a registered server). `scanner` names the format, or
    it is detected. Findings are deduplicated by fingerprint; the asset's findings from
    the same scanner that the report no longer lists are closed, and those that come back
    reopen. A report that is not what it claims is refused whole (422, the first problem).
    A report over `OPSCENTER_SECURITY_IMPORT_SYNC_BYTES` is checked from its start (422
    when it is plainly not a report) and imported by a job: 202 with the job to follow."""
    await release(session)  # the upload may take long: hold no lock while it arrives
    spool = ctx.settings.data_dir / "tmp"
    upload = await receive(
        request.stream(),
        request.headers.get("content-type", ""),
        spool,
        ctx.settings.security_import_max_bytes,
    )
    try:
        asset_id, server_id, scanner = _target(upload.fields)
        assert upload.path is not None
        large = upload.size > ctx.settings.security_import_sync_bytes
        try:
            if large:
                await asyncio.to_thread(sniff, upload.path, scanner)
            else:
                found, parsed = await asyncio.to_thread(read, upload.path, scanner)
        except ReportProblem as problem:
            raise InvalidReport(f"The report is not valid: {problem}") from None
        finally:
            if not large:
                remove(upload.path)
        if asset_id is not None:
            asset = await service.get_asset(session, principal, asset_id)
        else:
            assert server_id is not None
            asset = await service.asset_of_server(session, principal, server_id)
        if large:
            return await _queue(request, session, principal, asset, upload, scanner, spool)
        imp = await service.import_findings(
            session,
            principal,
            asset,
            found,
            parsed,
            service.ReportFile(upload.filename, upload.sha256, upload.size),
            utcnow(),
            {str(k): v for k, v in ctx.settings.security_sla_days.items()},
        )
    finally:
        remove(upload.path)
    out = service.import_out(imp)
    await audit.record(
        session,
        action="security.import",
        actor=principal,
        resource_type="security_import",
        resource_id=imp.id,
        details=out.model_dump(
            mode="json", include={"asset_id", "scanner", "sha256", "new", "closed"}
        ),
        origin=origin_of(request),
        team_id=imp.team_id,
    )
    _announce(request, "imported", out.model_dump(mode="json", exclude={"sha256"}), imp.team_id)
    return out


async def _queue(
    request: Request,
    session: SessionDep,
    principal: Principal,
    asset: SecurityAsset,
    upload: Upload,
    scanner: Scanner | None,
    spool: Path,
) -> JSONResponse:
    path = import_job.keep(upload, spool)
    try:
        job = await jobs.create_job(
            session,
            principal,
            kind=import_job.IMPORT_KIND,
            team_id=asset.team_id,
            lock_key=None,
            resource_type="security_asset",
            resource_id=asset.id,
            params=import_job.params(asset, path, scanner, upload, principal.user_id or None),
        )
        await audit.record(
            session,
            action="security.import_queued",
            actor=principal,
            resource_type="security_asset",
            resource_id=asset.id,
            details={"job_id": job.id, "sha256": upload.sha256, "size_bytes": upload.size},
            origin=origin_of(request),
            team_id=asset.team_id,
        )
    except BaseException:
        remove(path)
        raise
    answer = accepted(request, job.id, job.id, f"Importing {upload.filename} ({upload.size} bytes)")
    return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


def _target(fields: dict[str, str]) -> tuple[int | None, int | None, Scanner | None]:
    unknown = set(fields) - {"asset_id", "server_id", "scanner"}
    if unknown:
        raise InvalidInput(f"Unknown form field: {sorted(unknown)[0]}")
    ids: dict[str, int | None] = {}
    for name in ("asset_id", "server_id"):
        raw = fields.get(name, "").strip()
        try:
            ids[name] = _id(raw) if raw else None
        except ValidationError:
            raise InvalidInput(f"{name} must be a positive integer id") from None
    if (ids["asset_id"] is None) == (ids["server_id"] is None):
        raise InvalidInput("Give exactly one of asset_id and server_id")
    raw_scanner = fields.get("scanner", "").strip()
    if raw_scanner and raw_scanner not in REPORTS:
        raise InvalidInput(f"scanner must be one of {', '.join(REPORTS)} (or left out)")
    return ids["asset_id"], ids["server_id"], Scanner(raw_scanner) if raw_scanner else None


_ID = TypeAdapter(Id)


def _id(raw: str) -> int:
    return _ID.validate_python(int(raw) if raw.isdigit() else raw)


@security_router.get("/imports", response_model=Page[ImportOut])
async def list_imports(
    principal: ReadSecurity, session: SessionDep, paging: Paging
) -> Page[ImportOut]:
    rows, total = await paginate(session, service.imports_query(principal), paging)
    return Page.of([service.import_out(i) for i in rows], total, paging)


# -- findings (both views) ------------------------------------------------------------------
async def filters(
    severity: Severity | None = None,
    status_filter: Annotated[FindingStatus | None, Query(alias="status")] = None,
    asset_id: QueryId = None,
    team_id: QueryId = None,
    overdue: bool | None = None,
    scanner: Scanner | ScanSource | None = None,
) -> service.Filters:
    return service.Filters(severity, status_filter, asset_id, team_id, overdue, scanner)


FiltersDep = Annotated[service.Filters, Depends(filters)]


async def list_findings(
    principal: ReadSecurity, session: SessionDep, paging: Paging, chosen: FiltersDep
) -> Page[FindingOut]:
    """Findings, most severe and soonest due first; `overdue=true` is open past its due date."""
    now = utcnow()
    rows, total = await paginate(session, service.findings_query(principal, chosen, now), paging)
    return Page.of(await service.finding_outputs(session, rows, now), total, paging)


async def get_finding(
    finding_id: PathId, principal: ReadSecurity, session: SessionDep
) -> FindingOut:
    finding = await service.get_finding(session, principal, finding_id)
    [out] = await service.finding_outputs(session, [finding], utcnow())
    return out


for view in (security_router, secops_router):
    view.get("/vulnerabilities", response_model=Page[FindingOut])(list_findings)
    view.get(
        "/vulnerabilities/{finding_id}", response_model=FindingOut, responses=responses(NotFound)
    )(get_finding)


@security_router.post(
    "/vulnerabilities/{finding_id}/risk-acceptance",
    response_model=FindingOut,
    responses=responses(InvalidInput, NotFound, Conflict),
)
async def request_acceptance(
    finding_id: PathId,
    body: AcceptanceIn,
    principal: WriteSecurity,
    session: SessionDep,
    request: Request,
) -> FindingOut:
    """Ask for the finding's risk to be accepted until `expires_at` (at most 366 days);
    it takes effect when someone else approves it."""
    now = utcnow()
    finding = await service.request_acceptance(
        session, principal, finding_id, body.reason, body.expires_at, now
    )
    await audit.record(
        session,
        action="security.acceptance_request",
        actor=principal,
        resource_type="finding",
        resource_id=finding.id,
        details={"reason": body.reason, "expires_at": body.expires_at.isoformat()},
        origin=origin_of(request),
        team_id=finding.team_id,
    )
    _announce(request, "acceptance_requested", {"finding_id": finding.id}, finding.team_id)
    [out] = await service.finding_outputs(session, [finding], now)
    return out


@security_router.post(
    "/vulnerabilities/{finding_id}/risk-acceptance/approve",
    response_model=FindingOut,
    responses=responses(NotFound, Conflict, Forbidden),
)
async def approve_acceptance(
    finding_id: PathId, principal: WriteSecurity, session: SessionDep, request: Request
) -> FindingOut:
    """Approve a waiting acceptance (not one's own): the finding is `risk_accepted` and its
    SLA clock stops until the acceptance expires."""
    now = utcnow()
    finding = await service.approve_acceptance(session, principal, finding_id, now)
    await audit.record(
        session,
        action="security.acceptance_approve",
        actor=principal,
        resource_type="finding",
        resource_id=finding.id,
        details={"expires_at": _expiry(finding)},
        origin=origin_of(request),
        team_id=finding.team_id,
    )
    _announce(
        request,
        "risk_accepted",
        {"finding_id": finding.id, "expires_at": _expiry(finding)},
        finding.team_id,
    )
    [out] = await service.finding_outputs(session, [finding], now)
    return out


def _expiry(finding: Finding) -> str | None:
    expires = finding.acceptance_expires_at
    return isoformat_z(expires) if expires else None


@security_router.get("/metrics", response_model=MetricsOut)
async def get_metrics(
    principal: ReadSecurity, session: SessionDep, team_id: QueryId = None
) -> MetricsOut:
    """Open findings by severity, overdue and accepted counts, mean time to remediate and
    SLA compliance over the last 12 weeks, and a weekly trend."""
    return await service.metrics(session, principal, utcnow(), team_id)


@security_router.get("/sla", response_model=SlaOut)
async def get_sla(principal: ReadSecurity, ctx: Ctx) -> SlaOut:
    """Days to fix per severity (`OPSCENTER_SECURITY_SLA_DAYS`)."""
    return SlaOut(days_to_fix={str(k): v for k, v in ctx.settings.security_sla_days.items()})


# -- assets ---------------------------------------------------------------------------------
async def _audit_asset(
    session: SessionDep,
    request: Request,
    principal: Principal,
    asset: SecurityAsset,
    verb: str,
    details: dict[str, Any],
) -> None:
    await audit.record(
        session,
        action=f"security.asset_{verb}",
        actor=principal,
        resource_type="security_asset",
        resource_id=asset.id,
        details=details,
        origin=origin_of(request),
        team_id=asset.team_id,
    )


@secops_router.get("/assets", response_model=Page[AssetOut])
async def list_assets(
    principal: ReadSecurity, session: SessionDep, paging: Paging, team_id: QueryId = None
) -> Page[AssetOut]:
    """Own assets and every registered server (an asset by itself), by name."""
    items, total = await service.asset_page(
        session, service.assets_query(principal, team_id), paging.limit, paging.offset
    )
    return Page.of(items, total, paging)


@secops_router.post(
    "/assets",
    response_model=AssetOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput, NotFound, Conflict),
)
async def create_asset(
    body: AssetIn, principal: WriteSecurity, session: SessionDep, request: Request
) -> AssetOut:
    asset = await service.create_asset(session, principal, body)
    await _audit_asset(session, request, principal, asset, "create", {"name": asset.name})
    _announce(request, "asset_created", {"asset_id": asset.id}, asset.team_id)
    return await service.asset_output(session, asset)


@secops_router.get("/assets/{asset_id}", response_model=AssetOut, responses=responses(NotFound))
async def get_asset(asset_id: PathId, principal: ReadSecurity, session: SessionDep) -> AssetOut:
    return await service.asset_output(
        session, await service.get_asset(session, principal, asset_id)
    )


@secops_router.put(
    "/assets/{asset_id}",
    response_model=AssetOut,
    responses=responses(InvalidInput, NotFound, Conflict),
)
async def update_asset(
    asset_id: PathId,
    body: AssetUpdate,
    principal: WriteSecurity,
    session: SessionDep,
    request: Request,
) -> AssetOut:
    """Change an asset; of a server's asset only `criticality` (the rest is the server's)."""
    asset, changed = await service.update_asset(session, principal, asset_id, body)
    await _audit_asset(session, request, principal, asset, "update", {"changed": changed})
    _announce(request, "asset_updated", {"asset_id": asset.id}, asset.team_id)
    return await service.asset_output(session, asset)


@secops_router.delete(
    "/assets/{asset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Conflict),
)
async def delete_asset(
    asset_id: PathId, principal: WriteSecurity, session: SessionDep, request: Request
) -> None:
    """Delete an asset with its findings and imports."""
    asset = await service.delete_asset(session, principal, asset_id)
    await _audit_asset(session, request, principal, asset, "delete", {"name": asset.name})
    _announce(request, "asset_deleted", {"asset_id": asset_id}, asset.team_id)
