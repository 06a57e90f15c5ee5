"""Engine and sessions. One session per request; only the request dependency commits."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import Dialect, PoolProxiedConnection, PoolResetState, Select, event, exc, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from opscenter.core import sqlite_driver

#: A pooled connection unused for longer than this is checked before it is handed out.
PING_AFTER_IDLE = 2.0


#: 19 digits in a row: maybe an integer past 64 bits, which orjson would turn into a float.
_LONG_NUMBER = re.compile(r"\d{19}")


def json_loads(text: str) -> Any:
    """JSON columns, decoded by orjson; by the standard library when orjson would refuse
    the text (NaN, which `json.dumps` writes) or could change a number."""
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


class Database:
    """Owns the engine and two session factories.

    SQLite allows one writer: a transaction that reads first and writes later can fail
    with "database is locked" when another writer got in between. Write sessions there
    begin IMMEDIATE, so writers queue on the busy timeout instead of failing.
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = 20,
        pool_timeout: float = 5.0,
        ping_after_idle: float = PING_AFTER_IDLE,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # A request waits at most `pool_timeout` for a connection, then is answered 503
        # (core/handlers.py): overload is refused quickly, never queued for minutes. No
        # overflow: a connection opened is kept. With overflow, a busy process closed a
        # returning connection whenever the pool's idle part was full and opened another a
        # moment later (PostgreSQL: 64 new sessions in 8 s of a loaded list, 4 % of requests
        # paying a connect, and the server a backend start each).
        kwargs: dict[str, Any] = {
            "echo": echo,
            "json_deserializer": json_loads,
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": pool_timeout,
        }
        if self.is_sqlite:
            # Quick reads run on the event loop's thread (`sqlite_driver._quick_read`).
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            kwargs["pool_reset_on_return"] = None  # `_configure_sqlite` resets, if need be
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _ping_when_idle(self.engine, ping_after_idle)
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        # A Session class of its own, so the listeners of `on_commit_changing` hear this
        # database's sessions only (tests run several applications in one process).
        session_class = type("DatabaseSession", (Session,), {})
        self.read_session = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=session_class
        )
        self.write_session = async_sessionmaker(
            writer, expire_on_commit=False, sync_session_class=session_class
        )
        # A safe request's reads: each statement on its own, as READ COMMITTED would see it
        # anyway, without BEGIN and COMMIT round trips (a third of a small list's database
        # time; on SQLite two of its three trips to the driver's thread). Anything that is
        # not a plain SELECT begins a transaction that holds the rest of the session
        # (`_begin_before_writes`, and on SQLite `_configure_sqlite`).
        reader = self.engine.execution_options(**{_READS: True})
        if not self.is_sqlite:
            reader = reader.execution_options(isolation_level="AUTOCOMMIT")
            _begin_before_writes(self.engine)
        self.request_read_session = async_sessionmaker(
            reader, expire_on_commit=False, sync_session_class=session_class
        )
        self._watchers: list[tuple[frozenset[str], Callable[[], None]]] = []
        _listen_for_changes(session_class, self._watchers)

    def on_commit_changing(self, tables: Collection[str], callback: Callable[[], None]) -> None:
        """Call `callback` after each commit of a session of this database that wrote to one
        of `tables`, through the ORM or an UPDATE or DELETE statement. A statement run with
        the execution option `unwatched=True` (a key's last use) is not reported."""
        self._watchers.append((frozenset(tables), callback))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()


_CHANGED = "opscenter.changed_tables"


def _listen_for_changes(
    session_class: type[Session], watchers: list[tuple[frozenset[str], Callable[[], None]]]
) -> None:
    def changed(session: Session) -> set[str]:
        tables: set[str] = session.info.setdefault(_CHANGED, set())
        return tables

    @event.listens_for(session_class, "after_flush")
    def _after_flush(session: Session, _flush: UOWTransaction) -> None:
        for obj in chain(session.new, session.dirty, session.deleted):
            changed(session).add(getattr(obj, "__tablename__", ""))

    @event.listens_for(session_class, "do_orm_execute")
    def _on_execute(state: ORMExecuteState) -> None:
        if (state.is_update or state.is_delete) and not state.execution_options.get("unwatched"):
            table = getattr(state.statement, "table", None)
            changed(state.session).add(getattr(table, "name", ""))

    # A rolled-back change stays noted until the session's next commit: a needless call
    # then costs little, a missed one would keep a stale entry.
    @event.listens_for(session_class, "after_commit")
    def _after_commit(session: Session) -> None:
        if session.in_nested_transaction():  # a savepoint: the outer transaction decides
            return
        tables = session.info.pop(_CHANGED, set())
        for watched, callback in watchers:
            if tables & watched:
                callback()


