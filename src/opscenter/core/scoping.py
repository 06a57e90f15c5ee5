"""Team scoping in one place: every team-owned query goes through `readable`."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from opscenter.core.errors import NotFound
from opscenter.core.principal import Principal


class TeamOwned(Protocol):
    id: Any
    team_id: Any


M = TypeVar("M", bound=TeamOwned)


def readable(stmt: Select[Any], model: type[TeamOwned], principal: Principal) -> Select[Any]:
    """Restrict a statement to the caller's teams. Another team's rows simply do not exist."""
    if principal.sees_all_teams:
        return stmt
    team_col: InstrumentedAttribute[int] = model.team_id
    return stmt.where(team_col.in_(principal.team_ids))


async def get_readable(
    session: AsyncSession, model: type[M], ident: int, principal: Principal, *, name: str
) -> M:
    """The object if the caller's teams may see it; a 404 otherwise (never a 403 that leaks)."""
    stmt = readable(select(model).where(model.id == ident), model, principal)
    obj: M | None = (await session.scalars(stmt)).first()
    if obj is None:
        raise NotFound(name, ident)
    return obj


def check_team_access(principal: Principal, team_id: int) -> None:
    """Creating or moving an object into a team requires membership (or the all-teams scope)."""
    if not principal.sees_all_teams and team_id not in principal.team_ids:
        raise NotFound("Team", team_id)
