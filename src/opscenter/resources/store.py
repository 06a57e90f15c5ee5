"""The time series store in the metadata database: raw samples, 5-minute and 1-hour
rollups (min, max, mean, count), and a retention per resolution, so the table stays
bounded whatever runs.

Rows per source and metric (and label) at a 15 s collection interval, at most:
raw 6 h 5 min / 15 s + 1 = 1461, 5 min for 8 days = 2305, 1 h for 90 days = 2161;
5927 in all (`rows_bound`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    delete,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.models import ResourceSample, RollupMark

RAW = 0
#: (resolution, the resolution it is rolled up from), coarser last.
ROLLUPS = ((300, RAW), (3600, 300))
RESOLUTIONS = (RAW, 300, 3600)
#: How long each resolution is kept, in seconds.
RETENTION = {RAW: 6 * 3600, 300: 8 * 86400, 3600: 90 * 86400}


#: Rollup and pruning run when a round crosses into a new 5-minute bucket, not every round.
MAINTAIN_EVERY = 300


def rows_bound(interval_seconds: float) -> int:
    """The most rows one series keeps at this collection interval."""
    raw = int((RETENTION[RAW] + MAINTAIN_EVERY) // max(interval_seconds, 1)) + 1
    return raw + sum(RETENTION[r] // r + 1 for r, _ in ROLLUPS)


@dataclass(frozen=True)
class Sample:
    metric: str
    value: float
    label: str = ""


class Point(NamedTuple):  # a tuple: a 7-day answer makes thousands of them
    at: int
    value: float
    min: float
    max: float


def _insert(session: AsyncSession) -> Any:
    """An INSERT that skips a row already there (a second process wrote the same instant)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(ResourceSample).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(ResourceSample).on_conflict_do_nothing()
    return insert(ResourceSample)  # pragma: no cover


async def write(
    session: AsyncSession, source: str, team_id: int | None, at: int, samples: Iterable[Sample]
) -> int:
    return await write_round(session, at, [(source, team_id, samples)])


async def write_round(
    session: AsyncSession,
    at: int,
    sources: Iterable[tuple[str, int | None, Iterable[Sample]]],
) -> int:
    """Every source's samples of one round, in one statement."""
    rows = [
        {
            "source": source,
            "team_id": team_id,
            "metric": s.metric,
            "label": s.label,
            "resolution": RAW,
            "at": at,
            "value": s.value,
            "min": s.value,
            "max": s.value,
            "count": 1,
        }
        for source, team_id, samples in sources
        for s in samples
    ]
    if rows:
        await session.execute(_insert(session), rows)
    return len(rows)


