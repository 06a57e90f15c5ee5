"""The costs page: summary with the month's forecast, the breakdown chart, credits,
budgets, recommendations, backup storage costs and imports with their reports."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.finops import recommend, service

WINDOWS = ("7d", "30d", "90d", "month", "lastmonth", "365d")
CHOICES = ("service", "team", "environment", "provider", "region", "category")


async def finops_page(
    principal: Principal,
    session: SessionDep,
    window: Annotated[str, Query(max_length=40)] = "30d",
    aggregate: Annotated[str, Query(max_length=140)] = "service",
) -> View:
    span = service.parse_window(window, service.today())
    step = 1 if span.days <= 92 else 7
    summary = await service.summary(session, principal, span, step)
    breakdown = await service.breakdown(
        session, principal, span, service.parse_aggregate(aggregate)
    )
    credits = (await session.scalars(service.credits_query(principal).limit(LIST_LIMIT))).all()
    budgets = (await session.scalars(service.budgets_query(principal).limit(LIST_LIMIT))).all()
    recs = (
        await session.scalars(recommend.recommendations_query(principal).limit(LIST_LIMIT))
    ).all()
    imports = (await session.scalars(service.imports_query(principal).limit(20))).all()
    return View(
        "finops.html",
        {
            "window": window,
            "aggregate": aggregate,
            "windows": WINDOWS,
            "choices": CHOICES,
            "summary": summary,
            "breakdown": breakdown,
            "chart": {
                "breakdown": [i.model_dump(mode="json") for i in breakdown.items[:30]],
                "series": [p.model_dump(mode="json") for p in summary.series],
            },
            "credits": [
                service.credit_out(u)
                for u in await service.credit_uses(session, principal, credits)
            ],
            "budgets": await service.budget_states(session, principal, budgets),
            "recommendations": [recommend.recommendation_out(r) for r in recs],
            "skipped_rules": recommend.SKIPPED,
            "imports": [service.import_detail(i) for i in imports],
            "backup_costs": await service.backup_costs(session, principal, span),
            "prices": await service.list_prices(session, principal),
        },
    )
