"""Calls through the registry, as LiteLLM's router makes them: the purpose's chain in
order, skipping models that are disabled or cooling down; on a timeout, a 429 or a 5xx
the same model is retried with doubling backoff, then the next one takes over; a model
that failed cools down. The budget is checked first, every attempt is measured and
recorded (in its own transaction, so a failed request keeps its record), and the model
that finally answered is named."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.ai_models import service
from opscenter.ai_models.providers import CallFailed, Reply, Target, complete
from opscenter.ai_models.schemas import AttemptOut, Message, RunOut
from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.db import Database, release
from opscenter.core.events import Event, EventBus
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.security import Keyring
from opscenter.models import AiCall, AiModel


@dataclass(frozen=True)
class Plan:
    team_id: int
    purpose: str
    targets: list[Target]
    max_retries: int
    backoff_seconds: float
    cooldown_seconds: int
    budget_usd: float | None
    spent_usd: float


@dataclass
class Attempt:
    target: Target
    number: int
    outcome: str
    latency_ms: float
    status_code: int | None = None
    error: str | None = None
    reply: Reply | None = field(default=None, repr=False)

    @property
    def cost(self) -> float:
        if self.reply is None:
            return 0.0
        return (
            self.reply.tokens_in * self.target.price_in
            + self.reply.tokens_out * self.target.price_out
        )


@dataclass(frozen=True)
class Services:
    """What a call needs from the running application."""

    db: Database
    keyring: Keyring
    outbound: OutboundPolicy
    events: EventBus


async def plan(
    session: AsyncSession, keyring: Keyring, team_id: int, purpose: str, now: datetime
) -> Plan:
    config = await service.get_config(session, team_id)
    chain = service.chain_for(config, purpose)
    if config is None or chain is None:
        raise service.NotConfigured(
            f"No model chain for '{purpose}' (nor 'default') in team {team_id}: register a "
            "model, then name it in PUT /api/v1/ai-models/fallback-config"
        )
    start, _ = service.period_bounds(config.budget_period, now)
    spent = await service.spent_since(session, team_id, start)
    service.check_budget(config, spent, now)
    ids: list[int] = chain["model_ids"]
    rows = {
        m.id: m
        for m in await session.scalars(
            select(AiModel).where(AiModel.team_id == team_id, AiModel.id.in_(ids))
        )
    }
    targets: list[Target] = []
    skipped: list[str] = []
    for model in (rows[i] for i in ids if i in rows):
        if not model.is_enabled:
            skipped.append(f"{model.name} is disabled")
        elif model.cooldown_until is not None and model.cooldown_until > now:
            skipped.append(f"{model.name} cools down until {isoformat_z(model.cooldown_until)}")
        else:
            targets.append(
                Target(
                    model_id=model.id,
                    name=model.name,
                    provider=model.provider,
                    model=model.model,
                    endpoint=model.endpoint,
                    api_key=service.api_key_of(keyring, model),
                    parameters=dict(model.parameters),
                    price_in=model.price_per_input_token,
                    price_out=model.price_per_output_token,
                )
            )
    if not targets:
        raise service.ModelsUnavailable(
            f"No model of the '{chain['purpose']}' chain can take calls now: "
            f"{'; '.join(skipped) or 'the chain is empty'}. Wait, or enable another model"
        )
    return Plan(
        team_id=team_id,
        purpose=purpose,
        targets=targets,
        max_retries=int(chain["max_retries"]),
        backoff_seconds=float(chain["backoff_seconds"]),
        cooldown_seconds=int(chain["cooldown_seconds"]),
        budget_usd=config.budget_usd,
        spent_usd=spent,
    )


async def call_chain(
    client: httpx.AsyncClient,
    policy: OutboundPolicy,
    plan: Plan,
    messages: list[dict[str, str]],
) -> list[Attempt]:
    """Network only: no database session is open while this runs."""
    attempts: list[Attempt] = []
    for target in plan.targets:
        for retry in range(plan.max_retries + 1):
            started = time.perf_counter()
            try:
                reply = await complete(client, policy, target, messages)
            except CallFailed as failed:
                attempts.append(
                    Attempt(
                        target,
                        retry + 1,
                        failed.outcome,
                        _ms(started),
                        failed.status_code,
                        failed.message,
                    )
                )
                if not failed.transient or retry == plan.max_retries:
                    break
                await asyncio.sleep(plan.backoff_seconds * 2**retry)
                continue
            attempts.append(
                Attempt(target, retry + 1, "success", _ms(started), reply.status_code, None, reply)
            )
            return attempts
    return attempts


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _record(
    app: Services, plan: Plan, attempts: list[Attempt], user_id: int | None, request_id: str
) -> None:
    """Write the attempts and the models' cooldowns in one short transaction of its own."""
    now = utcnow()
    async with app.db.write_session() as session:
        last: dict[int, Attempt] = {a.target.model_id: a for a in attempts}
        # A model removed while it was being called keeps its calls, under its name only.
        models = {
            m.id: m for m in await session.scalars(select(AiModel).where(AiModel.id.in_(last)))
        }
        for index, attempt in enumerate(attempts):
            reply = attempt.reply
            session.add(
                AiCall(
                    team_id=plan.team_id,
                    request_id=request_id,
                    model_id=attempt.target.model_id if attempt.target.model_id in models else None,
                    model_name=attempt.target.name,
                    purpose=plan.purpose,
                    attempt=attempt.number,
                    outcome=attempt.outcome,
                    status_code=attempt.status_code,
                    latency_ms=attempt.latency_ms,
                    tokens_in=reply.tokens_in if reply else 0,
                    tokens_out=reply.tokens_out if reply else 0,
                    cost_usd=attempt.cost,
                    final=index == len(attempts) - 1,
                    error=attempt.error,
                    created_by=user_id,
                    created_at=now,
                )
            )
        for model in models.values():
            attempt = last[model.id]
            if attempt.outcome == "success":
                model.last_error, model.cooldown_until = None, None
            else:
                model.last_error = (attempt.error or attempt.outcome)[:500]
                if plan.cooldown_seconds:
                    model.cooldown_until = now + timedelta(seconds=plan.cooldown_seconds)
        await session.commit()


