"""Resource monitoring: collection rounds, and the reads of the API and pages (current
values, history, the infrastructure overview, capacity forecasts)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.errors import InvalidInput
from opscenter.core.events import Event
from opscenter.core.failures import BackupError
from opscenter.core.logging import get_logger
from opscenter.core.metrics import REGISTRY
from opscenter.core.principal import Principal
from opscenter.core.scoping import get_readable, readable
from opscenter.models import AlertStatus, ResourceAlert, ResourceAlertRule, Server, StorageProvider
from opscenter.resources import alerts, store
from opscenter.resources.collect import (
    Counters,
    HostCollector,
    collect_database,
    collect_remote,
)
from opscenter.resources.forecast import Forecast, forecast
from opscenter.resources.schemas import (
    CollectOut,
    ForecastItem,
    HistoryOut,
    HistoryPoint,
    HistorySeries,
    InfrastructureItem,
    MetricValue,
    SourceMetrics,
)
from opscenter.resources.store import Sample
from opscenter.servers import connect
from opscenter.servers import service as servers
from opscenter.servers.schemas import HOSTS, ServerType

log = get_logger("opscenter.resources")

HOST = "host"
LIVE = (AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED)
PARALLEL = 4
SOURCE_SECONDS = 60.0
MAX_POINTS = 5000
VALUE = Gauge(
    "opscenter_resource_value",
    "The latest collected value of each resource metric (source: host, server:<id>, storage:<id>)",
    ["source", "metric", "label"],
    registry=REGISTRY,
)
ROUND_SECONDS = Gauge(
    "opscenter_resource_collection_seconds",
    "Wall time of the last resource collection round",
    registry=REGISTRY,
)


def server_source(server_id: int) -> str:
    return f"server:{server_id}"


def storage_source(provider_id: int) -> str:
    return f"storage:{provider_id}"


@dataclass
class Collector:
    """Per process: this host's reader and each server's previous counters (for rates)."""

    host: HostCollector = field(default_factory=HostCollector)
    counters: dict[int, Counters] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_round: int | None = None


_collectors: dict[int, Collector] = {}


def collector_for(app: AppContext) -> Collector:
    return _collectors.setdefault(id(app), Collector())


@dataclass(frozen=True)
class Collected:
    source: str
    team_id: int | None
    server_id: int | None
    samples: list[Sample]


async def _server(
    target: connect.Target, counters: Counters, kind: ServerType, has_db: bool
) -> list[Sample]:
    samples: list[Sample] = []
    async with connect.open_runner(target) as runner:
        if kind in HOSTS:
            samples += await collect_remote(runner, counters)
        if has_db:
            samples += await collect_database(runner, target)
    return samples


async def collect_round(
    app: AppContext, now: datetime | None = None, only: set[str] | None = None
) -> CollectOut:
    """One round over every source (or `only` these: "host", "server:<id>", ...); writes,
    rolls up, prunes and evaluates the rules in one short transaction after all the I/O.
    Rounds queue behind each other."""
    collector = collector_for(app)
    async with collector.lock:
        started = time.perf_counter()
        result = await _round(app, collector, now, only)
        ROUND_SECONDS.set(time.perf_counter() - started)
        return result


async def _round(
    app: AppContext, collector: Collector, now: datetime | None, only: set[str] | None
) -> CollectOut:
    def wanted(source: str) -> bool:
        return only is None or source in only

    errors: dict[str, str] = {}
    async with app.db.read_session() as session:
        server_rows = list((await session.scalars(select(Server).order_by(Server.id))).all())
        targets = [(s, servers.target_of(app.keyring, s)) for s in server_rows]
        providers = list(
            (
                await session.scalars(
                    select(StorageProvider).where(StorageProvider.is_active.is_(True))
                )
            ).all()
        )
    backends = []
    for provider in providers:
        if not wanted(storage_source(provider.id)):
            continue
        try:
            backends.append((provider.id, provider.team_id, app.storages.get(provider)))
        except Exception as err:  # one provider that cannot be opened must not stop the round
            errors[storage_source(provider.id)] = _explain(err)
    gate = asyncio.Semaphore(PARALLEL)

    async def bounded(name: str, coro: object) -> list[Sample]:
        async with gate, asyncio.timeout(SOURCE_SECONDS):
            return await coro  # type: ignore[misc, no-any-return]

    collected = [Collected(HOST, None, None, collector.host.collect())] if wanted(HOST) else []
    tasks: list[tuple[str, int | None, int | None, asyncio.Task[list[Sample]]]] = []
    for server, target in targets:
        kind = ServerType(server.type)
        has_db = kind in (ServerType.POSTGRESQL, ServerType.MYSQL) or bool(
            kind in HOSTS and server.db_engine
        )
        if (kind not in HOSTS and not has_db) or not wanted(server_source(server.id)):
            continue  # an SQLite file: nothing to read but the file (a backup's concern)
        counters = collector.counters.setdefault(server.id, Counters())
        coro = _server(target, counters, kind, has_db)
        task = asyncio.create_task(bounded(server.name, coro))
        tasks.append((server_source(server.id), server.team_id, server.id, task))
    for provider_id, provider_team, backend in backends:
        task = asyncio.create_task(bounded(str(provider_id), _storage(backend)))
        tasks.append((storage_source(provider_id), provider_team, None, task))
    for source, team_id, server_id, task in tasks:
        try:
            collected.append(Collected(source, team_id, server_id, await task))
        except Exception as err:  # one silent host must not stop the round
            errors[source] = _explain(err)
    when = now or utcnow()
    at = int(when.timestamp())
    events: list[Event]
    async with app.db.write_session() as session:
        count = await store.write_round(
            session, at, [(c.source, c.team_id, c.samples) for c in collected]
        )
        await store.maintain(session, at, collector.last_round)
        collector.last_round = at
        events = await _evaluate(session, collected, when)
        await session.commit()
    for event in events:
        app.events.publish(event)
    if only is None:
        VALUE.clear()  # a source gone (deleted, or failing) leaves the exposition
    for item in collected:
        for s in item.samples:
            VALUE.labels(item.source, s.metric, s.label).set(s.value)
    if errors:
        log.warning("resource collection: some sources failed", errors=errors)
    return CollectOut(sources=len(collected), samples=count, errors=errors)


def _explain(err: Exception) -> str:
    if isinstance(err, BackupError):
        return connect.explain(err)[:500]
    if isinstance(err, TimeoutError):
        return f"no answer within {SOURCE_SECONDS:g} s"
    return f"{type(err).__name__}: {err}"[:500]


async def _storage(backend: object) -> list[Sample]:
    info = await backend.space()  # type: ignore[attr-defined]
    out = []
    for metric, value in (
        ("storage_total_bytes", info.total_bytes),
        ("storage_used_bytes", info.used_bytes),
        ("storage_free_bytes", info.free_bytes),
    ):
        if value is not None:
            out.append(Sample(metric, float(value)))
    return out


async def _evaluate(
    session: AsyncSession, collected: Sequence[Collected], now: datetime
) -> list[Event]:
    rules = list(
        (
            await session.scalars(
                select(ResourceAlertRule).where(ResourceAlertRule.is_enabled.is_(True))
            )
        ).all()
    )
    if not rules:
        return []
    plain = [r for r in rules if r.operator != alerts.FORECAST]
    by_forecast = [r for r in rules if r.operator == alerts.FORECAST]
    readings = [
        alerts.Reading(c.source, c.team_id, c.server_id, s.metric, s.label, s.value)
        for c in collected
        for s in c.samples
    ]
    events = await alerts.evaluate(session, plain, readings, now) if plain else []
    if by_forecast:
        # "Full within N days": the reading is the forecast's days left, where there is one.
        days: list[alerts.Reading] = []
        for c in collected:
            for metric in {r.metric for r in by_forecast}:
                for label, result in await _forecasts_of(session, c.source, metric, now):
                    if result.days_left is not None:
                        days.append(
                            alerts.Reading(
                                c.source, c.team_id, c.server_id, metric, label, result.days_left
                            )
                        )
        events += await alerts.evaluate(session, by_forecast, days, now)
    return events


# --- reads --------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW = store.RETENTION[3600]
FORECAST_WINDOW = 30 * 86400
#: What "used" is measured against, per forecastable metric (None: no capacity known).
CAPACITY_OF = {
    "disk_used_bytes": "disk_total_bytes",
    "storage_used_bytes": "storage_total_bytes",
    "db_size_bytes": None,
}
KIND_OF: dict[str, Literal["disk", "database", "storage"]] = {
    "disk_used_bytes": "disk",
    "db_size_bytes": "database",
    "storage_used_bytes": "storage",
}


def parse_duration(text: str, name: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidInput(f"{name} must be a number and a unit (s, m, h, d), like 15m or 7d")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"{name} must be longer than 0")
    return seconds


def default_step(window: int) -> int:
    """The finest of 15 s, 1 min, 5 min, 1 h, 1 day that gives at most ~500 points."""
    return next((s for s in (15, 60, 300, 3600) if window / s <= 500), 86400)


@dataclass(frozen=True)
class Source:
    key: str
    name: str
    type: str
    team_id: int | None
    server_id: int | None = None
    storage_id: int | None = None
    environment: str | None = None
    health_status: str = "unknown"
    last_heartbeat: datetime | None = None


THIS_HOST = Source(HOST, "this host (opscenter)", "host", None, health_status="healthy")


async def sources(session: AsyncSession, principal: Principal) -> list[Source]:
    """What the caller may see: this host, their teams' servers and storage."""
    out = [THIS_HOST]
    for s in await session.scalars(servers.servers_query(principal)):
        out.append(
            Source(
                server_source(s.id),
                s.name,
                s.type,
                s.team_id,
                server_id=s.id,
                environment=s.environment,
                health_status=s.health_status,
                last_heartbeat=s.last_heartbeat,
            )
        )
    stmt = readable(select(StorageProvider), StorageProvider, principal).order_by(
        StorageProvider.id
    )
    for p in await session.scalars(stmt):
        out.append(Source(storage_source(p.id), p.name, p.type, p.team_id, storage_id=p.id))
    return out


