"""SQLite statements in one trip to the connection's thread.

aiosqlite runs each connection's calls on a thread of its own; every call is a wake-up of
that thread and a hand-back to the event loop, and each waits for the interpreter lock.
SQLAlchemy's aiosqlite cursor makes four such trips per statement: open a cursor, execute,
fetch the rows, close. On a loaded process the hand-offs were most of SQLite's cost: a
list request made nine, a scheduler's fired slot about thirty. `OneTripCursor` does the
four steps in one trip. `adopt` gives it to a connection as the pool opens it.

A transaction's BEGIN rides along with its first statement (`OneTripConnection.defer_begin`),
and a COMMIT or ROLLBACK with nothing begun takes no trip: a small request's transaction
is then one trip for its statement and one for its end, not three.

A plain SELECT takes no trip at all while it is quick: it runs on the calling thread, the
event loop's, for at most `LOOP_READ_SECONDS` (a progress handler looks at the clock). One
that runs longer is stopped there and run again on the connection's thread, and its
statement goes there directly from then on (`_slow`). A page of a list is a fraction of a
millisecond of SQLite's own work; its trip cost the interpreter lock twice and the loop a
wake-up, about a third of the request's CPU. The connection is opened with
`check_same_thread=False`: SQLite is built serialized, and a connection is never used by
two threads at once here (the adapter's mutex holds for the statement). In WAL mode a
reader does not wait for a writer, so nothing sleeps on the loop (only the recovery of a
crashed database's WAL index makes readers wait, at the first open).

Both libraries are pinned: this reads aiosqlite's `_execute` and `_conn`, as SQLAlchemy's
own adapter does, and keeps SQLAlchemy's cursor contract (rows in `_rows`,
`description`, `rowcount`, `lastrowid`); `tests/core/test_sqlite_driver.py` holds both.
"""

from __future__ import annotations

import collections
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from cachetools import LRUCache
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.util import EMPTY_DICT

Outcome = tuple[list[Any], Any, int, int | None]


def _run(
    raw: sqlite3.Connection, operation: str, parameters: Any, many: bool, begin: str | None
) -> Outcome:
    """On the connection's thread: the deferred BEGIN if any, then the whole statement, the
    cursor closed after it."""
    cursor = raw.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return rows, cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


#: How long a plain read may hold the event loop before it is moved to the driver's thread.
LOOP_READ_SECONDS = 0.002
_CHECK_EVERY = 1000  # SQLite VM instructions between two looks at the clock
#: Statements that outran `LOOP_READ_SECONDS` once: they go to the driver's thread.
_slow: LRUCache[str, bool] = LRUCache(1024)


def _quick_read(raw: sqlite3.Connection, operation: str, parameters: Any) -> Outcome | None:
    """A plain read on this thread; None if it ran past `LOOP_READ_SECONDS` (stopped, its
    statement noted as slow, nothing changed: a stopped SELECT rolls nothing back)."""
    deadline = time.perf_counter() + LOOP_READ_SECONDS
    raw.set_progress_handler(lambda: time.perf_counter() > deadline, _CHECK_EVERY)
    in_transaction = raw.in_transaction
    try:
        return _run(raw, operation, parameters, False, None)
    except sqlite3.OperationalError as error:
        if str(error) != "interrupted" or raw.in_transaction != in_transaction:
            raise
        _slow[operation] = True
        return None
    finally:
        raw.set_progress_handler(None, 0)


def _plain_read(operation: Any) -> bool:
    return (
        isinstance(operation, str) and operation[:7].upper() == "SELECT " and operation not in _slow
    )


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statements each take one trip to the connection's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:  # no cursor opened in advance
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _trip(self, operation: Any, parameters: Any, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            connection = self._connection
            begin, connection.begin_first = connection.begin_first, None
            outcome = None
            if begin is None and not many and _plain_read(operation):
                outcome = _quick_read(connection._conn, operation, parameters)
            if outcome is None:
                outcome = await connection._execute(
                    _run, connection._conn, operation, parameters, many, begin
                )
            rows, self._description, self._rowcount, self._lastrowid = outcome
            self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._trip(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> None:
        await self._trip(operation, seq_of_parameters, True)

    async def _async_soft_close(self) -> None:
        return  # nothing stays open: the rows are already here

    def close(self) -> None:
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """The deferred BEGIN waits on the aiosqlite connection (`begin_first`): the adapter
    has slots, and `adopt` can only swap its class for one of the same layout."""

    __slots__ = ()
    _cursor_cls = OneTripCursor

    def defer_begin(self, sql: str) -> None:
        """Send `sql` (a BEGIN) in the trip of the next statement."""
        self._connection.begin_first = sql

    @property
    def begin_pending(self) -> bool:
        return self._connection.begin_first is not None

    def begin_now(self) -> None:
        """Send a deferred BEGIN at once (before a statement that is not ours: a streamed
        read's server-side cursor)."""
        begin, self._connection.begin_first = self._connection.begin_first, None
        if begin is not None:
            self.cursor().execute(begin)

    def _nothing_begun(self) -> bool:
        if self.begin_pending:
            self._connection.begin_first = None
            return True
        return not self._connection._conn.in_transaction

    def commit(self) -> None:
        if not self._nothing_begun():
            super().commit()

    def rollback(self) -> None:
        if not self._nothing_begun():
            super().rollback()


def in_transaction(dbapi_connection: Any) -> bool:
    """Whether SQLite holds a transaction open on this connection (read without a trip)."""
    return bool(dbapi_connection._connection._conn.in_transaction)


def forget_begin(dbapi_connection: Any) -> None:
    """A deferred BEGIN whose transaction ran no statement: nothing to end, nothing to send."""
    dbapi_connection._connection.begin_first = None


def adopt(dbapi_connection: Any) -> None:
    """From the pool's `connect` event: give the new connection the one-trip cursor
    (server-side cursors, for streamed reads, stay the library's own)."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneTripConnection
        dbapi_connection._connection.begin_first = None
