"""SQLite statements take one trip to aiosqlite's thread, quick reads none
(`core/sqlite_driver.py`), and keep the cursor contract SQLAlchemy relies on: rows, column
names, row counts, the inserted row's id, errors as SQLAlchemy's own, streamed reads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from opscenter.core import sqlite_driver
from opscenter.core.db import Database

meta = MetaData()
things = Table(
    "things",
    meta,
    Column("id", Integer, primary_key=True),
    Column("name", String(20), unique=True, nullable=False),
)


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}", pool_size=2)
    async with database.engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    yield database
    await database.dispose()


def count_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    trips: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return trips


async def test_a_statement_is_one_trip_to_the_driver_thread_and_a_quick_read_none(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(insert(things), [{"name": "a"}, {"name": "b"}])
        trips = count_trips(monkeypatch)
        await conn.execute(update(things).where(things.c.id == 2).values(name="c"))
        assert len(trips) == 1, trips  # was four: cursor, execute, fetchall, close
        rows = (await conn.execute(select(things).order_by(things.c.id))).all()
        assert len(trips) == 1, trips  # on the event loop's thread: none
        assert [tuple(r) for r in rows] == [(1, "a"), (2, "c")]  # in the same transaction
        await conn.rollback()


async def test_a_slow_read_is_moved_to_the_driver_thread(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that outruns LOOP_READ_SECONDS on the event loop is stopped there, answered
    from the driver's thread all the same, and sent there directly from then on; stopping
    it undoes nothing of the transaction it reads in."""
    async with db.write_session() as session:
        await session.execute(insert(things), [{"name": f"n{i}"} for i in range(150)])
        await session.commit()
    slow = text("SELECT count(*) FROM things a, things b, things c WHERE a.id > :floor")
    tried_here: list[str] = []
    quick_read = sqlite_driver._quick_read

    def counted(raw: Any, operation: str, parameters: Any) -> Any:
        tried_here.append(operation)
        return quick_read(raw, operation, parameters)

    monkeypatch.setattr(sqlite_driver, "_quick_read", counted)
    trips = count_trips(monkeypatch)
    async with db.write_session() as session:
        await session.execute(insert(things).values(name="kept"))
        started = time.perf_counter()
        assert await session.scalar(slow, {"floor": 0}) == 151**3
        assert time.perf_counter() - started > sqlite_driver.LOOP_READ_SECONDS
        assert len(tried_here) == 1 and trips == ["_run", "_run"], (tried_here, trips)
        assert await session.scalar(slow, {"floor": 1}) == 150 * 151**2
        assert len(tried_here) == 1 and trips == ["_run", "_run", "_run"], (tried_here, trips)
        assert await session.scalar(select(things.c.id).where(things.c.name == "kept"))
        assert len(tried_here) == 2  # another statement: quick, on the loop
        await session.commit()
    async with db.read_session() as session:
        assert await session.scalar(select(func.count()).select_from(things)) == 151


async def test_the_cursor_contract_holds(db: Database) -> None:
    async with db.engine.connect() as conn:
        result = await conn.execute(insert(things).values(name="first"))
        assert result.inserted_primary_key == (1,)  # lastrowid
        many = await conn.execute(insert(things), [{"name": f"n{i}"} for i in range(5)])
        assert many.rowcount == 5
        changed = await conn.execute(
            update(things).where(things.c.name.like("n%")).values(name=things.c.name + "x")
        )
        assert changed.rowcount == 5
        columns = await conn.execute(text("SELECT id AS ident, name FROM things ORDER BY id"))
        assert list(columns.keys()) == ["ident", "name"]
        assert [r.name for r in columns] == ["first", *(f"n{i}x" for i in range(5))]
        assert (await conn.execute(select(things).where(things.c.id == 99))).first() is None
        await conn.commit()

    async with db.engine.connect() as conn:
        with pytest.raises(IntegrityError):
            await conn.execute(insert(things).values(name="first"))
        await conn.rollback()
        with pytest.raises(OperationalError):
            await conn.execute(text("SELECT nope FROM things"))
        await conn.rollback()
        # The connection is still good after both.
        assert await conn.scalar(select(things.c.name).where(things.c.id == 1)) == "first"


