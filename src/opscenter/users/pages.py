"""The users and teams page."""

from __future__ import annotations

from sqlalchemy import select

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.models import Role
from opscenter.users import service as users


async def users_page(principal: Principal, session: SessionDep) -> View:
    user_rows = (await session.scalars(users.users_query().limit(LIST_LIMIT))).all()
    teams = (await session.scalars(users.teams_query())).all()
    roles = (await session.scalars(select(Role).order_by(Role.name))).all()
    return View(
        "users.html",
        {
            "users": [users.user_out(u) for u in user_rows],
            "teams": teams,
            "roles": [r.name for r in roles],
        },
    )
