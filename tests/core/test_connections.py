"""The engine's connections: a pooled connection that the server dropped while it sat idle
is replaced before use; JSON columns read back as they were written; timestamps read back
as the UTC instants they were; a checked token's claims are remembered only while the
token is valid; a plain SELECT sent to asyncpg itself reads and fails as SQLAlchemy's."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    Numeric,
    Select,
    String,
    Table,
    bindparam,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import as_utc
from opscenter.core.db import Database, DriverSelect, json_loads, read_scope
from opscenter.core.jsonresponse import as_stored
from opscenter.core.security import Keyring
from opscenter.models.base import UtcDateTime


async def _terminate(pg_database: str, pid: int) -> None:
    """The server ends a backend, as a restart, an idle timeout or an admin would."""
    killer = Database(pg_database, pool_size=1)
    try:
        async with killer.engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await killer.dispose()


async def test_a_connection_dropped_while_idle_is_replaced_not_failed(pg_database: str) -> None:
    db = Database(pg_database, pool_size=1, ping_after_idle=0.2)
    try:
        async with db.engine.connect() as conn:
            first = await conn.scalar(text("SELECT pg_backend_pid()"))
        # The server ends the pooled connection (a restart, an idle timeout, an admin).
        async with db.engine.connect() as conn:  # the same pooled connection, not idle yet
            assert await conn.scalar(text("SELECT pg_backend_pid()")) == first
        await _terminate(pg_database, first)
        await asyncio.sleep(0.3)
        async with db.engine.connect() as conn:
            again = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert again != first
    finally:
        await db.dispose()


async def test_a_busy_connection_is_not_pinged(pg_database: str) -> None:
    db = Database(pg_database, pool_size=1, ping_after_idle=60)
    pings = 0
    try:
        original = db.engine.dialect.do_ping

        def counting(conn: Any) -> bool:
            nonlocal pings
            pings += 1
            return original(conn)

        db.engine.dialect.do_ping = counting  # type: ignore[method-assign,assignment]
        for _ in range(5):
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert pings == 0
        db_idle = Database(pg_database, pool_size=1, ping_after_idle=0)
        try:
            db_idle.engine.dialect.do_ping = counting  # type: ignore[method-assign,assignment]
            for _ in range(3):
                async with db_idle.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            assert pings == 2  # every checkout but the fresh connection's first
        finally:
            await db_idle.dispose()
    finally:
        await db.dispose()


def _database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The run's PostgreSQL database, or a SQLite file of this test's own."""
    if backend == "postgres":
        url: str = request.getfixturevalue("pg_database")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_timestamps_read_back_as_utc_whatever_the_session_time_zone(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On PostgreSQL asyncpg's own decoding is trusted to answer UTC (UtcDateTime adds no
    call per value there): a session in another time zone must not change the answer."""
    url = _database_url(backend, request, tmp_path)
    table = Table(
        "instants", MetaData(), Column("id", Integer, primary_key=True), Column("at", UtcDateTime())
    )
    written = datetime(2026, 3, 29, 0, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=5)))
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
            if backend == "postgres":
                await conn.execute(text("SET TIME ZONE 'America/New_York'"))
            await conn.execute(insert(table), [{"at": written}, {"at": None}])
            rows = (await conn.execute(select(table.c.at).order_by(table.c.id))).scalars().all()
        assert rows == [written, None]
        assert rows[0].tzinfo is UTC and rows[0].hour == 19 and rows[0].day == 28
    finally:
        await db.dispose()


def test_json_columns_read_what_the_standard_library_wrote() -> None:
    assert json_loads('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert json_loads('{"k": "\\u00e9t\u00e9", "n": -9223372036854775808}') == {
        "k": "\u00e9t\u00e9",
        "n": -9223372036854775808,
    }
    # What json.dumps writes and orjson refuses.
    assert math.isnan(json_loads('{"v": NaN}')["v"])
    assert json_loads("[123456789012345678901234567890]") == [123456789012345678901234567890]
    assert json_loads('["\\ud800"]') == ["\ud800"]  # a lone surrogate, as json.dumps writes


def test_token_claims_are_remembered_only_while_valid(tmp_path: Path) -> None:
    keyring = Keyring.load_or_create(tmp_path, None)
    token, _ = keyring.issue_jwt({"sub": "1", "typ": "access"}, timedelta(seconds=2))
    claims = keyring.claims_or_none(token)
    assert claims is not None and claims["sub"] == "1"
    assert keyring.claims_or_none(token) is claims  # checked once
    # A token with one character changed is checked, and refused, on its own.
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert keyring.claims_or_none(tampered) is None
    time.sleep(2.1)
    assert keyring.claims_or_none(token) is None  # expired: no longer accepted from memory
    other = Keyring.load_or_create(tmp_path / "other", None)
    assert other.claims_or_none(token) is None  # another keyring knows nothing of it


async def test_request_reads_run_without_a_transaction_until_something_writes(
    pg_database: str,
) -> None:
    db = Database(pg_database, pool_size=1)

    async def one_transaction(session: AsyncSession) -> bool:
        """now() is the transaction's start: equal twice only within one transaction."""
        first = await session.scalar(select(func.now()))
        await asyncio.sleep(0.01)
        return bool(first == await session.scalar(select(func.now())))

    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE reads_first (id int PRIMARY KEY)"))
        async with db.request_read_session() as session:
            assert not await one_transaction(session)  # each SELECT on its own
            # SQL text begins a transaction that holds the rest of the session.
            await session.execute(text("SET LOCAL statement_timeout = '1234ms'"))
            assert await session.scalar(text("SHOW statement_timeout")) == "1234ms"
            assert await one_transaction(session)
            await session.commit()
        # A write, then a failing one: neither is kept.
        async with db.request_read_session() as session:
            assert not await one_transaction(session)
            await session.execute(insert(_reads_first).values(id=1))
            with pytest.raises(IntegrityError):
                await session.execute(insert(_reads_first).values(id=1))
            await session.rollback()
        async with db.request_read_session() as session:
            await session.execute(insert(_reads_first).values(id=2))
            await session.execute(insert(_reads_first).values(id=3))
            assert await one_transaction(session)
            await session.rollback()
            assert await session.scalar(select(func.count()).select_from(_reads_first)) == 0
        # The connection went back to the pool as it came: the next session reads bare.
        async with db.request_read_session() as session:
            assert not await one_transaction(session)
            rows = await session.stream(  # a server-side cursor, which needs a transaction
                select(_reads_first.c.id).execution_options(yield_per=10)
            )
            assert [r async for r in rows] == []
        async with db.read_session() as session:  # the jobs' reader keeps its transaction
            assert await one_transaction(session)
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS reads_first"))
        await db.dispose()