async def test_a_streamed_read_and_a_session_still_work(db: Database) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(insert(things), [{"name": f"s{i}"} for i in range(300)])
        await conn.commit()
        streamed = await conn.stream(select(things.c.name).order_by(things.c.id))
        names = [row.name async for row in streamed]
        assert names == [f"s{i}" for i in range(300)]
    async with db.write_session() as session:
        await session.execute(update(things).where(things.c.id == 1).values(name="renamed"))
        await session.commit()
    async with db.read_session() as session:
        assert await session.scalar(select(things.c.name).where(things.c.id == 1)) == "renamed"


async def test_a_connection_returned_in_a_transaction_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool no longer rolls back every returning connection (a trip each, even after a
    commit); one that comes back still in a transaction, holding SQLite's write lock, is
    rolled back all the same."""
    from opscenter.core import sqlite_driver

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'reset.db'}", pool_size=1)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(meta.create_all)
        trips = count_trips(monkeypatch)
        async with db.write_session() as session:
            await session.execute(insert(things).values(name="kept"))
            await session.commit()
        assert "rollback" not in trips, trips  # committed: nothing to roll back
        conn = await db.engine.connect()
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute("BEGIN IMMEDIATE")  # behind SQLAlchemy's back
        await raw.driver_connection.execute("INSERT INTO things (name) VALUES ('lost')")
        returned = raw.dbapi_connection
        assert sqlite_driver.in_transaction(returned)
        await conn.close()
        async with db.engine.connect() as again:  # the same connection: a pool of one
            again_raw = await again.get_raw_connection()
            assert again_raw.dbapi_connection is returned
            assert not sqlite_driver.in_transaction(again_raw.dbapi_connection)
            names = (await again.execute(select(things.c.name))).scalars().all()
            assert names == ["kept"]
    finally:
        await db.dispose()


async def test_begin_rides_with_the_first_statement_and_reads_begin_none(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write transaction is one trip for its statement (its BEGIN IMMEDIATE rides along)
    and one for its COMMIT; one that ran nothing takes none. A safe request's plain reads
    take no trip and hold no transaction (as on PostgreSQL); a write in such a session
    begins one, which its commit or rollback ends as usual."""
    trips = count_trips(monkeypatch)
    async with db.write_session() as session:
        await session.execute(insert(things).values(name="w1"))
        raw = (await session.connection()).sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        assert raw._connection._conn.in_transaction  # BEGIN did run
        await session.commit()
    assert trips == ["_run", "commit"], trips
    trips.clear()
    async with db.write_session() as session:
        await session.connection()
        await session.commit()
    assert trips == [], trips

    async with db.request_read_session() as session:
        assert await session.scalar(select(things.c.name)) == "w1"
        raw = (await session.connection()).sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        assert not raw._connection._conn.in_transaction
        await session.commit()
    assert trips == [], trips  # a quick read runs on the event loop's thread

    async with db.request_read_session() as session:
        await session.execute(insert(things).values(name="kept"))
        await session.commit()
    async with db.request_read_session() as session:
        await session.execute(insert(things).values(name="undone"))
        assert await session.scalar(select(things.c.name).where(things.c.name == "undone"))
        await session.rollback()
    async with db.read_session() as session:
        names = (await session.scalars(select(things.c.name).order_by(things.c.id))).all()
    assert names == ["w1", "kept"]


async def test_a_streamed_read_first_in_a_write_transaction(db: Database) -> None:
    """A server-side cursor is not ours: the deferred BEGIN IMMEDIATE goes first, alone, so
    the stream reads inside the transaction that holds the write lock."""
    async with db.write_session() as session:
        await session.execute(insert(things), [{"name": f"r{i}"} for i in range(3)])
        await session.commit()
    async with db.write_session() as session:
        streamed = await session.stream(select(things.c.name).order_by(things.c.id))
        names = [row.name async for row in streamed]
        raw = (await session.connection()).sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        assert raw._connection._conn.in_transaction
        await session.execute(insert(things).values(name="after"))
        await session.commit()
    assert names == ["r0", "r1", "r2"]
