"""Users, teams and roles. Services flush; the request dependency commits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opscenter.auth.permissions import BUILTIN_ROLES, PERMISSIONS
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from opscenter.core.principal import Principal
from opscenter.core.security import hash_password
from opscenter.models import Role, Team, User
from opscenter.users.schemas import (
    RoleCreate,
    TeamCreate,
    TeamRef,
    UserCreate,
    UserOut,
    UserUpdate,
)

DEFAULT_TEAM = "default"


def user_out(user: User) -> UserOut:
    teams = [TeamRef(id=t.id, name=t.name) for t in user.teams]
    return UserOut(
        id=user.id,
        username=user.username,
        email=user.email,
        full_name=user.full_name,
        role=user.role.name,
        permissions=sorted(user.role.permissions),
        teams=teams,
        team=teams[0].name if teams else None,
        is_active=user.is_active,
        last_login=user.last_login,
        created_at=user.created_at,
        updated_at=user.updated_at,
        name=user.full_name or user.username,
        createdAt=user.created_at,
        lastLogin=user.last_login,
    )


def users_query() -> Select[User]:
    return select(User).options(selectinload(User.role), selectinload(User.teams)).order_by(User.id)


def filter_users(
    stmt: Select[User], *, role: str | None, is_active: bool | None, q: str | None
) -> Select[User]:
    if role:
        stmt = stmt.join(User.role).where(Role.name == role)
    if is_active is not None:
        stmt = stmt.where(User.is_active == is_active)
    if q:
        # autoescape: a `%` or `_` typed by the caller is a character, not a wildcard.
        stmt = stmt.where(
            or_(
                User.username.icontains(q, autoescape=True),
                User.email.icontains(q, autoescape=True),
                User.full_name.icontains(q, autoescape=True),
            )
        )
    return stmt


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await session.scalar(users_query().where(User.id == user_id))
    if user is None:
        raise NotFound("User", user_id)
    return user


async def role_by_name(session: AsyncSession, name: str) -> Role:
    role = await session.scalar(select(Role).where(Role.name == name))
    if role is None:
        raise InvalidInput(f"Unknown role '{name}'; see GET /api/v1/users/roles/list")
    return role


def ensure_grantable(actor: Principal, role: Role) -> None:
    """Nobody hands out, or takes for themselves, more than they hold."""
    missing = {p for p in role.permissions if not actor.can(p)}
    if missing:
        raise Forbidden(
            f"Role '{role.name}' has permissions you do not hold: {', '.join(sorted(missing))}"
        )


async def teams_by_ids(session: AsyncSession, ids: Sequence[int]) -> list[Team]:
    wanted = set(ids)
    teams = list((await session.scalars(select(Team).where(Team.id.in_(wanted)))).all())
    unknown = wanted - {t.id for t in teams}
    if unknown:
        raise InvalidInput(f"Unknown team ids: {sorted(unknown)}")
    return teams


async def _ensure_unique(
    session: AsyncSession, *, username: str | None, email: str | None, exclude_id: int | None = None
) -> None:
    clauses = []
    if username:
        clauses.append(func.lower(User.username) == func.lower(username))
    if email:
        clauses.append(func.lower(User.email) == func.lower(email))
    if not clauses:
        return
    stmt = select(User.id).where(or_(*clauses))
    if exclude_id is not None:
        stmt = stmt.where(User.id != exclude_id)
    if await session.scalar(stmt.limit(1)) is not None:
        raise Conflict("A user with this username or email already exists")


async def create_user(session: AsyncSession, actor: Principal, data: UserCreate) -> User:
    await _ensure_unique(session, username=data.username, email=str(data.email))
    role = await role_by_name(session, data.role)
    ensure_grantable(actor, role)
    if data.team_ids is None:
        teams = list((await session.scalars(select(Team).where(Team.name == DEFAULT_TEAM))).all())
    else:
        teams = await teams_by_ids(session, data.team_ids)
    user = User(
        username=data.username,
        email=str(data.email).lower(),
        full_name=data.full_name,
        password_hash=await asyncio.to_thread(hash_password, data.password),
        role=role,
        teams=teams,
        is_active=data.is_active,
    )
    session.add(user)
    await session.flush()
    return await get_user(session, user.id)


async def _active_admins(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count(User.id))
            .join(User.role)
            .where(Role.name == "admin", User.is_active.is_(True))
        )
        or 0
    )


async def update_user(
    session: AsyncSession, actor: Principal, user_id: int, data: UserUpdate
) -> tuple[User, list[str]]:
    """Returns the user and the names of the fields that changed (for the audit trail)."""
    user = await get_user(session, user_id)
    if user.id != actor.user_id:
        # Managing an account needs every permission it holds: a user manager must not
        # reset an admin's password and take the account.
        ensure_grantable(actor, user.role)
    changed: list[str] = []
    revoke_sessions = False
    is_self = user.id == actor.user_id
    was_admin_active = user.role.name == "admin" and user.is_active

    if data.email is not None and data.email.lower() != user.email:
        await _ensure_unique(session, username=None, email=str(data.email), exclude_id=user.id)
        user.email = str(data.email).lower()
        changed.append("email")
    if data.full_name is not None and data.full_name != user.full_name:
        user.full_name = data.full_name
        changed.append("full_name")
    if data.role is not None and data.role != user.role.name:
        role = await role_by_name(session, data.role)
        ensure_grantable(actor, role)
        if is_self and not set(role.permissions) <= set(user.role.permissions):
            raise Forbidden("You cannot raise your own role")
        user.role = role
        changed.append("role")
        revoke_sessions = True
    if data.is_active is not None and data.is_active != user.is_active:
        if is_self and not data.is_active:
            raise Conflict("You cannot disable your own account")
        user.is_active = data.is_active
        changed.append("is_active")
        revoke_sessions = True
    if data.password is not None:
        user.password_hash = await asyncio.to_thread(hash_password, data.password)
        changed.append("password")
        revoke_sessions = True
    if data.team_ids is not None:
        user.teams = await teams_by_ids(session, data.team_ids)
        changed.append("teams")
    if revoke_sessions:
        user.session_version += 1
    await session.flush()
    demoted = was_admin_active and not (user.role.name == "admin" and user.is_active)
    if demoted and await _active_admins(session) == 0:
        raise Conflict("This is the last active admin; make someone else admin first")
    return await get_user(session, user.id), changed


async def delete_user(session: AsyncSession, actor: Principal, user_id: int) -> User:
    user = await get_user(session, user_id)
    if user.id == actor.user_id:
        raise Conflict("You cannot delete your own account")
    ensure_grantable(actor, user.role)
    if user.role.name == "admin" and user.is_active and await _active_admins(session) <= 1:
        raise Conflict("This is the last active admin; make someone else admin first")
    await session.delete(user)
    await session.flush()
    return user


# -- teams -------------------------------------------------------------------------------
def teams_query() -> Select[Team]:
    return select(Team).options(selectinload(Team.members)).order_by(Team.id)


def visible_teams(principal: Principal) -> Select[Team]:
    """Every team for the all-teams scope; otherwise only the caller's own, with members."""
    if principal.sees_all_teams:
        return teams_query()
    return teams_query().where(Team.id.in_(principal.team_ids))


