"""The ATT&CK matrix coloured by coverage, and the fuzzing campaigns with their crashes
and an import form."""

from __future__ import annotations

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.models.fuzzing import FuzzEngine
from opscenter.security import attack, fuzzing, service


def heat(references: int) -> int:
    """A cell's colour step: none, one or two, up to nine, ten and more."""
    return 0 if references == 0 else 1 if references <= 2 else 2 if references <= 9 else 3


async def attack_page(principal: Principal, session: SessionDep) -> View:
    coverage = await attack.coverage(session, principal)
    return View(
        "security_attack.html",
        {
            "coverage": coverage,
            "heat": heat,
            "referenced": sum(t.techniques_referenced for t in coverage.tactics),
            "cells": sum(t.techniques_total for t in coverage.tactics),
        },
    )


async def fuzzing_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(fuzzing.campaigns_query(principal).limit(LIST_LIMIT))).all()
    assets, _ = await service.asset_page(session, service.assets_query(principal), LIST_LIMIT, 0)
    return View(
        "security_fuzzing.html",
        {
            "campaigns": await fuzzing.outputs(session, rows),
            "assets": [a for a in assets if a.id is not None],
            "engines": list(FuzzEngine),
        },
    )
