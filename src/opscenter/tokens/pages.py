"""The API tokens page."""

from __future__ import annotations

from sqlalchemy import select

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.models import Role
from opscenter.tokens import service as tokens


async def tokens_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(tokens.keys_query().limit(LIST_LIMIT))).all()
    roles = (await session.scalars(select(Role).order_by(Role.name))).all()
    return View(
        "tokens.html",
        {"tokens": [tokens.token_out(k) for k in rows], "roles": [r.name for r in roles]},
    )
