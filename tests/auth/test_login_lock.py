"""A login checks the password (argon2, a few hundred ms of CPU) outside its transaction:
on SQLite a write session holds the one write lock from its first statement, so a login
that hashed inside it stalled every other writer (job heartbeats, backup progress) as long."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from opscenter.core.security import hash_password, verify_password
from tests.conftest import Api, UserFactory


def _longest_wait_for_the_write_lock(path: str, stop: threading.Event) -> float:
    """Take and give back SQLite's write lock every few ms until `stop`; the longest time
    between two successful takes."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    longest, last = 0.0, time.monotonic()
    try:
        while not stop.is_set():
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("COMMIT")
            except sqlite3.OperationalError:  # locked: somebody else writes
                pass
            else:
                now = time.monotonic()
                longest, last = max(longest, now - last), now
            time.sleep(0.003)
    finally:
        conn.close()
    return longest


async def test_a_login_holds_no_write_lock_while_it_checks_the_password(
    api: Api, make_user: UserFactory
) -> None:
    if api.backend != "sqlite":
        pytest.skip("PostgreSQL takes no lock to read the user")
    user = await make_user("viewer")
    stored = hash_password(user.password)
    started = time.monotonic()
    assert await asyncio.to_thread(verify_password, stored, user.password)
    one_check = time.monotonic() - started

    path = api.settings.effective_database_url.split("///", 1)[1]
    stop = threading.Event()
    probe = asyncio.create_task(asyncio.to_thread(_longest_wait_for_the_write_lock, path, stop))
    try:
        await asyncio.sleep(0.05)
        for _ in range(4):
            await api.login(user.username, user.password)
    finally:
        stop.set()
    longest = await probe
    # Inside the transaction, each login kept the lock for a whole check.
    assert longest < one_check / 2, (longest, one_check)
