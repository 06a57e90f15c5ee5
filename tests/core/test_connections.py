"""The engine's connections: a pooled connection that the server dropped while it sat idle
is replaced before use; JSON columns read back as they were written; timestamps read back
as the UTC instants they were; a checked token's claims are remembered only while the
token is valid."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.db import Database, json_loads
from opscenter.core.security import Keyring
from opscenter.models.base import UtcDateTime


async def test_a_connection_dropped_while_idle_is_replaced_not_failed(pg_database: str) -> None:
    db = Database(pg_database, pool_size=1, ping_after_idle=0.2)
    try:
        async with db.engine.connect() as conn:
            first = await conn.scalar(text("SELECT pg_backend_pid()"))
        # The server ends the pooled connection (a restart, an idle timeout, an admin).
        async with db.engine.connect() as conn:  # the same pooled connection, not idle yet
            assert await conn.scalar(text("SELECT pg_backend_pid()")) == first
        killer = Database(pg_database, pool_size=1)
        try:
            async with killer.engine.connect() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        finally:
            await killer.dispose()
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


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_timestamps_read_back_as_utc_whatever_the_session_time_zone(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On PostgreSQL asyncpg's own decoding is trusted to answer UTC (UtcDateTime adds no
    call per value there): a session in another time zone must not change the answer."""
    url = (
        request.getfixturevalue("pg_database")
        if backend == "postgres"
        else f"sqlite+aiosqlite:///{tmp_path / 'utc.db'}"
    )
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
