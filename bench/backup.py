"""Backup pipeline benchmark: our pipeline against the dump tool alone and the usual recipes.

Creates its own database on 127.0.0.1:5432 (user postgres, trust): ``pgbench -i`` at
``--scale`` (80, the default, gives a plain dump of about 1 GB) plus a table of text and JSON.
Then, alternating the contenders in each round:

* floor: ``pg_dump -Fc -Z0 > /dev/null`` (the dump tool alone)
* ours: zstd-3 + age + sha256 + local storage (``run_backup``)
* ``pg_dump -Fc`` (built-in compression) to a file
* ``pg_dump | gzip`` to a file
* ours with ``parallel_streams`` 2 and 4 (one snapshot, the data in N concurrent
  archives), and ``pg_dump -Fd -j2 -Z0`` to a local directory (its parallel dump,
  which needs that directory as big as the dump)

It prints medians and ratios against the floor, sizes against the gzip output, the
restore time of our artifact (one stream, and the N=2 parallel one) against a
single-stream ``pg_restore`` from an uncompressed local file (all into an empty
database, alternating, medians of the rounds), and the peak RSS of this Python process
during our backup at two dump sizes and in parallel at N=4. ``--parallel-only`` runs
just the floor, ours, the parallel rows and the restores (quicker). ``ours`` is the default
product path: it includes the cluster globals saved beside the dump. Wall times on a
shared machine move with its load: the load average is printed with every round.
The database is dropped at the end.

    .venv/bin/python bench/backup.py --scale 5 --rounds 3     # quick
    .venv/bin/python bench/backup.py                          # ~1 GB dump
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import Quiet, alternate_rounds, mb, print_backup_medians, shell

from opscenter.engines.postgres import PgConnection
from opscenter.stores.backends import LocalStorage
from opscenter.streaming.crypto import generate_identity, recipient_of
from opscenter.streaming.manifest import delete_backup_objects, read_manifest
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import PostgresTarget
from opscenter.streaming.sources import PostgresSource

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
PG = ["-h", HOST, "-p", str(PORT), "-U", USER]


def psql(db: str, sql: str) -> str:
    res = subprocess.run(
        ["psql", *PG, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout.strip()


def pgbench_init(db: str, scale: int) -> None:
    subprocess.run(
        ["pgbench", *PG, "-i", "-q", "-s", str(scale), db], check=True, capture_output=True
    )


def drop_database(name: str) -> None:
    subprocess.run(
        [
            "psql",
            *PG,
            "-X",
            "-q",
            "-d",
            "postgres",
            "-c",
            f"drop database if exists {name} with (force)",
        ],
        check=False,
        capture_output=True,
    )


class RssSampler:
    """Peak resident set size of this process, sampled every 5 ms from /proc."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=int, default=80, help="pgbench scale (80 ~ 1.1 GB plain dump)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the database")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each timed run wait up to this many seconds for an idle machine (0: no)",
    )
    ap.add_argument(
        "--parallel-only",
        action="store_true",
        help="only the floor, ours, the parallel backups, pg_dump -Fd -j2 and the restores",
    )
    ap.add_argument(
        "--balanced",
        action="store_true",
        help="instead of pgbench, four tables of the same size (about as big in all)",
    )
    args = ap.parse_args()

    db = f"oc_bench_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="oc-bench-"))
    identity = generate_identity()
    recipient = recipient_of(identity)
    conn = PgConnection(HOST, db, PORT, USER)
    print(f"database {db}, scale {args.scale}, {args.rounds} rounds, cores {os.cpu_count()}")
    psql("postgres", f"create database {db}")
    restored: list[str] = []
    try:
        t0 = time.perf_counter()
        # Less compressible than pgbench's blank-padded rows: hashes, numbers, JSON.
        docs = (
            "select g as id, "
            "md5(random()::text) || ' ' || md5(g::text) || ' user' || (g % 1000) || "
            "' lorem ipsum dolor ' || (random() * 1e6)::int as body, "
            "jsonb_build_object('id', g, 'tags', jsonb_build_array('a', 'b', g % 97), "
            "'score', round((random() * 1000)::numeric, 3), 'ref', md5(random()::text), "
            "'at', now() - random() * interval '900 days') as doc from generate_series(1, {}) g"
        )
        if args.balanced:  # four tables of a quarter each: as much as per-table streams gain
            for i in range(4):
                psql(db, f"create table docs_{i} as " + docs.format(args.scale * 12_500))
        else:
            pgbench_init(db, args.scale)
            psql(db, "create table docs as " + docs.format(args.scale * 10_000))
        psql(db, "vacuum analyze")
        print(
            f"dataset ready in {time.perf_counter() - t0:.1f} s; "
            f"database size {psql(db, f'select pg_size_pretty(pg_database_size({db!r}))')}"
        )

        # Parts are split by table: the largest one bounds what N streams can gain.
        share = psql(
            db,
            "select round(100.0 * max(pg_table_size(oid)) / sum(pg_table_size(oid))) from "
            "pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace",
        )
        print(f"largest table: {share}% of the table data (no part can be smaller)")
        plain = work / "plain.sql"
        shell(f"pg_dump {' '.join(PG)} {db} > {plain}")
        plain_size = plain.stat().st_size
        plain.unlink()
        print(f"plain dump: {mb(plain_size)}")

        store = LocalStorage(work / "store")
        quiet = Quiet(args.quiet_wait)
        fc_file, gz_file, raw_file = work / "fc.dump", work / "plain.sql.gz", work / "raw.dump"
        sizes: dict[str, int] = {}
        ours_key = ""
        parallel_keys: dict[int, str] = {}
        fd_dir = work / "fd"

        def ours_parallel(n: int) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                if n in parallel_keys:
                    await delete_backup_objects(store, parallel_keys[n])
                t = time.perf_counter()
                res = await run_backup(
                    PostgresSource(conn),
                    store,
                    options=BackupOptions(recipients=(recipient,), parallel_streams=n),
                )
                parallel_keys[n] = res.key
                sizes[f"ours N={n}"] = res.size_bytes
                return time.perf_counter() - t

            return run

        async def dump_dir() -> float:
            shutil.rmtree(fd_dir, ignore_errors=True)
            return await run_shell(f"pg_dump {' '.join(PG)} -Fd -j2 -Z0 -f {fd_dir} {db}")

        async def ours() -> float:
            nonlocal ours_key
            if ours_key:
                await store.delete(ours_key)
                await store.delete(ours_key + ".manifest.json")
            t = time.perf_counter()
            res = await run_backup(
                PostgresSource(conn), store, options=BackupOptions(recipients=(recipient,))
            )
            ours_key = res.key
            sizes["ours"] = res.size_bytes
            sizes["raw -Fc -Z0"] = res.original_size_bytes
            return time.perf_counter() - t

        async def run_shell(cmd: str) -> float:
            return await asyncio.to_thread(shell, cmd)

        contenders: dict[str, Callable[[], Awaitable[float]]] = {
            "floor": lambda: run_shell(f"pg_dump {' '.join(PG)} -Fc -Z0 {db} > /dev/null"),
            "ours": ours,
        }
        if not args.parallel_only:
            contenders |= {
                "pg_dump -Fc": lambda: run_shell(f"pg_dump {' '.join(PG)} -Fc {db} > {fc_file}"),
                "gzip": lambda: run_shell(f"pg_dump {' '.join(PG)} {db} | gzip > {gz_file}"),
            }
        contenders |= {
            "ours N=2": ours_parallel(2),
            "ours N=4": ours_parallel(4),
            "pg_dump -Fd -j2 -Z0 (local dir)": dump_dir,
        }
        times = await alternate_rounds(contenders, args.rounds, quiet)
        shutil.rmtree(fd_dir, ignore_errors=True)
        if args.parallel_only:
            sizes.clear()  # the size column compares with gzip, not run here
        else:
            sizes["pg_dump -Fc"] = fc_file.stat().st_size
            sizes["gzip"] = gz_file.stat().st_size

        print()
        print_backup_medians(contenders, times, sizes)
        floor = statistics.median(times["floor"])
        two = statistics.median(times["ours N=2"])
        print(f"  goal: ours N=2 at 0.85x of the floor or better: {two / floor:.2f}x")
        if "raw -Fc -Z0" in sizes:
            print(f"  raw custom-format dump size: {mb(sizes['raw -Fc -Z0'])}")
        print(f"  {quiet.summary()}")

        # Restore: our artifact vs pg_restore from an uncompressed local file, each into
        # a freshly created empty database (creation not timed), alternating like the
        # backups; medians of the rounds.
        shell(f"pg_dump {' '.join(PG)} -Fc -Z0 {db} > {raw_file}")
        os.sync()  # its write-back would otherwise land on the first restore timed
        manifests = {
            "ours": await read_manifest(store, ours_key),
            "ours N=2": await read_manifest(store, parallel_keys[2]),
        }

        def restore_ours(name: str) -> Callable[[str], Awaitable[float]]:
            async def run(target: str) -> float:
                t = time.perf_counter()
                await run_restore(
                    store,
                    manifests[name],
                    PostgresTarget(conn.with_database(target)),
                    identities=[identity],
                )
                return time.perf_counter() - t

            return run

        async def restore_plain(target: str) -> float:
            cmd = f"pg_restore {' '.join(PG)} --exit-on-error --single-transaction -d {target}"
            return await asyncio.to_thread(shell, f"{cmd} {raw_file}")

        restorers: dict[str, Callable[[str], Awaitable[float]]] = {
            **{name: restore_ours(name) for name in manifests},
            "pg_restore": restore_plain,
        }
        rtimes: dict[str, list[float]] = {name: [] for name in restorers}
        for r in range(args.rounds):
            order = list(restorers)
            if r % 2:
                order.reverse()
            for name in order:
                target = f"{db}_r"
                drop_database(target)
                restored.append(target)
                psql("postgres", f"create database {target}")
                psql("postgres", "checkpoint")  # the same start for both contenders
                quiet.wait()
                rtimes[name].append(await restorers[name](target))
                drop_database(target)
            print(
                f"restore round {r + 1}: "
                + ", ".join(f"{k} {rtimes[k][-1]:.2f}s" for k in restorers)
                + f" (load {os.getloadavg()[0]:.2f})"
            )
        plain_restore = statistics.median(rtimes["pg_restore"])
        print("\nrestore (median of rounds, into an empty database)")
        labels = {
            "ours": "ours (storage→sha256→age→zstd→pg_restore)",
            "ours N=2": "ours, N=2 parts (data parts in parallel)",
        }
        for name in manifests:
            med = statistics.median(rtimes[name])
            print(f"  {labels[name]:<43} {med:6.2f}s  {med / plain_restore:.2f}x")
        print(f"  {'pg_restore from uncompressed local file':<43} {plain_restore:6.2f}s  1.00x")
        n2 = statistics.median(rtimes["ours N=2"]) / plain_restore
        print(f"  goal: parallel restore within 0.75x of pg_restore: {n2:.2f}x")
        print(f"  {quiet.summary()}")

        # Peak RSS of this process during our backup at two dump sizes.
        print("\npeak RSS of the Python process during our backup")
        for label, extra, streams in (
            ("small (no pgbench_accounts data)", ("--exclude-table-data=pgbench_accounts",), 1),
            ("full", (), 1),
            ("full, parallel N=4", (), 4),
        ):
            base = RssSampler.rss()
            with RssSampler() as sampler:
                res = await run_backup(
                    PostgresSource(conn, extra_args=extra),
                    store,
                    options=BackupOptions(recipients=(recipient,), parallel_streams=streams),
                )
            await delete_backup_objects(store, res.key)
            print(
                f"  {label:<34} dump {mb(res.original_size_bytes):>11}: peak RSS "
                f"{mb(sampler.peak)} (before: {mb(base)})"
            )
    finally:
        for name in [*dict.fromkeys(restored), *([] if args.keep else [db])]:
            drop_database(name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