def _ping_when_idle(engine: AsyncEngine, after: float) -> None:
    """A connection that sat in the pool is pinged before use, so one that the server
    dropped meanwhile (a restart, an idle timeout) is replaced instead of failing the
    request. SQLAlchemy's `pool_pre_ping` pings on every checkout: a round trip per request
    that a busy pool, whose connections were in use a moment ago, does not need."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < after:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            # Every connection pooled before now may be as dead: the pool replaces them all.
            raise exc.InvalidatePoolError(f"ping failed: {error}") from error


_READS = "opscenter_reads"


def _began(driver: Any) -> bool:
    """Whether a request-read connection is in a database transaction: on SQLite one
    begun or about to be (a deferred BEGIN), on PostgreSQL once SQLAlchemy's asyncpg
    adapter has left autocommit (`_begin_before_writes`)."""
    if isinstance(driver, sqlite_driver.OneTripConnection):
        return driver.begin_pending or sqlite_driver.in_transaction(driver)
    return getattr(driver, "isolation_level", None) != "autocommit"


def _begin_before_writes(engine: AsyncEngine) -> None:
    """On a request-read connection (no transaction), a statement that is not a plain
    SELECT (a write, a row lock, SQL text such as `SET LOCAL` or an advisory lock, a
    server-side cursor) begins a transaction first; it then holds every later statement
    of the session, and the session's commit or rollback ends it as usual."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _begin(conn: Any, _cursor: Any, _sql: str, _params: Any, context: Any, _many: bool) -> None:
        if not conn.get_execution_options().get(_READS):
            return
        driver = conn.connection.dbapi_connection  # SQLAlchemy's asyncpg adapter
        if _began(driver):
            return
        if not _plain_select(context):
            driver.isolation_level = "read_committed"  # the next execute sends BEGIN


