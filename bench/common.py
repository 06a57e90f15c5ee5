"""What the benchmark scripts share: a throwaway database, the app in-process with an admin
client, timing and memory figures, and the way a figure is printed against its limit.

Imported by the scripts of this folder as ``from common import ...`` (a script run as
``.venv/bin/python bench/<name>.py`` has bench/ first on its path). Importing it also puts
the checkout's src/ on the path, so the scripts run the code of this checkout. The app
and the database layer are imported inside the functions that need them: a bench that
measures memory does not load more than it uses.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from fastapi import FastAPI

    from opscenter.core.db import Database

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

PASSWORD = "bench-password-1"  # the admin's, in the apps the benches start
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-X", "-qAt", "-v", "ON_ERROR_STOP=1"]


# The database


def psql(db: str, sql: str) -> str:
    """Runs SQL in `db` as the superuser (trust on 127.0.0.1), stopping at the first error:
    the benches fill their tables with one INSERT ... SELECT, far faster than the ORM.
    Returns the output, unaligned and without headers (a single value reads as it is);
    psql's errors go to the terminal, so a failing fill says why."""
    out = subprocess.run(
        [*PSQL, "-d", db, "-c", sql], check=True, stdout=subprocess.PIPE, text=True
    )
    return out.stdout.strip()


@contextmanager
def scratch_database(prefix: str = "oc_bench") -> Iterator[str]:
    """An empty PostgreSQL database of a fresh name for the block, dropped after it even
    if the app still holds connections: a run, failed or not, leaves nothing behind."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    psql("postgres", f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_url(name: str) -> str:
    """The app's URL of a database of the local PostgreSQL server."""
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


@contextmanager
def sqlite_url() -> Iterator[str]:
    """The app's URL of a SQLite file in a temporary directory, removed after the block."""
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite+aiosqlite:///{tmp}/bench.db"


@asynccontextmanager
async def migrated(url: str) -> AsyncIterator[Database]:
    """The app's database layer on `url`, migrated as the app would at start (the benches
    that call the code under test directly, without the HTTP stack), disposed after."""
    from opscenter.bootstrap import migrate
    from opscenter.core.db import Database

    db = Database(url)
    try:
        await asyncio.to_thread(migrate, url)
        gc.freeze()  # as a started server does (runtime.running): no full collection walks it
        yield db
    finally:
        await db.dispose()


# The app


@asynccontextmanager
async def running_app(database_url: str | None = None, **settings: Any) -> AsyncIterator[FastAPI]:
    """The whole app in this process, started (migrations, the admin account) for the
    block and stopped after, on a temporary data directory. The rate limit, the health
    checks and the scheduler loop are off: they would throttle the timed requests or
    compete with them. `settings` adds to or overrides these."""
    from opscenter.app import create_app
    from opscenter.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        values: dict[str, Any] = {
            "OPSCENTER_DATA_DIR": Path(tmp),
            "OPSCENTER_ADMIN_PASSWORD": PASSWORD,
            "OPSCENTER_RATE_LIMIT_ENABLED": False,
            "OPSCENTER_LOG_LEVEL": "WARNING",
            "OPSCENTER_HEALTH_INTERVAL": 0,
            "OPSCENTER_SCHEDULER_INTERVAL": 0,
        }
        if database_url is not None:
            values["DATABASE_URL"] = database_url
        app = create_app(Settings(_env_file=None, **(values | settings)))  # type: ignore[call-arg]
        async with app.router.lifespan_context(app):
            yield app


@asynccontextmanager
async def admin_client(
    app: FastAPI, base_url: str = "http://b"
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that calls `app` in-process (no sockets: only the app's own time is
    measured), logged in as the admin, who sees every team."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        r = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
        )
        r.raise_for_status()
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield client


# Figures


def percentile(samples: list[float], share: float) -> float:
    """The sample below which `share` of them lie (0.99: the p99), without interpolation:
    a figure that some request really took."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def time_requests(
    call: Callable[[int], Awaitable[httpx.Response]], n: int, warm: int
) -> tuple[list[float], httpx.Response]:
    """`n` calls timed one after the other, in milliseconds, after `warm` calls untimed
    (they fill the connection pool and the caches, which a running app has). Each must
    succeed; the call gets its index. Returns the times and the last response."""
    for i in range(min(warm, n)):
        (await call(i)).raise_for_status()
    samples = []
    r = None
    for i in range(n):
        started = time.perf_counter()
        r = await call(i)
        samples.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
    assert r is not None
    return samples, r


def limit_ratio(figure: float, limit: float, unit: str) -> str:
    """`limit ... ratio ...`, the tail of a line that states a figure against its limit
    (a ratio above 1 is over it)."""
    return f"limit {limit:.0f} {unit}  ratio {figure / limit:.2f}"


def against_floor(
    seconds: float, floor: float, limit: float, digits: int = 2, width: int = 7
) -> str:
    """A time against the floor measured in the same run (the machine is shared: only a
    ratio to work timed beside it means something), with the goal's limit on the ratio."""
    ratio = seconds / floor
    within = "within" if ratio <= limit else "OVER"
    return (
        f"{seconds:{width}.{digits}f} s  ratio {ratio:.1f}x  limit {limit:.0f}x ({within} the goal)"
    )


