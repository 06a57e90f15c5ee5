"""The registry: a team's models (keys sealed at rest, bound to their row, never returned),
prompt versions with movable labels, fallback chains with a budget, and the metrics of
the calls made through it. No HTTP here; `gateway.py` makes the calls."""

from __future__ import annotations

import asyncio
import math
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.ai_models.providers import DEFAULT_ENDPOINTS
from opscenter.ai_models.schemas import (
    Bucket,
    CallOut,
    ChainOut,
    FallbackConfigOut,
    FallbackConfigUpdate,
    Message,
    Metrics,
    ModelCreate,
    ModelOut,
    ModelUpdate,
    PromptCreate,
    PromptOut,
)
from opscenter.core.errors import AppError, Conflict, InvalidInput, NotFound, RateLimited
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.core.security import Keyring
from opscenter.models import AiCall, AiFallbackConfig, AiModel, AiPrompt

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
DEFAULT_LABEL = "production"
DEFAULT_PURPOSE = "default"


class OutboundBlocked(InvalidInput):
    code = "OUTBOUND_BLOCKED"


class EndpointRequired(InvalidInput):
    code = "ENDPOINT_REQUIRED"


class PromptVariableMissing(InvalidInput):
    code = "PROMPT_VARIABLE_MISSING"


class PromptTemplateInvalid(InvalidInput):
    code = "PROMPT_TEMPLATE_INVALID"


class UnknownModel(InvalidInput):
    code = "UNKNOWN_MODEL"


class NotConfigured(Conflict):
    code = "AI_NOT_CONFIGURED"


class BudgetExceeded(RateLimited):
    code = "AI_BUDGET_EXCEEDED"


class ModelsUnavailable(AppError):
    status_code = 503
    code = "AI_MODELS_UNAVAILABLE"


class AllModelsFailed(AppError):
    status_code = 503
    code = "AI_ALL_MODELS_FAILED"


def team_of(principal: Principal, team_id: int | None) -> int:
    team = team_id or min(principal.team_ids, default=None)
    if team is None:
        raise InvalidInput("You belong to no team; give team_id or ask an admin to add you")
    check_team_access(principal, team)
    return team


# -- models ---------------------------------------------------------------------------------
def key_context(model_id: int) -> str:
    return f"ai_models.api_key:{model_id}"