async def source_of(
    session: AsyncSession, principal: Principal, server_id: int | None, storage_id: int | None
) -> Source:
    if server_id is not None and storage_id is not None:
        raise InvalidInput("Give server_id or storage_id, not both")
    if server_id is not None:
        s = await servers.get_server(session, principal, server_id)
        return Source(server_source(s.id), s.name, s.type, s.team_id, server_id=s.id)
    if storage_id is not None:
        p = await get_readable(session, StorageProvider, storage_id, principal, name="Storage")
        return Source(storage_source(p.id), p.name, p.type, p.team_id, storage_id=p.id)
    return THIS_HOST


def _epoch(at: int) -> datetime:
    return datetime.fromtimestamp(at, UTC)


async def current(
    session: AsyncSession, principal: Principal, chosen: Sequence[Source] | None = None
) -> list[SourceMetrics]:
    known = list(chosen) if chosen is not None else await sources(session, principal)
    since = int(utcnow().timestamp()) - store.RETENTION[store.RAW]
    latest = await store.latest(session, [s.key for s in known], since)
    out = []
    for src in known:
        if src.key not in latest:
            continue
        at, rows = latest[src.key]
        out.append(
            SourceMetrics(
                source=src.key,
                name=src.name,
                server_id=src.server_id,
                storage_id=src.storage_id,
                collected_at=_epoch(at),
                metrics=[MetricValue(metric=r.metric, label=r.label, value=r.value) for r in rows],
            )
        )
    return out


