"""Retention policies (seed 001): CRUD and a dry-run preview. Policies are applied by the
scheduler (after every successful backup of a schedule, and once a day)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import SessionDep
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.retention import service
from opscenter.retention.schemas import (
    RULES,
    RetentionPolicyCreate,
    RetentionPolicyOut,
    RetentionPolicyUpdate,
    RetentionPreview,
    RetentionScope,
)

router = APIRouter(prefix="/retention-policies", tags=["Retention policies"])
ReadRetention = Annotated[Principal, Depends(require("read:retention"))]
WriteRetention = Annotated[Principal, Depends(require("write:retention"))]


def _rules(out: RetentionPolicyOut) -> dict[str, object]:
    return {"name": out.name, "min_keep": out.min_keep, **{r: getattr(out, r) for r in RULES}}


@router.get("", response_model=Page[RetentionPolicyOut])
async def list_policies(
    principal: ReadRetention, session: SessionDep, paging: Paging
) -> Page[RetentionPolicyOut]:
    rows, total = await paginate(session, service.policies_query(principal), paging)
    users = await service.users_of(session, [p.id for p in rows])
    return Page.of([service.policy_out(p, users[p.id]) for p in rows], total, paging)


@router.post(
    "",
    response_model=RetentionPolicyOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def create_policy(
    body: RetentionPolicyCreate, principal: WriteRetention, session: SessionDep, request: Request
) -> RetentionPolicyOut:
    out = service.policy_out(await service.create_policy(session, principal, body), [])
    await audit.record(
        session,
        action="retention_policy.create",
        actor=principal,
        resource_type="retention_policy",
        resource_id=out.id,
        details=_rules(out),
        origin=origin_of(request),
    )
    return out


@router.get("/{policy_id}", response_model=RetentionPolicyOut, responses=responses(NotFound))
async def get_policy(
    policy_id: PathId, principal: ReadRetention, session: SessionDep
) -> RetentionPolicyOut:
    policy = await service.get_policy(session, principal, policy_id)
    return service.policy_out(policy, (await service.users_of(session, [policy.id]))[policy.id])


@router.put(
    "/{policy_id}",
    response_model=RetentionPolicyOut,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def update_policy(
    policy_id: PathId,
    body: RetentionPolicyUpdate,
    principal: WriteRetention,
    session: SessionDep,
    request: Request,
) -> RetentionPolicyOut:
    """Takes effect at the next application (after a backup, or the daily pass)."""
    policy, changed = await service.update_policy(session, principal, policy_id, body)
    out = service.policy_out(policy, (await service.users_of(session, [policy.id]))[policy.id])
    await audit.record(
        session,
        action="retention_policy.update",
        actor=principal,
        resource_type="retention_policy",
        resource_id=out.id,
        details={**_rules(out), "changed": changed},
        origin=origin_of(request),
    )
    return out


@router.delete(
    "/{policy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Conflict),
)
async def delete_policy(
    policy_id: PathId, principal: WriteRetention, session: SessionDep, request: Request
) -> None:
    """409 while schedules use it."""
    policy = await service.delete_policy(session, principal, policy_id)
    await audit.record(
        session,
        action="retention_policy.delete",
        actor=principal,
        resource_type="retention_policy",
        resource_id=policy_id,
        team_id=policy.team_id,
        details={"name": policy.name},
        origin=origin_of(request),
    )


@router.post(
    "/{policy_id}/preview",
    response_model=RetentionPreview,
    responses=responses(NotFound, InvalidInput),
)
async def preview(
    policy_id: PathId, body: RetentionScope, principal: ReadRetention, session: SessionDep
) -> RetentionPreview:
    """Dry run: which backups of a schedule (or of a server + database) the policy would
    keep, and by which rules, and which it would delete. Changes nothing."""
    return await service.preview(session, principal, policy_id, body)