def model_out(model: AiModel) -> ModelOut:
    return ModelOut(
        id=model.id,
        team_id=model.team_id,
        name=model.name,
        provider=model.provider,
        model=model.model,
        endpoint=model.endpoint,
        has_api_key=model.api_key_encrypted is not None,
        parameters=dict(model.parameters),
        price_per_input_token=model.price_per_input_token,
        price_per_output_token=model.price_per_output_token,
        is_enabled=model.is_enabled,
        cooldown_until=model.cooldown_until,
        last_error=model.last_error,
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def models_query(principal: Principal) -> Select[Any]:
    return readable(select(AiModel), AiModel, principal).order_by(AiModel.id)


async def get_model(session: AsyncSession, principal: Principal, model_id: int) -> AiModel:
    return await get_readable(session, AiModel, model_id, principal, name="AI model")


def _seal(keyring: Keyring, model: AiModel, key: str) -> str:
    return keyring.encrypt_secret(key, context=key_context(model.id))


def api_key_of(keyring: Keyring, model: AiModel) -> str | None:
    if model.api_key_encrypted is None:
        return None
    return keyring.decrypt_secret(model.api_key_encrypted, context=key_context(model.id))


def _precheck(policy: OutboundPolicy, endpoint: str) -> None:
    """At save time: refuse internal addresses, but accept a name that does not resolve
    right now (DNS may be down); the check before every call refuses it if it still fails."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    try:
        policy.check_name(host)
        socket.getaddrinfo(host, parts.port or 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    except InvalidInput as err:
        raise OutboundBlocked(err.detail) from None
    try:
        policy.check_host(host, parts.port)
    except InvalidInput as err:
        raise OutboundBlocked(err.detail) from None


async def _unique_model_name(
    session: AsyncSession, team_id: int, name: str, exclude: int | None = None
) -> None:
    stmt = select(AiModel.id).where(
        AiModel.team_id == team_id, func.lower(AiModel.name) == name.lower()
    )
    if exclude is not None:
        stmt = stmt.where(AiModel.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise Conflict(f"A model named '{name}' already exists in this team; pick another name")


async def create_model(
    session: AsyncSession,
    keyring: Keyring,
    outbound: OutboundPolicy,
    principal: Principal,
    data: ModelCreate,
) -> AiModel:
    team_id = team_of(principal, data.team_id)
    endpoint = data.endpoint or DEFAULT_ENDPOINTS.get(data.provider)
    if endpoint is None:
        raise EndpointRequired(
            "A local model needs its server's endpoint, e.g. http://127.0.0.1:11434/v1"
        )
    await asyncio.to_thread(_precheck, outbound, endpoint)
    await _unique_model_name(session, team_id, data.name)
    model = AiModel(
        team_id=team_id,
        name=data.name,
        provider=data.provider,
        model=data.model,
        endpoint=endpoint,
        parameters=data.parameters.model_dump(exclude_none=True),
        price_per_input_token=data.price_per_input_token,
        price_per_output_token=data.price_per_output_token,
        is_enabled=data.is_enabled,
        created_by=principal.user_id,
    )
    session.add(model)
    await session.flush()  # the id binds the ciphertext to this row
    if data.api_key:
        model.api_key_encrypted = keyring.encrypt_secret(
            data.api_key, context=key_context(model.id)
        )
        await session.flush()
    return model


async def update_model(
    session: AsyncSession,
    keyring: Keyring,
    outbound: OutboundPolicy,
    principal: Principal,
    model_id: int,
    data: ModelUpdate,
) -> tuple[AiModel, list[str]]:
    model = await get_model(session, principal, model_id)
    changes = data.model_dump(exclude_unset=True)
    if data.api_key is not None and data.clear_api_key:
        raise InvalidInput("Give api_key or clear_api_key, not both")
    if data.endpoint is not None:
        await asyncio.to_thread(_precheck, outbound, data.endpoint)
    if data.name is not None:
        await _unique_model_name(session, model.team_id, data.name, exclude=model.id)
    for name in ("name", "model", "endpoint", "is_enabled"):
        if changes.get(name) is not None:
            setattr(model, name, changes[name])
    for name in ("price_per_input_token", "price_per_output_token"):
        if changes.get(name) is not None:
            setattr(model, name, changes[name])
    if data.parameters is not None:
        model.parameters = data.parameters.model_dump(exclude_none=True)
    if data.api_key is not None:
        model.api_key_encrypted = keyring.encrypt_secret(
            data.api_key, context=key_context(model.id)
        )
    elif data.clear_api_key:
        model.api_key_encrypted = None
    if data.is_enabled:  # enabling again is the operator's word that it works: no cooldown
        model.cooldown_until = None
    await session.flush()
    changed = sorted(k for k, v in changes.items() if v is not None)
    return model, changed


# -- prompts --------------------------------------------------------------------------------
def variables_of(*texts: str) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        for match in VARIABLE.finditer(text):
            seen.setdefault(match.group(1), None)
    return list(seen)


def _check_template(text: str, field: str) -> None:
    rest = VARIABLE.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise PromptTemplateInvalid(
            f"{field}: a '{{{{' or '}}}}' is not a variable; write variables as {{{{name}}}} "
            "(letters, digits and _)"
        )


def prompt_out(prompt: AiPrompt) -> PromptOut:
    return PromptOut.model_validate(prompt)


def prompts_query(principal: Principal, name: str | None = None) -> Select[Any]:
    stmt = readable(select(AiPrompt), AiPrompt, principal)
    if name:
        stmt = stmt.where(AiPrompt.name == name)
    return stmt.order_by(AiPrompt.name, AiPrompt.version.desc())


async def get_prompt(session: AsyncSession, principal: Principal, prompt_id: int) -> AiPrompt:
    return await get_readable(session, AiPrompt, prompt_id, principal, name="Prompt version")


async def _move_labels(session: AsyncSession, prompt: AiPrompt, labels: list[str]) -> None:
    """Each label on one version of a name: taking it here takes it off the others."""
    others = await session.scalars(
        select(AiPrompt).where(
            AiPrompt.team_id == prompt.team_id,
            AiPrompt.name == prompt.name,
            AiPrompt.id != prompt.id,
        )
    )
    for other in others:
        if set(other.labels) & set(labels):
            other.labels = [label for label in other.labels if label not in labels]
    prompt.labels = sorted(set(labels))


async def create_prompt(
    session: AsyncSession, principal: Principal, data: PromptCreate
) -> AiPrompt:
    team_id = team_of(principal, data.team_id)
    _check_template(data.template, "template")
    _check_template(data.system, "system")
    latest = await session.scalar(
        select(func.max(AiPrompt.version)).where(
            AiPrompt.team_id == team_id, AiPrompt.name == data.name
        )
    )
    prompt = AiPrompt(
        team_id=team_id,
        name=data.name,
        version=(latest or 0) + 1,
        system=data.system,
        template=data.template,
        variables=variables_of(data.system, data.template),
        labels=[],
        description=data.description,
        created_by=principal.user_id,
    )
    session.add(prompt)
    await session.flush()
    await _move_labels(session, prompt, data.labels)
    await session.flush()
    return prompt


async def set_labels(
    session: AsyncSession, principal: Principal, prompt_id: int, labels: list[str]
) -> AiPrompt:
    prompt = await get_prompt(session, principal, prompt_id)
    await _move_labels(session, prompt, labels)
    await session.flush()
    return prompt


async def find_prompt(
    session: AsyncSession, team_id: int, name: str, label: str | None, version: int | None
) -> AiPrompt | None:
    stmt = select(AiPrompt).where(AiPrompt.team_id == team_id, AiPrompt.name == name)
    if version is not None:
        return await session.scalar(stmt.where(AiPrompt.version == version))
    wanted = label or DEFAULT_LABEL
    for prompt in await session.scalars(stmt.order_by(AiPrompt.version.desc())):
        if wanted in prompt.labels:
            return prompt
    return None


async def resolve_prompt(
    session: AsyncSession, team_id: int, name: str, label: str | None, version: int | None
) -> AiPrompt:
    prompt = await find_prompt(session, team_id, name, label, version)
    if prompt is None:
        which = f"version {version}" if version is not None else f"label {label or DEFAULT_LABEL}"
        raise NotFound(f"Prompt '{name}' with {which}")
    return prompt


def render_text(text: str, values: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: values[m.group(1)], text)


def render(
    name: str, version: int | None, system: str, template: str, values: dict[str, str]
) -> list[Message]:
    """The messages of a prompt with its variables filled in; a missing one is an error
    that names every missing variable."""
    missing = [v for v in variables_of(system, template) if v not in values]
    if missing:
        which = f"'{name}' v{version}" if version else f"'{name}'"
        raise PromptVariableMissing(
            f"The prompt {which} needs the variable(s) {', '.join(missing)}: "
            "give them in `variables`"
        )
    messages = [Message(role="system", content=render_text(system, values))] if system else []
    return [*messages, Message(role="user", content=render_text(template, values))]


# -- fallback chains and budget -------------------------------------------------------------
def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    nxt = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return start, nxt


async def spent_since(session: AsyncSession, team_id: int, since: datetime) -> float:
    total = await session.scalar(
        select(func.coalesce(func.sum(AiCall.cost_usd), 0.0)).where(
            AiCall.team_id == team_id, AiCall.created_at >= since
        )
    )
    return float(total or 0.0)


async def get_config(session: AsyncSession, team_id: int) -> AiFallbackConfig | None:
    config: AiFallbackConfig | None = await session.scalar(
        select(AiFallbackConfig).where(AiFallbackConfig.team_id == team_id)
    )
    return config


async def config_out(
    session: AsyncSession, team_id: int, config: AiFallbackConfig | None, now: datetime
) -> FallbackConfigOut:
    period = config.budget_period if config else "month"
    budget = config.budget_usd if config else None
    start, end = period_bounds(period, now)
    spent = await spent_since(session, team_id, start)
    return FallbackConfigOut(
        team_id=team_id,
        chains=[ChainOut.model_validate(c) for c in (config.chains if config else [])],
        budget_usd=budget,
        budget_period=period,
        period_start=start,
        period_end=end,
        spent_usd=round(spent, 6),
        remaining_usd=None if budget is None else round(max(0.0, budget - spent), 6),
        updated_at=config.updated_at if config else None,
    )


async def put_config(
    session: AsyncSession, principal: Principal, data: FallbackConfigUpdate
) -> AiFallbackConfig:
    team_id = team_of(principal, data.team_id)
    purposes = [c.purpose for c in data.chains]
    if dupes := sorted({p for p in purposes if purposes.count(p) > 1}):
        raise InvalidInput(f"One chain per purpose: {', '.join(dupes)} appears more than once")
    wanted = {i for c in data.chains for i in c.model_ids}
    known = set(
        await session.scalars(
            select(AiModel.id).where(AiModel.team_id == team_id, AiModel.id.in_(wanted))
        )
    )
    if unknown := sorted(wanted - known):
        raise UnknownModel(
            f"No model {', '.join(map(str, unknown))} in team {team_id}: "
            "register the model first, then name it in a chain"
        )
    config = await get_config(session, team_id)
    if config is None:
        config = AiFallbackConfig(team_id=team_id)
        session.add(config)
    config.chains = [c.model_dump() for c in data.chains]
    config.budget_usd = data.budget_usd
    config.budget_period = data.budget_period
    await session.flush()
    return config


def chain_for(config: AiFallbackConfig | None, purpose: str) -> dict[str, Any] | None:
    chains = {c["purpose"]: c for c in (config.chains if config else [])}
    return chains.get(purpose) or chains.get(DEFAULT_PURPOSE)


def check_budget(config: AiFallbackConfig, spent: float, now: datetime) -> None:
    if config.budget_usd is None or spent < config.budget_usd:
        return
    _, end = period_bounds(config.budget_period, now)
    wait = max(1, math.ceil((end - now).total_seconds()))
    raise BudgetExceeded(
        f"The AI budget of {config.budget_usd:g} USD per {config.budget_period} is spent "
        f"({spent:.4f} USD); calls resume at {end.isoformat().replace('+00:00', 'Z')}, "
        "or raise budget_usd in the fallback config",
        headers={"Retry-After": str(wait)},
    )


# -- calls and metrics ----------------------------------------------------------------------
def call_out(call: AiCall) -> CallOut:
    return CallOut.model_validate(call)


def calls_query(
    principal: Principal, model_id: int | None = None, request_id: str | None = None
) -> Select[Any]:
    stmt = readable(select(AiCall), AiCall, principal)
    if model_id is not None:
        stmt = stmt.where(AiCall.model_id == model_id)
    if request_id:
        stmt = stmt.where(AiCall.request_id == request_id)
    return stmt.order_by(AiCall.id.desc())


@dataclass
class _Slot:
    """One bucket of the metrics series while it is being added up."""

    start: datetime
    calls: int = 0
    failures: int = 0
    latency: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    def out(self) -> Bucket:
        return Bucket(
            start=self.start,
            calls=self.calls,
            failures=self.failures,
            avg_latency_ms=round(self.latency / self.calls, 2) if self.calls else None,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=round(self.cost, 8),
        )


async def _percentile(session: AsyncSession, where: Any, count: int, q: float) -> float | None:
    """The latency below which a share `q` of the attempts fall (nearest rank)."""
    if not count:
        return None
    offset = max(0, math.ceil(q * count) - 1)
    value = await session.scalar(
        select(AiCall.latency_ms).where(*where).order_by(AiCall.latency_ms).offset(offset).limit(1)
    )
    return None if value is None else round(float(value), 2)


async def metrics(session: AsyncSession, model: AiModel, hours: int, now: datetime) -> Metrics:
    """The model's attempts over the last `hours`, aggregated by the database: totals,
    latency percentiles, and a series of hourly (up to two days) or daily buckets, empty
    ones included, for charts."""
    since = now - timedelta(hours=hours)
    step = timedelta(hours=1) if hours <= 48 else timedelta(days=1)
    first = since.replace(minute=0, second=0, microsecond=0)
    if step.days:
        first = first.replace(hour=0)
    starts = [first + i * step for i in range(int((now - first) / step) + 1)]
    # A CASE over the bucket bounds groups portably (SQLite and PostgreSQL alike).
    bucket = case(
        *((AiCall.created_at < start + step, i) for i, start in enumerate(starts[:-1])),
        else_=len(starts) - 1,
    ).label("bucket")
    where = (AiCall.model_id == model.id, AiCall.created_at >= since)
    answered = case((and_(AiCall.final, AiCall.outcome == "success"), 1), else_=0)
    rows = (
        await session.execute(
            select(
                bucket,
                AiCall.outcome,
                func.count(),
                func.sum(AiCall.latency_ms),
                func.max(AiCall.latency_ms),
                func.sum(AiCall.tokens_in),
                func.sum(AiCall.tokens_out),
                func.sum(AiCall.cost_usd),
                func.sum(answered),
            )
            .where(*where)
            .group_by(bucket, AiCall.outcome)
        )
    ).all()
    series = [_Slot(start) for start in starts]
    by_outcome: dict[str, int] = {}
    latency_sum, latency_max, answered_count = 0.0, None, 0
    for index, outcome, count, lat_sum, lat_max, t_in, t_out, cost, done in rows:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
        slot = series[index]
        slot.calls += count
        slot.failures += 0 if outcome == "success" else count
        slot.latency += float(lat_sum or 0)
        slot.tokens_in += int(t_in or 0)
        slot.tokens_out += int(t_out or 0)
        slot.cost += float(cost or 0)
        latency_sum += float(lat_sum or 0)
        latency_max = max(latency_max or 0.0, float(lat_max or 0))
        answered_count += int(done or 0)
    calls = sum(by_outcome.values())
    successes = by_outcome.get("success", 0)
    return Metrics(
        model_id=model.id,
        window_hours=hours,
        since=since,
        calls=calls,
        successes=successes,
        failures=calls - successes,
        success_rate=round(successes / calls, 4) if calls else None,
        answered=answered_count,
        by_outcome=by_outcome,
        latency_ms_avg=round(latency_sum / calls, 2) if calls else None,
        latency_ms_p50=await _percentile(session, where, calls, 0.5),
        latency_ms_p95=await _percentile(session, where, calls, 0.95),
        latency_ms_max=None if latency_max is None else round(latency_max, 2),
        tokens_in=sum(s.tokens_in for s in series),
        tokens_out=sum(s.tokens_out for s in series),
        cost_usd=round(sum(s.cost for s in series), 8),
        series=[s.out() for s in series],
    )