async def get_team(session: AsyncSession, team_id: int) -> Team:
    team = await session.scalar(teams_query().where(Team.id == team_id))
    if team is None:
        raise NotFound("Team", team_id)
    return team


async def users_by_ids(session: AsyncSession, ids: Sequence[int]) -> list[User]:
    wanted = set(ids)
    users = list((await session.scalars(select(User).where(User.id.in_(wanted)))).all())
    unknown = wanted - {u.id for u in users}
    if unknown:
        raise InvalidInput(f"Unknown user ids: {sorted(unknown)}")
    return users


async def create_team(session: AsyncSession, data: TeamCreate) -> Team:
    if await session.scalar(select(Team.id).where(func.lower(Team.name) == func.lower(data.name))):
        raise Conflict(f"A team named '{data.name}' already exists")
    team = Team(
        name=data.name,
        description=data.description,
        members=await users_by_ids(session, data.member_ids),
    )
    session.add(team)
    await session.flush()
    return await get_team(session, team.id)


async def set_team_members(session: AsyncSession, team_id: int, member_ids: list[int]) -> Team:
    team = await get_team(session, team_id)
    team.members = sorted(await users_by_ids(session, member_ids), key=lambda u: u.id)
    await session.flush()
    return team


# -- roles -------------------------------------------------------------------------------
async def list_roles(session: AsyncSession) -> list[tuple[Role, int]]:
    counts = select(User.role_id, func.count(User.id).label("n")).group_by(User.role_id).subquery()
    rows = await session.execute(
        select(Role, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.role_id == Role.id)
        .order_by(Role.id)
    )
    return [(role, int(n)) for role, n in rows.all()]


async def create_role(session: AsyncSession, actor: Principal, data: RoleCreate) -> Role:
    unknown = set(data.permissions) - set(PERMISSIONS)
    if unknown:
        raise InvalidInput(
            f"Unknown permissions: {sorted(unknown)}; see GET /api/v1/users/permissions/list"
        )
    if await session.scalar(select(Role.id).where(Role.name == data.name)):
        raise Conflict(f"A role named '{data.name}' already exists")
    role = Role(
        name=data.name,
        description=data.description,
        permissions=sorted(set(data.permissions)),
        is_builtin=False,
    )
    ensure_grantable(actor, role)
    session.add(role)
    await session.flush()
    return role


async def sync_builtin_roles(session: AsyncSession) -> None:
    """Built-in roles always carry the catalogue's current permission sets."""
    existing = {r.name: r for r in (await session.scalars(select(Role))).all()}
    for name, (description, permissions) in BUILTIN_ROLES.items():
        role = existing.get(name)
        if role is None:
            session.add(
                Role(name=name, description=description, permissions=permissions, is_builtin=True)
            )
        else:
            role.description, role.permissions, role.is_builtin = description, permissions, True
    await session.flush()


async def ensure_default_team(session: AsyncSession) -> Team:
    team = await session.scalar(select(Team).where(Team.name == DEFAULT_TEAM))
    if team is None:
        team = Team(name=DEFAULT_TEAM, description="Created on first start")
        session.add(team)
        await session.flush()
    return team
