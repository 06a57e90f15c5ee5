"""The single sign-on pages: the admin's providers, and two public ones the login needs
(the providers' buttons on the login page, and the page that says why a login was refused)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Cookie, Query
from sqlalchemy import select

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.models import Role, Team
from opscenter.sso import service


async def sso_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(service.providers_query().limit(LIST_LIMIT))).all()
    # The template shows each callback URL under this site's own address (`request`).
    providers = [service.provider_out(p, "") for p in rows]
    return View(
        "sso.html",
        {
            "providers": providers,
            "rules_json": {
                p.id: json.dumps([r.model_dump(exclude_none=True) for r in p.rules], indent=2)
                for p in providers
            },
            "roles": (await session.scalars(select(Role.name).order_by(Role.name))).all(),
            "teams": (await session.scalars(select(Team.name).order_by(Team.name))).all(),
        },
    )


async def login_options(
    session: SessionDep, next_path: Annotated[str, Query(alias="next", max_length=1000)] = "/"
) -> View:
    """A fragment for the login page: one button per enabled provider."""
    options = await service.login_options(session, service.safe_next(next_path))
    return View("partials/sso_options.html", {"options": options})


async def refused_page(
    session: SessionDep,
    sso_state: Annotated[str | None, Cookie(max_length=200)] = None,
    code: Annotated[str | None, Query(max_length=40)] = None,
) -> View:
    reason, message = await service.refusal(session, sso_state, code)
    return View("sso_refused.html", {"reason": reason, "message": message})