async def history(
    session: AsyncSession,
    principal: Principal,
    *,
    metric: str,
    server_id: int | None,
    storage_id: int | None,
    label: str | None,
    window: str,
    step: str | None,
    now: datetime | None = None,
) -> HistoryOut:
    window_s = parse_duration(window, "window")
    if window_s > MAX_WINDOW:
        raise InvalidInput(f"window is at most {MAX_WINDOW // 86400}d: older data is not kept")
    step_s = parse_duration(step, "step") if step else default_step(window_s)
    if window_s / step_s > MAX_POINTS:
        raise InvalidInput(
            f"{window} at a step of {step} is more than {MAX_POINTS} points; "
            f"use a step of at least {-(-window_s // MAX_POINTS)}s"
        )
    src = await source_of(session, principal, server_id, storage_id)
    end = int((now or utcnow()).timestamp())
    series = await store.history(
        session, src.key, metric, end - window_s, end, step_s, [label] if label else None
    )
    return HistoryOut(
        metric=metric,
        source=src.key,
        server_id=src.server_id,
        window_seconds=window_s,
        step_seconds=step_s,
        resolution_seconds=store.resolution_for(step_s),
        series=[
            HistorySeries(
                label=lab,
                points=[
                    HistoryPoint(timestamp=_epoch(p.at), value=p.value, min=p.min, max=p.max)
                    for p in points
                ],
            )
            for lab, points in series.items()
        ],
    )