def _plain_select(context: Any) -> bool:
    """A SELECT that neither writes, locks rows, runs SQL text nor streams."""
    compiled = getattr(context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    return (
        context is not None
        and not (context.is_text or context.isinsert or context.isupdate or context.isdelete)
        and getattr(statement, "_for_update_arg", None) is None
        and not context.execution_options.get("stream_results")
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        sqlite_driver.adopt(dbapi_conn)  # a statement in one trip to the driver's thread
        # Let SQLAlchemy emit BEGIN itself so the write sessions can ask for IMMEDIATE.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    # The pool's rollback of a returning connection is a trip to the driver's thread even
    # after a commit (a quarter of a small request's trips): roll back only a connection
    # that is still in a transaction.
    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
        sqlite_driver.forget_begin(dbapi_conn)
        if state.asyncio_safe and sqlite_driver.in_transaction(dbapi_conn):
            dbapi_conn.rollback()

    # BEGIN rides along with the transaction's first statement (`sqlite_driver`); a safe
    # request's reads begin none at all unless a statement needs one, as on PostgreSQL.
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if not options.get(_READS):
            mode = options.get("sqlite_begin", "")
            conn.connection.dbapi_connection.defer_begin(f"BEGIN {mode}".strip())

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, _sql: str, _params: Any, context: Any, _many: bool) -> None:
        driver = conn.connection.dbapi_connection
        if conn.get_execution_options().get(_READS) and not (
            _began(driver) or _plain_select(context)
        ):
            driver.defer_begin("BEGIN")
        if driver.begin_pending and not isinstance(cursor, sqlite_driver.OneTripCursor):
            driver.begin_now()


class DriverSelect:
    """A plain SELECT of columns that a safe request's session sends to asyncpg itself.

    SQLAlchemy's execute of a statement already compiled and cached still costs about
    twice what asyncpg's own `fetch` does (its execution context, parameter processing,
    cursor adapter, result rows): for the backup list, about 4 % of a request. Here the
    statement is compiled once, each call only binds its values, and asyncpg's records are
    the rows (they index like tuples). That holds only where SQLAlchemy would hand back
    the driver's values untouched, which is decided once from the column types asyncpg
    reports, and only outside a transaction (`request_read_session`), where SQLAlchemy
    would send nothing but the statement either. Anywhere else (SQLite, a transaction, a
    column whose type converts), and after any driver error, SQLAlchemy runs it: errors
    and lost connections are reported and handled on its one path.
    """

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        #: Each column's position by name: the driver's records are read by position.
        self.positions = {name: i for i, name in enumerate(statement.selected_columns.keys())}
        self._compiled: Any = None
        self._direct: bool | None = None  # decided at the first call on PostgreSQL

    async def rows(self, session: AsyncSession, values: dict[str, Any]) -> Sequence[Sequence[Any]]:
        connection = await session.connection()
        if connection.dialect.driver == "asyncpg" and self._direct is not False:
            pooled = _pooled(connection)
            if not _began(pooled.dbapi_connection):
                try:
                    found = await self._fetch(connection.dialect, pooled.driver_connection, values)
                except Exception:  # run again below, where SQLAlchemy reports it
                    found = None
                if found is not None:
                    return found
        rows: Sequence[Sequence[Any]] = (await connection.execute(self.statement, values)).all()
        return rows

    async def _fetch(
        self, dialect: Dialect, driver: Any, values: dict[str, Any]
    ) -> Sequence[Sequence[Any]] | None:
        if self._compiled is None:
            self._compiled = self.statement.compile(dialect=dialect)
        state = self._compiled.construct_expanded_state(values)
        bound, convert = state.parameters, state.processors
        args = [convert[k](bound[k]) if k in convert else bound[k] for k in state.positiontup]
        if self._direct is None:
            prepared = await driver.prepare(state.statement)
            self._direct = all(
                column.type.dialect_impl(dialect).result_processor(dialect, found.type.oid) is None
                for column, found in zip(
                    self.statement.selected_columns, prepared.get_attributes(), strict=True
                )
            )
            if not self._direct:
                return None
        records: Sequence[Sequence[Any]] = await driver.fetch(state.statement, *args)
        return records


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """Commit on success, roll back on any error."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def read_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """`session_scope` for a safe request's session (`request_read_session`): it commits
    only what there is to commit, ORM changes not yet flushed or a transaction that a
    statement began (`_begin_before_writes`; on SQLite `_configure_sqlite`). A session
    that only read has no transaction in the database, and closing it is all its end
    needs: SQLAlchemy's commit and its events cost a list request about 5 % of its CPU."""
    async with factory() as session:
        try:
            yield session
            if session.new or session.dirty or session.deleted or await _session_began(session):
                await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def _session_began(session: AsyncSession) -> bool:
    """Whether a statement of this read session began a database transaction."""
    if not session.in_transaction():
        return False  # no statement ran
    return _began(_pooled(await session.connection()).dbapi_connection)


def _pooled(connection: AsyncConnection) -> PoolProxiedConnection:
    """The pooled DBAPI connection of a connection in use (no trip: it is checked out)."""
    sync = connection.sync_connection
    assert sync is not None
    return sync.connection


def waits_for_writers(session: AsyncSession) -> bool:
    """Whether this session's first statement may wait for another writer: a write
    session on SQLite begins IMMEDIATE, taking the database's one write lock."""
    bind = session.bind
    return (
        isinstance(bind, AsyncEngine)
        and bind.dialect.name == "sqlite"
        and bind.get_execution_options().get("sqlite_begin") == "IMMEDIATE"
    )


async def release(session: AsyncSession) -> None:
    """End the request's transaction before calling out (network, subprocess, storage).

    A write session holds SQLite's one write lock from its first statement (it begins
    IMMEDIATE, and authentication already ran one), and on PostgreSQL the rows it changed
    stay locked: a probe waiting on a silent host would stall every other writer and every
    job heartbeat for as long as it waits. So: read and check, `release`, call out, then
    write; the next statement begins a new short transaction, which the request dependency
    commits as usual. Objects read stay usable (`expire_on_commit=False`), but get a row
    again before changing it: it may have changed or gone while we waited.
    """
    await session.commit()


class AdvisoryLock:
    """PostgreSQL advisory lock keys, one per thing that processes must do one at a time."""

    AUDIT_CHAIN = 0x0A0D17  # appends to the audit trail's hash chain
    STARTUP = 7_460_113_900  # migrations and the first start's seeding
    JOB_QUEUE_SCHEMA = 7_460_113_901  # creating the job engine's tables


async def advisory_xact_lock(session: AsyncSession, key: int) -> None:
    """Wait for `key` on PostgreSQL, held until the transaction ends. SQLite needs none: a
    write transaction already holds its single write lock (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