def load_line() -> str:
    """The load average and this machine's speed now, printed with wall times: on a shared
    machine they move with both. The speed is the time of a fixed Python loop (10^7
    additions: 0.7 s on this machine's quiet days, 1.5-1.8 s on its slow ones), so figures
    of different sessions can be set side by side."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    loop = time.perf_counter() - started
    return (
        f"load average: {os.getloadavg()[0]:.1f}, a 10^7-addition loop {loop:.2f} s "
        "(wall times move with both)"
    )


# Memory


def rss_mib() -> float:
    """This process's resident memory now, in MiB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Peak:
    """Samples this process's RSS every 10 ms while the block runs: `peak - base` is what
    the block took at its height, native buffers (C libraries, drivers) included."""

    def __init__(self) -> None:
        self.base = rss_mib()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mib())

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class HeapPeak:
    """The peak of Python's heap (tracemalloc) while the block runs, in bytes: what the
    Python code held at most, exactly, whatever the allocator keeps. tracemalloc slows
    allocation, so the block's wall time is not a figure."""

    peak = 0

    def __enter__(self) -> HeapPeak:
        tracemalloc.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        _, self.peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()


# Contenders timed against each other (the backup benches)


def shell(cmd: str) -> float:
    """Runs a shell pipeline (failing if any part of it fails) and returns its wall time:
    the command-line recipes our pipeline is compared with."""
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], check=True)
    return time.perf_counter() - t0


def cpu_busy(interval: float = 1.0) -> float | None:
    """Share of the machine's CPU time spent busy over ``interval`` (Linux), else None."""

    def snap() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        return sum(vals), vals[3] + vals[4]  # total, idle + iowait

    try:
        total0, idle0 = snap()
        time.sleep(interval)
        total1, idle1 = snap()
    except OSError:
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


class Quiet:
    """Before each timed run, wait (bounded) until the machine is idle, so other work on
    a shared machine does not land on one contender; report what was waited for."""

    def __init__(self, max_wait: float, threshold: float = 0.08) -> None:
        self.max_wait = max_wait
        self.threshold = threshold
        self.waited = 0.0
        self.busy_starts = 0

    def wait(self) -> None:
        if self.max_wait <= 0:
            return
        t0 = time.monotonic()
        while True:
            busy = cpu_busy()
            if busy is None or busy < self.threshold:
                break
            if time.monotonic() - t0 > self.max_wait:
                self.busy_starts += 1
                break
            time.sleep(2)
        self.waited += time.monotonic() - t0

    def summary(self) -> str:
        text = f"waited {self.waited:.0f} s in total for an idle machine"
        if self.busy_starts:
            text += f"; {self.busy_starts} runs started busy (gave up after {self.max_wait:g} s)"
        return text


def mb(n: float) -> str:
    """A size in decimal megabytes, as the dump tools' sizes are usually quoted."""
    return f"{n / 1e6:,.1f} MB"


async def alternate_rounds(
    contenders: dict[str, Callable[[], Awaitable[float]]], rounds: int, quiet: Quiet
) -> dict[str, list[float]]:
    """Times each contender once a round, in reverse order every other round (so neither
    the caches nor the machine's drift favour one), each after `quiet.wait()`. Prints each
    round's times with the load; returns each contender's times."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds):
        order = list(contenders)
        if r % 2:
            order.reverse()
        for name in order:
            quiet.wait()
            times[name].append(await contenders[name]())
        print(
            f"round {r + 1}: "
            + ", ".join(f"{k} {times[k][-1]:.2f}s" for k in contenders)
            + f" (load {os.getloadavg()[0]:.2f})"
        )
    return times


def print_backup_medians(
    contenders: dict[str, object], times: dict[str, list[float]], sizes: dict[str, int]
) -> None:
    """The backups' table: each contender's median time against the floor's (the dump tool
    alone), and the size of what it wrote against gzip's."""
    floor = statistics.median(times["floor"])
    print("backup (median of rounds)        time    vs floor   size        vs gzip")
    for name in contenders:
        med = statistics.median(times[name])
        size = sizes.get(name)
        size_txt = f"{mb(size):>11}  {size / sizes['gzip']:.2f}x" if size else ""
        print(f"  {name:<30} {med:6.2f}s  {med / floor:6.2f}x  {size_txt}")