_reads_first = Table("reads_first", MetaData(), Column("id", Integer, primary_key=True))


async def test_every_connection_the_pool_opened_is_kept(pg_database: str) -> None:
    """A busy process once closed a returning connection whenever the pool's idle part was
    full (the overflow), and opened another a moment later: a connect, and a backend start
    on the server, for one request in 25 of a loaded list. The pool now holds at most its
    size, and keeps what it opened."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    db = Database(pg_database, pool_size=3, pool_timeout=0.2)

    async def all_the_pool_gives() -> list[int]:
        held = []
        try:
            while True:
                conn = await db.engine.connect()
                held.append(conn)
                if len(held) > 10:
                    break
        except PoolTimeout:
            pass
        try:
            return [await conn.scalar(text("SELECT pg_backend_pid()")) for conn in held]
        finally:
            for conn in held:
                await conn.close()

    try:
        first = await all_the_pool_gives()
        assert len(first) == 3
        assert sorted(await all_the_pool_gives()) == sorted(first)
    finally:
        await db.dispose()


_readings = Table(
    "driver_readings",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("team_id", Integer),
    Column("at", UtcDateTime()),
    Column("doc", JSON),
    Column("note", String),
    Column("ratio", Numeric(10, 2, asdecimal=False)),
)
_READINGS = [
    {
        "id": i,
        "team_id": i % 3,
        "at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i),
        "doc": {"n": i, "tags": ["a", "b"]},
        "note": None if i % 4 == 0 else f"note {i}",
        "ratio": i / 4,
    }
    for i in range(1, 41)
]


@pytest.fixture(params=["sqlite", "postgres"])
async def readings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(_database_url(request.param, request, tmp_path), pool_size=2)
    async with db.engine.begin() as conn:
        await conn.run_sync(_readings.metadata.create_all)
        await conn.execute(insert(_readings), _READINGS)
    try:
        yield db
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(_readings.metadata.drop_all)
        await db.dispose()


def _filtered(columns: list[Any]) -> Select[Any]:
    t = _readings.c
    return (
        select(*columns)
        .where(t.team_id.in_(bindparam("teams", expanding=True)))
        .where(t.at >= bindparam("since"))
        .order_by(t.id.desc())
        .limit(bindparam("size"))
    )


async def _both_ways(db: Database, page: DriverSelect, values: dict[str, Any]) -> tuple[Any, Any]:
    async with db.request_read_session() as session:
        found = await page.rows(session, values)
    async with db.request_read_session() as session:
        expected = (await (await session.connection()).execute(page.statement, values)).all()
    return found, expected


async def test_a_driver_select_reads_what_sqlalchemy_reads(readings: Database) -> None:
    """Expanded IN, a converted parameter (an instant in another zone) and nulls: the
    same rows, on PostgreSQL from asyncpg itself."""
    t = _readings.c
    page = DriverSelect(_filtered([t.id, t.team_id, as_stored(t.at), t.note]))
    since = datetime(2026, 1, 1, 15, tzinfo=timezone(timedelta(hours=5)))  # 10:00 UTC
    for teams in ([0], [1, 2], [0, 1, 2]):
        values = {"teams": teams, "since": since, "size": 7}
        found, expected = await _both_ways(readings, page, values)
        assert [tuple(r) for r in found] == [tuple(r) for r in expected]
        assert len(found) == 7 and all(r[1] in teams and as_utc(r[2]) >= since for r in found)
    direct = readings.dialect == "postgresql"
    assert page._direct is (True if direct else None)
    assert type(found[0]).__name__ == ("Record" if direct else "Row")


async def test_a_driver_select_leaves_converting_columns_to_sqlalchemy(
    readings: Database,
) -> None:
    """A numeric column read as float: asyncpg answers a Decimal, which SQLAlchemy
    converts. (JSON needs nothing: SQLAlchemy gives asyncpg its decoder.)"""
    t = _readings.c
    values = {"teams": [0, 1, 2], "since": datetime(2026, 1, 1, tzinfo=UTC), "size": 3}
    as_is = DriverSelect(_filtered([t.id, t.doc]))
    converted = DriverSelect(_filtered([t.id, t.ratio]))
    postgres = readings.dialect == "postgresql"
    for page, first in ((as_is, {"n": 40, "tags": ["a", "b"]}), (converted, 10.0)):
        found, expected = await _both_ways(readings, page, values)
        assert [tuple(r) for r in found] == [tuple(r) for r in expected]
        assert found[0][1] == first
        assert type(found[0][1]) is type(first) or not postgres  # SQLite answers 10
    assert (as_is._direct, converted._direct) == ((True, False) if postgres else (None, None))


async def test_a_driver_select_in_a_transaction_is_sqlalchemys(pg_database: str) -> None:
    """A write session's reads stay in its transaction: SQLAlchemy runs them, and they
    see the session's own uncommitted rows."""
    db = Database(pg_database, pool_size=1)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_readings.metadata.create_all)
        page = DriverSelect(select(_readings.c.id).order_by(_readings.c.id))
        async with db.write_session() as session:
            await session.execute(insert(_readings).values(id=1, team_id=0))
            found = await page.rows(session, {})
            assert [tuple(r) for r in found] == [(1,)]
            assert type(found[0]).__name__ == "Row"
            await session.rollback()
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(_readings.metadata.drop_all)
        await db.dispose()