def _bucket(column: Any, step: int) -> ColumnElement[int]:
    # Floor division on both backends (`//`; `/` is true division in SQLAlchemy 2);
    # `step` is ours (an int), never user text.
    size = literal_column(str(int(step)), BigInteger)
    bucket: ColumnElement[int] = (column // size) * size
    return bucket


async def _mark(session: AsyncSession, resolution: int) -> int | None:
    return await session.scalar(
        select(RollupMark.done_until).where(RollupMark.resolution == resolution)
    )


async def rollup(session: AsyncSession, now: int) -> None:
    """Roll every finished bucket up into the next resolution, once each."""
    for resolution, finer in ROLLUPS:
        upto = now // resolution * resolution
        mark = await _mark(session, resolution)
        if mark is None:
            first = await session.scalar(
                select(func.min(ResourceSample.at)).where(ResourceSample.resolution == finer)
            )
            if first is None:
                continue
            mark = int(first) // resolution * resolution
            session.add(RollupMark(resolution=resolution, done_until=mark))
            await session.flush()
        if upto <= mark:
            continue
        s = ResourceSample
        bucket = _bucket(s.at, resolution)
        chosen: Any = (
            select(
                s.source,
                func.max(s.team_id),
                s.metric,
                s.label,
                literal_column(str(resolution)),
                bucket,
                func.sum(s.value * s.count) / func.sum(s.count),
                func.min(s.min),
                func.max(s.max),
                func.sum(s.count),
            )
            .where(s.resolution == finer, s.at >= mark, s.at < upto)
            .group_by(s.source, s.metric, s.label, bucket)
        )
        columns = ["source", "team_id", "metric", "label", "resolution", "at"]
        columns += ["value", "min", "max", "count"]
        await session.execute(_insert(session).from_select(columns, chosen))
        await session.execute(
            update(RollupMark).where(RollupMark.resolution == resolution).values(done_until=upto)
        )


async def maintain(session: AsyncSession, now: int, previous: int | None) -> bool:
    """Roll up and prune once per 5-minute bucket (the round before was at `previous`)."""
    if previous is not None and previous // MAINTAIN_EVERY == now // MAINTAIN_EVERY:
        return False
    await rollup(session, now)
    await prune(session, now)
    return True


async def prune(session: AsyncSession, now: int) -> int:
    removed = 0
    for resolution, keep in RETENTION.items():
        result = await session.execute(
            delete(ResourceSample).where(
                ResourceSample.resolution == resolution, ResourceSample.at < now - keep
            )
        )
        removed += result.rowcount or 0  # type: ignore[attr-defined]
    return removed


def resolution_for(step: int) -> int:
    """The coarsest stored resolution no coarser than the step asked for."""
    return max(r for r in RESOLUTIONS if r <= max(step, RAW))


async def history(
    session: AsyncSession,
    source: str,
    metric: str,
    start: int,
    end: int,
    step: int,
    labels: Sequence[str] | None = None,
) -> dict[str, list[Point]]:
    """Points per label, one per step: the chosen resolution where it has been rolled
    up, the raw samples after that (so the newest minutes are there too)."""
    resolution = resolution_for(step)
    s = ResourceSample
    columns = (s.label, s.at, s.value, s.min, s.max, s.count)
    series: tuple[ColumnElement[bool], ...] = (s.source == source, s.metric == metric, s.at <= end)
    if labels:
        series += (s.label.in_(labels),)
    # One index range per tier (source, metric, resolution, at): the rollups up to their
    # watermark, the raw samples after it.
    mark = start if resolution == RAW else (await _mark(session, resolution) or start)
    # Core rows, not ORM ones: a 7-day answer at 5 minutes is 2,000 rows.
    conn = await session.connection()
    out: dict[str, list[Point]] = {}
    parts = [select(*columns).where(*series, s.resolution == RAW, s.at >= max(start, mark))]
    if resolution != RAW:
        tier = (*series, s.resolution == resolution, s.at >= start, s.at < mark)
        if step == resolution:
            # Each rollup is one point already: read in key order, no grouping and no sort
            # (a temp B-tree of every row of the window on SQLite, twice the read).
            for label, at, mean, low, high in await conn.execute(
                select(s.label, s.at, s.value, s.min, s.max).where(*tier).order_by(s.at, s.label)
            ):
                out.setdefault(label, []).append(Point(at, mean, low, high))
        else:
            parts.append(select(*columns).where(*tier))
    rows = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
    bucket = _bucket(rows.c.at, step).label("bucket")
    stmt = (
        select(
            rows.c.label,
            bucket,
            func.sum(rows.c.value * rows.c.count) / func.sum(rows.c.count),
            func.min(rows.c.min),
            func.max(rows.c.max),
        )
        .group_by(rows.c.label, bucket)
        .order_by(rows.c.label, bucket)
    )
    for label, at, mean, low, high in await conn.execute(stmt):
        out.setdefault(label, []).append(Point(int(at), float(mean), float(low), float(high)))
    return dict(sorted(out.items()))


async def latest(
    session: AsyncSession, sources: Sequence[str], since: int
) -> dict[str, tuple[int, list[ResourceSample]]]:
    """Each source's newest round of raw samples (one round shares one instant)."""
    out: dict[str, tuple[int, list[ResourceSample]]] = {}
    for source in sources:
        at = await session.scalar(
            select(func.max(ResourceSample.at)).where(
                ResourceSample.source == source,
                ResourceSample.resolution == RAW,
                ResourceSample.at >= since,
            )
        )
        if at is None:
            continue
        rows = await session.scalars(
            select(ResourceSample)
            .where(
                ResourceSample.source == source,
                ResourceSample.resolution == RAW,
                ResourceSample.at == at,
            )
            .order_by(ResourceSample.metric, ResourceSample.label)
        )
        out[source] = (int(at), list(rows))
    return out


async def count_by_resolution(session: AsyncSession) -> dict[int, int]:
    rows = await session.execute(
        select(ResourceSample.resolution, func.count()).group_by(ResourceSample.resolution)
    )
    return {int(r): int(n) for r, n in rows}
