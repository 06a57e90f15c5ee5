"""Admin-only management of users, teams and roles (seeds 001 and 002)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.auth.permissions import PERMISSIONS, describe
from opscenter.core.context import SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.users import service
from opscenter.users.schemas import (
    PermissionOut,
    RoleCreate,
    RoleOut,
    TeamCreate,
    TeamMembersUpdate,
    TeamOut,
    UserCreate,
    UserOut,
    UserUpdate,
)

router = APIRouter(prefix="/users", tags=["Users, teams and roles"])
ReadUsers = Annotated[Principal, Depends(require("read:users"))]
WriteUsers = Annotated[Principal, Depends(require("write:users"))]
ReadTeams = Annotated[Principal, Depends(require("read:teams"))]
WriteTeams = Annotated[Principal, Depends(require("write:teams"))]
ReadRoles = Annotated[Principal, Depends(require("read:roles"))]
WriteRoles = Annotated[Principal, Depends(require("write:roles"))]
WRITE_ERRORS = responses(Forbidden, NotFound, Conflict, InvalidInput)


# Fixed paths first, so "/teams/list" is never read as a user id.
@router.get("/teams/list", response_model=Page[TeamOut])
async def list_teams(principal: ReadTeams, session: SessionDep, paging: Paging) -> Page[TeamOut]:
    rows, total = await paginate(session, service.visible_teams(principal), paging)
    return Page.of([TeamOut.model_validate(t) for t in rows], total, paging)


@router.post(
    "/teams", response_model=TeamOut, status_code=status.HTTP_201_CREATED, responses=WRITE_ERRORS
)
async def create_team(
    body: TeamCreate, principal: WriteTeams, session: SessionDep, request: Request
) -> TeamOut:
    team = await service.create_team(session, body)
    await audit.record(
        session,
        action="team.create",
        actor=principal,
        resource_type="team",
        resource_id=team.id,
        details={"name": team.name, "member_ids": [m.id for m in team.members]},
        origin=origin_of(request),
    )
    return TeamOut.model_validate(team)


@router.put("/teams/{team_id}/members", response_model=TeamOut, responses=WRITE_ERRORS)
async def set_team_members(
    team_id: PathId,
    body: TeamMembersUpdate,
    principal: WriteTeams,
    session: SessionDep,
    request: Request,
) -> TeamOut:
    team = await service.set_team_members(session, team_id, body.member_ids)
    await audit.record(
        session,
        action="team.members_update",
        actor=principal,
        resource_type="team",
        resource_id=team.id,
        details={"member_ids": body.member_ids},
        origin=origin_of(request),
    )
    return TeamOut.model_validate(team)


@router.get("/roles/list", response_model=Page[RoleOut])
async def list_roles(_: ReadRoles, session: SessionDep) -> Page[RoleOut]:
    roles = [
        RoleOut.model_validate(r).model_copy(update={"user_count": n})
        for r, n in await service.list_roles(session)
    ]
    return Page.whole(roles)


@router.post(
    "/roles", response_model=RoleOut, status_code=status.HTTP_201_CREATED, responses=WRITE_ERRORS
)
async def create_role(
    body: RoleCreate, principal: WriteRoles, session: SessionDep, request: Request
) -> RoleOut:
    """A custom role: a named set of permissions from /users/permissions/list."""
    role = await service.create_role(session, principal, body)
    await audit.record(
        session,
        action="role.create",
        actor=principal,
        resource_type="role",
        resource_id=role.id,
        details={"name": role.name, "permissions": role.permissions},
        origin=origin_of(request),
    )
    return RoleOut.model_validate(role)


@router.get("/permissions/list", response_model=Page[PermissionOut])
async def list_permissions(_: ReadRoles) -> Page[PermissionOut]:
    items = [PermissionOut(name=p, description=describe(p)) for p in PERMISSIONS]
    return Page.whole(items)


@router.get("", response_model=Page[UserOut])
async def list_users(
    _: ReadUsers,
    session: SessionDep,
    paging: Paging,
    role: Annotated[str | None, Query(max_length=64)] = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[UserOut]:
    stmt = service.filter_users(service.users_query(), role=role, is_active=is_active, q=q)
    rows, total = await paginate(session, stmt, paging)
    return Page.of([service.user_out(u) for u in rows], total, paging)


def _announce(request: Request, action: str, user_id: int, username: str) -> None:
    """`user.<action>` on the event bus, once the request has finished."""
    publish_after_commit(
        request, Event(f"user.{action}", {"user_id": user_id, "username": username})
    )


@router.post(
    "", response_model=UserOut, status_code=status.HTTP_201_CREATED, responses=WRITE_ERRORS
)
async def create_user(
    body: UserCreate, principal: WriteUsers, session: SessionDep, request: Request
) -> UserOut:
    user = await service.create_user(session, principal, body)
    await audit.record(
        session,
        action="user.create",
        actor=principal,
        resource_type="user",
        resource_id=user.id,
        details={"username": user.username, "role": user.role.name},
        origin=origin_of(request),
    )
    _announce(request, "created", user.id, user.username)
    return service.user_out(user)


@router.get("/{user_id}", response_model=UserOut, responses=responses(NotFound))
async def get_user(user_id: PathId, _: ReadUsers, session: SessionDep) -> UserOut:
    return service.user_out(await service.get_user(session, user_id))


@router.put("/{user_id}", response_model=UserOut, responses=WRITE_ERRORS)
async def update_user(
    user_id: PathId, body: UserUpdate, principal: WriteUsers, session: SessionDep, request: Request
) -> UserOut:
    user, changed = await service.update_user(session, principal, user_id, body)
    await audit.record(
        session,
        action="user.update",
        actor=principal,
        resource_type="user",
        resource_id=user.id,
        details={"changed": changed, "role": user.role.name, "is_active": user.is_active},
        origin=origin_of(request),
    )
    _announce(request, "updated", user.id, user.username)
    return service.user_out(user)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=WRITE_ERRORS)
async def delete_user(
    user_id: PathId, principal: WriteUsers, session: SessionDep, request: Request
) -> None:
    user = await service.delete_user(session, principal, user_id)
    await audit.record(
        session,
        action="user.delete",
        actor=principal,
        resource_type="user",
        resource_id=user_id,
        details={"username": user.username},
        origin=origin_of(request),
    )
    _announce(request, "deleted", user_id, user.username)