def _publish(app: Services, plan: Plan, attempts: list[Attempt], request_id: str) -> None:
    answer = attempts[-1]
    cost = sum(a.cost for a in attempts)
    app.events.publish(
        Event(
            "ai_models.call_completed",
            {
                "request_id": request_id,
                "purpose": plan.purpose,
                "model_id": answer.target.model_id,
                "model_name": answer.target.name,
                "outcome": answer.outcome,
                "attempts": len(attempts),
                "cost_usd": cost,
            },
            team_id=plan.team_id,
        )
    )
    for model_id, attempt in {a.target.model_id: a for a in attempts}.items():
        if attempt.outcome != "success" and plan.cooldown_seconds:
            app.events.publish(
                Event(
                    "ai_models.model_cooling_down",
                    {
                        "model_id": model_id,
                        "model_name": attempt.target.name,
                        "reason": attempt.error or attempt.outcome,
                        "cooldown_seconds": plan.cooldown_seconds,
                        "severity": "warning",
                    },
                    team_id=plan.team_id,
                )
            )
    budget = plan.budget_usd
    if budget is not None and plan.spent_usd < budget <= plan.spent_usd + cost:
        app.events.publish(
            Event(
                "ai_models.budget_exhausted",
                {
                    "budget_usd": budget,
                    "spent_usd": round(plan.spent_usd + cost, 6),
                    "severity": "warning",
                    "message": f"The AI budget of {budget:g} USD is spent; calls stop "
                    "until the next period",
                },
                team_id=plan.team_id,
            )
        )


@cache
def _tls() -> ssl.SSLContext:
    """Loading the CA bundle takes longer than a local model's answer: do it once."""
    return httpx.create_ssl_context()


async def run(
    app: Services,
    session: AsyncSession,
    *,
    team_id: int,
    purpose: str,
    messages: list[Message],
    user_id: int | None,
) -> RunOut:
    """Plan (budget, chain) in the caller's session, release it, call, then record."""
    chosen = await plan(session, app.keyring, team_id, purpose, utcnow())
    await release(session)
    request_id = uuid.uuid4().hex
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=_tls()) as client:
        attempts = await call_chain(
            client, app.outbound, chosen, [m.model_dump() for m in messages]
        )
    await _record(app, chosen, attempts, user_id, request_id)
    _publish(app, chosen, attempts, request_id)
    answer = attempts[-1]
    tried = [
        AttemptOut(
            model_id=a.target.model_id,
            model_name=a.target.name,
            attempt=a.number,
            outcome=a.outcome,
            status_code=a.status_code,
            latency_ms=a.latency_ms,
            error=a.error,
        )
        for a in attempts
    ]
    if answer.reply is None:
        summary = "; ".join(f"{a.target.name}: {a.error or a.outcome}" for a in attempts)
        raise service.AllModelsFailed(
            f"Every model of the chain failed ({summary}). The failed models cool down for "
            f"{chosen.cooldown_seconds} s; see GET /api/v1/ai-models/calls?request_id={request_id}"
        )
    return RunOut(
        request_id=request_id,
        text=answer.reply.text,
        model_id=answer.target.model_id,
        model_name=answer.target.name,
        provider=answer.target.provider,
        model=answer.target.model,
        tokens_in=answer.reply.tokens_in,
        tokens_out=answer.reply.tokens_out,
        cost_usd=sum(a.cost for a in attempts),
        latency_ms=sum(a.latency_ms for a in attempts),
        attempts=tried,
    )
