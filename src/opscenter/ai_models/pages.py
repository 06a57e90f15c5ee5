"""The AI models page, one team at a time: models with their metrics charts, the budget,
the fallback chain editor, prompts with versions and labels, a prompt runner, and the
recent calls (the live part re-renders when a call or a change arrives on `ai_models`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.ai_models import explain, service, summarize
from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, FilterId, View
from opscenter.core.principal import Principal
from opscenter.models import AiCall, AiModel, AiPrompt, Team

RECENT_CALLS = 20


async def _teams(session: AsyncSession, principal: Principal) -> list[Team]:
    stmt = select(Team).order_by(Team.id)
    if not principal.sees_all_teams:
        stmt = stmt.where(Team.id.in_(principal.team_ids))
    return list((await session.scalars(stmt)).all())


async def _live(session: AsyncSession, principal: Principal, team_id: int) -> dict[str, object]:
    now = utcnow()
    models = (
        await session.scalars(
            service.models_query(principal).where(AiModel.team_id == team_id).limit(LIST_LIMIT)
        )
    ).all()
    calls = (
        await session.scalars(
            service.calls_query(principal).where(AiCall.team_id == team_id).limit(RECENT_CALLS)
        )
    ).all()
    config = await service.get_config(session, team_id)
    metrics = [await service.metrics(session, m, 24, now) for m in models]
    return {
        "team_id": team_id,
        "models": [service.model_out(m) for m in models],
        "metrics": {m.model_id: m for m in metrics},
        "charts": [
            {
                "model_id": m.model_id,
                "labels": [b.start.strftime("%H:%M") for b in m.series],
                "calls": [b.calls - b.failures for b in m.series],
                "failures": [b.failures for b in m.series],
                "latency": [b.avg_latency_ms for b in m.series],
            }
            for m in metrics
        ],
        "config": await service.config_out(session, team_id, config, now),
        "calls": [service.call_out(c) for c in calls],
        "now": now,
    }


async def _team(session: AsyncSession, principal: Principal, team_id: int | None) -> int:
    teams = await _teams(session, principal)
    chosen = team_id or (teams[0].id if teams else None)
    return service.team_of(principal, chosen)


async def ai_models_page(
    principal: Principal, session: SessionDep, team_id: FilterId = None
) -> View:
    team = await _team(session, principal, team_id)
    prompts = (
        await session.scalars(
            service.prompts_query(principal).where(AiPrompt.team_id == team).limit(LIST_LIMIT)
        )
    ).all()
    return View(
        "ai_models.html",
        {
            **await _live(session, principal, team),
            "teams": await _teams(session, principal),
            "prompts": [service.prompt_out(p) for p in prompts],
            "explain_prompt": explain.PROMPT_NAME,
            "summary_prompt": summarize.PROMPT_NAME,
        },
    )


async def ai_live_partial(
    principal: Principal, session: SessionDep, team_id: FilterId = None
) -> View:
    """The models, budget and recent calls, re-rendered when an `ai_models` event arrives."""
    team = await _team(session, principal, team_id)
    return View("partials/ai_live.html", await _live(session, principal, team))