async def test_a_driver_select_on_a_lost_connection_fails_as_sqlalchemy_would(
    pg_database: str,
) -> None:
    """The server ends the connection mid-request: the error is SQLAlchemy's, the pool
    drops that connection, and the next request reads."""
    db = Database(pg_database, pool_size=1, ping_after_idle=60)
    page = DriverSelect(select(func.pg_backend_pid()))
    try:
        async with db.request_read_session() as session:
            first = (await page.rows(session, {}))[0][0]
            await _terminate(pg_database, first)
            with pytest.raises(DBAPIError) as lost:
                await page.rows(session, {})
            assert lost.value.connection_invalidated
        async with db.request_read_session() as session:
            again = (await page.rows(session, {}))[0][0]
        assert again != first
    finally:
        await db.dispose()


async def test_a_read_scope_commits_what_was_written_and_only_that(readings: Database) -> None:
    """A safe request's session commits when it wrote (ORM or statement), not when it
    only read; a failure rolls back."""
    commits = 0

    def counted(_session: Any) -> None:
        nonlocal commits
        commits += 1

    session_class = readings.request_read_session.kw["sync_session_class"]
    event.listen(session_class, "after_commit", counted)
    t = _readings.c
    read = select(func.count()).select_from(_readings)
    try:
        async for session in read_scope(readings.request_read_session):
            assert await session.scalar(read) == 40
            await DriverSelect(select(t.id).where(t.id == bindparam("id"))).rows(session, {"id": 1})
        assert commits == 0
        async for session in read_scope(readings.request_read_session):
            await session.execute(insert(_readings).values(id=41, team_id=0))
        async for session in read_scope(readings.request_read_session):
            await session.execute(update(_readings).where(t.id == 1).values(note="changed"))
        assert commits == 2
        with pytest.raises(RuntimeError):
            async for session in read_scope(readings.request_read_session):
                await session.execute(insert(_readings).values(id=42, team_id=0))
                raise RuntimeError("the route failed")
        async for session in read_scope(readings.request_read_session):
            assert await session.scalar(read) == 41
            assert await session.scalar(select(t.note).where(t.id == 1)) == "changed"
    finally:
        event.remove(session_class, "after_commit", counted)


async def test_a_read_scope_commits_objects_added_but_not_flushed(tmp_path: Path) -> None:
    from opscenter.models import Team

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'orm.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(Team.__table__.create)  # type: ignore[attr-defined]
        async for session in read_scope(db.request_read_session):
            session.add(Team(name="added in a GET"))
        async with db.read_session() as session:
            assert await session.scalar(select(Team.name)) == "added in a GET"
    finally:
        await db.dispose()
