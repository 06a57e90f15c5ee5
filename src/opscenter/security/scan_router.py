"""Security policies, scans and the surface allow-list: `/security/policies`,
`/security/scan(s)`, `/security/surface-allowlist`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.auth.permissions import SCAN_SECURITY
from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.core.scoping import get_readable
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.models.security_scan import SecurityScan
from opscenter.security import policies, scan
from opscenter.security.scan_schemas import (
    AllowListIn,
    AllowListOut,
    PolicyIn,
    PolicyOut,
    PolicyUpdate,
    ScanIn,
    ScanOut,
)

router = APIRouter(prefix="/security", tags=["Security"])
ReadSecurity = Annotated[Principal, Depends(require("read:security"))]
ScanSecurity = Annotated[Principal, Depends(require(SCAN_SECURITY))]


async def _audit(
    session: SessionDep,
    request: Request,
    principal: Principal,
    action: str,
    kind: str,
    ident: int | None,
    details: dict[str, Any],
    team_id: int | None = None,
) -> None:
    await audit.record(
        session,
        action=f"security.{action}",
        actor=principal,
        resource_type=kind,
        resource_id=ident,
        details=details,
        origin=origin_of(request),
        team_id=team_id,
    )


# -- policies -------------------------------------------------------------------------------
@router.get("/policies", response_model=Page[PolicyOut])
async def list_policies(principal: ReadSecurity, session: SessionDep) -> Page[PolicyOut]:
    """Every posture and surface policy: its check, parameters, severity, compliance
    references (SOC 2, ISO 27001:2022, NIST CSF 2.0) and ATT&CK techniques."""
    rows = await policies.list_policies(session)
    return Page.whole(policies.policy_out(p) for p in rows)


@router.get("/policies/{policy_id}", response_model=PolicyOut, responses=responses(NotFound))
async def get_policy(policy_id: PathId, principal: ReadSecurity, session: SessionDep) -> PolicyOut:
    return policies.policy_out(await policies.get_policy(session, policy_id))


@router.post(
    "/policies",
    response_model=PolicyOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput, Conflict),
)
async def create_policy(
    body: PolicyIn, principal: ScanSecurity, session: SessionDep, request: Request
) -> PolicyOut:
    """A custom policy: one of the check types with its own parameters and severity."""
    policy = await policies.create_policy(session, body)
    await _audit(
        session, request, principal, "policy_create", "security_policy", policy.id,
        {"key": policy.key, "check": policy.check, "parameters": policy.parameters},
    )  # fmt: skip
    publish_after_commit(request, Event("security.policy_created", {"policy_id": policy.id}))
    return policies.policy_out(policy)


@router.put(
    "/policies/{policy_id}",
    response_model=PolicyOut,
    responses=responses(InvalidInput, NotFound),
)
async def update_policy(
    policy_id: PathId,
    body: PolicyUpdate,
    principal: ScanSecurity,
    session: SessionDep,
    request: Request,
) -> PolicyOut:
    """Enable or disable, change severity, parameters (the ones given), references."""
    policy, changed = await policies.update_policy(session, policy_id, body)
    await _audit(
        session, request, principal, "policy_update", "security_policy", policy.id,
        {"changed": changed, "enabled": policy.enabled, "parameters": policy.parameters},
    )  # fmt: skip
    publish_after_commit(request, Event("security.policy_updated", {"policy_id": policy.id}))
    return policies.policy_out(policy)


# -- scans ----------------------------------------------------------------------------------
@router.post(
    "/scan",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(InvalidInput, NotFound, Conflict),
)
async def start_scan(
    principal: ScanSecurity,
    session: SessionDep,
    request: Request,
    body: Annotated[ScanIn | None, Body()] = None,
) -> Accepted:
    """Run the enabled policies as a job: posture (this installation) and/or surface (the
    assets at addresses on the allow-list). Failures become findings (scanner `posture`
    or `surface`) that close when a later scan finds them fixed. Without a body: both
    scopes, every asset, the caller's only team."""
    row, job = await scan.start(session, principal, body or ScanIn(), utcnow())
    await _audit(
        session, request, principal, "scan", "security_scan", row.id,
        {"scope": row.scope, "asset_ids": row.asset_ids}, row.team_id,
    )  # fmt: skip
    publish_after_commit(
        request, Event("security.scan_queued", {"scan_id": row.id}, team_id=row.team_id)
    )
    return accepted(
        request,
        job.id,
        row.id,
        f"Scanning ({row.scope})",
        status=row.status,
        status_url=f"/api/v1/security/scans/{row.id}",
    )


@router.get("/scans", response_model=Page[ScanOut])
async def list_scans(principal: ReadSecurity, session: SessionDep, paging: Paging) -> Page[ScanOut]:
    rows, total = await paginate(session, scan.scans_query(principal), paging)
    return Page.of(await scan.scan_outputs(session, list(rows)), total, paging)


@router.get("/scans/{scan_id}", response_model=ScanOut, responses=responses(NotFound))
async def get_scan(scan_id: PathId, principal: ReadSecurity, session: SessionDep) -> ScanOut:
    row = await get_readable(session, SecurityScan, scan_id, principal, name="Scan")
    [out] = await scan.scan_outputs(session, [row])
    return out


# -- the surface allow-list -----------------------------------------------------------------
@router.get("/surface-allowlist", response_model=AllowListOut)
async def get_allow_list(principal: ReadSecurity, session: SessionDep) -> AllowListOut:
    """The address ranges (CIDR) and host names the surface scan may probe; empty: none."""
    return AllowListOut(entries=await scan.allow_list(session))


@router.put("/surface-allowlist", response_model=AllowListOut, responses=responses(InvalidInput))
async def put_allow_list(
    body: AllowListIn, principal: ScanSecurity, session: SessionDep, request: Request
) -> AllowListOut:
    """Replace the list."""
    added, removed = await scan.set_allow_list(session, principal, body.entries, utcnow())
    await _audit(
        session, request, principal, "surface_allowlist", "security_surface_allow", None,
        {"added": added, "removed": removed},
    )  # fmt: skip
    return AllowListOut(entries=await scan.allow_list(session))