async def infrastructure(session: AsyncSession, principal: Principal) -> list[InfrastructureItem]:
    known = [s for s in await sources(session, principal) if s.storage_id is None]
    latest = {m.source: m for m in await current(session, principal, known)}
    stmt: Any = select(ResourceAlert.source, func.count())
    stmt = readable(stmt, ResourceAlert, principal).where(ResourceAlert.status.in_(LIVE))
    counts: dict[str, int] = {
        str(source): int(n)
        for source, n in await session.execute(stmt.group_by(ResourceAlert.source))
    }
    out = []
    for src in known:
        got = latest.get(src.key)
        values = (
            {f"{m.metric}:{m.label}" if m.label else m.metric: m.value for m in got.metrics}
            if got
            else {}
        )
        out.append(
            InfrastructureItem(
                server_id=src.server_id,
                name=src.name,
                type=src.type,
                environment=src.environment,
                health_status=src.health_status,
                last_heartbeat=src.last_heartbeat,
                collected_at=got.collected_at if got else None,
                metrics=values,
                open_alerts=int(counts.get(src.key, 0)),
            )
        )
    return out


async def _forecasts_of(
    session: AsyncSession, source: str, metric: str, now: datetime, window: int = FORECAST_WINDOW
) -> list[tuple[str, Forecast]]:
    return [
        (label, f)
        for label, _, _, f in await _forecast_series(session, source, metric, now, window)
    ]


async def _forecast_series(
    session: AsyncSession, source: str, metric: str, now: datetime, window: int
) -> list[tuple[str, float, float | None, Forecast]]:
    end = int(now.timestamp())
    step = 3600 if window > 2 * 86400 else 300
    used = await store.history(session, source, metric, end - window, end, step)
    capacity_metric = CAPACITY_OF.get(metric)
    totals = (
        await store.history(session, source, capacity_metric, end - 3 * step, end, step)
        if capacity_metric
        else {}
    )
    out: list[tuple[str, float, float | None, Forecast]] = []
    for label, points in used.items():
        if not points:
            continue
        capacity: float | None
        if metric == "disk_used_percent":
            capacity = 100.0
        else:
            cap_points = totals.get(label)
            capacity = cap_points[-1].max if cap_points else None
        result = forecast([(p.at, p.value) for p in points], capacity, end)
        out.append((label, points[-1].value, capacity, result))
    return out


async def forecasts(
    session: AsyncSession, principal: Principal, window: str, now: datetime | None = None
) -> list[ForecastItem]:
    window_s = parse_duration(window, "window")
    if window_s > MAX_WINDOW:
        raise InvalidInput(f"window is at most {MAX_WINDOW // 86400}d: older data is not kept")
    when = now or utcnow()
    items: list[ForecastItem] = []
    for src in await sources(session, principal):
        for metric, kind in KIND_OF.items():
            for label, used, capacity, f in await _forecast_series(
                session, src.key, metric, when, window_s
            ):
                full_at = (
                    _epoch(int(when.timestamp() + f.days_left * 86400))
                    if f.days_left is not None
                    else None
                )
                items.append(
                    ForecastItem(
                        kind=kind,
                        source=src.key,
                        name=src.name,
                        label=label,
                        server_id=src.server_id,
                        storage_id=src.storage_id,
                        used=used,
                        capacity=capacity,
                        unit="bytes",
                        growth_per_day=f.growth_per_day,
                        days_left=f.days_left,
                        full_at=full_at,
                        confidence=f.confidence,
                        method=f.method,
                        points_used=f.points_used,
                        trend_since=_epoch(f.since) if f.since is not None else None,
                    )
                )
    items.sort(key=lambda i: (i.days_left is None, i.days_left or 0.0, i.name, i.label))
    return items


async def rows_per_resolution(session: AsyncSession) -> dict[int, int]:
    return await store.count_by_resolution(session)
