"""MariaDB backup benchmark: our pipeline against the dump tool alone.

Creates its own database on 127.0.0.1:3306 (root, no password): a table of text and
JSON rows whose plain dump is about ``--mb`` megabytes. Then, alternating the
contenders in each round (medians printed with ratios against the floor):

* floor: ``mariadb-dump --single-transaction --quick > /dev/null`` (the dump tool alone)
* ours: zstd-3 + age + sha256 + local storage (``run_backup``, the product's flags:
  also ``--routines --triggers --events``)
* ``mariadb-dump | gzip`` to a file (what scripts usually run)
* with ``--parallel`` (the data in two equal tables): ours with ``parallel_streams``
  2 (``ours N=2``: one read lock while both dumps open their snapshots, each table
  its own stream), and two dump tools at once, one per table, to /dev/null and each
  through ``zstd -1``: the upper bound without the snapshot and the stages
* with ``--levels 3,1,-1``: ours at each zstd level (``ours-z1`` ...), and
  ``mariadb-dump | zstd -N -T1 > /dev/null`` beside it (the C tools at the same level)

MySQL dumps are text and compress about 4:1, so compression, not the dump tool, is
where the time goes. The database is dropped at the end.

    .venv/bin/python bench/backup_mysql.py --mb 300 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import Quiet, alternate_rounds, mb, print_backup_medians, shell

from opscenter.engines.mysql import MySQLConnection
from opscenter.stores.backends import LocalStorage
from opscenter.streaming.crypto import generate_identity, recipient_of
from opscenter.streaming.manifest import delete_backup_objects
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.sources import MySQLSource

MY = ["-h127.0.0.1", "-P3306", "-uroot"]
ROW_BYTES = 265  # about what one row below takes in the dump


def mariadb(sql: str, db: str | None = None) -> str:
    res = subprocess.run(
        ["mariadb", *MY, "--batch", "--skip-column-names", "-e", sql, *([db] if db else [])],
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout.strip()


def dump_tool() -> str:
    return shutil.which("mariadb-dump") or "mysqldump"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mb", type=int, default=300, help="approximate plain dump size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--levels", default="", help="extra zstd levels to compare, e.g. 1,-1")
    ap.add_argument("--parallel", action="store_true", help="two tables, two dumps at once")
    args = ap.parse_args()

    db = f"oc_bench_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="oc-bench-my-"))
    recipient = recipient_of(generate_identity())
    rows = args.mb * 1_000_000 // ROW_BYTES
    print(f"database {db}, ~{args.mb} MB dump ({rows:,} rows), {args.rounds} rounds")
    mariadb(f"CREATE DATABASE {db} CHARACTER SET utf8mb4")
    first_table_rows = rows // 2 if args.parallel else rows
    try:
        t0 = time.perf_counter()
        mariadb(
            "CREATE TABLE docs (id BIGINT PRIMARY KEY, body TEXT, doc JSON, "
            "score DECIMAL(10,3), at DATETIME) ENGINE=InnoDB",
            db,
        )
        mariadb(
            "SET SESSION max_recursive_iterations = 100000000; "
            "INSERT INTO docs WITH RECURSIVE s(n) AS "
            f"(SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {first_table_rows}) "
            "SELECT n, CONCAT(MD5(RAND()), ' ', MD5(n), ' user', n % 1000, "
            "' lorem ipsum dolor sit amet ', FLOOR(RAND() * 1000000)), "
            "JSON_OBJECT('id', n, 'tags', JSON_ARRAY('a', 'b', n % 97), "
            "'ref', MD5(RAND()), 'score', ROUND(RAND() * 1000, 3)), "
            "ROUND(RAND() * 1000, 3), NOW() - INTERVAL FLOOR(RAND() * 900) DAY FROM s",
            db,
        )
        if args.parallel:
            mariadb("CREATE TABLE docs_b LIKE docs; INSERT INTO docs_b SELECT * FROM docs", db)
        print(f"dataset ready in {time.perf_counter() - t0:.1f} s")

        tool = dump_tool()
        store = LocalStorage(work / "store")
        quiet = Quiet(args.quiet_wait)
        gz_file = work / "plain.sql.gz"
        sizes: dict[str, int] = {}
        conn = MySQLConnection("127.0.0.1", db)

        def ours(name: str, level: int | None, streams: int = 1) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                t = time.perf_counter()
                res = await run_backup(
                    MySQLSource(conn),
                    store,
                    options=BackupOptions(
                        recipients=(recipient,), compression_level=level, parallel_streams=streams
                    ),
                )
                elapsed = time.perf_counter() - t
                sizes[name], sizes["plain"] = res.size_bytes, res.original_size_bytes
                await delete_backup_objects(store, res.key)
                return elapsed

            return run

        def cli(command: str) -> Callable[[], Awaitable[float]]:
            return lambda: asyncio.to_thread(shell, command)

        flags = f"{' '.join(MY)} --single-transaction --quick {db}"
        contenders: dict[str, Callable[[], Awaitable[float]]] = {
            "floor": lambda: asyncio.to_thread(shell, f"{tool} {flags} > /dev/null"),
            "ours": ours("ours", None),
            "gzip": lambda: asyncio.to_thread(shell, f"{tool} {flags} | gzip > {gz_file}"),
        }
        if args.parallel:
            base = f"{tool} {' '.join(MY)} --single-transaction --quick {db}"

            def both(tail: str) -> str:
                return f"{base} docs {tail} & a=$!; {base} docs_b {tail} & b=$!; wait $a && wait $b"

            contenders["ours N=2"] = ours("ours N=2", None, streams=2)
            contenders["2 dumps at once"] = cli(both("> /dev/null"))
            contenders["2 dumps at once | zstd -1"] = cli(both("| zstd -q -1 -T1 > /dev/null"))
            contenders["1 dump | zstd -1"] = cli(f"{base} | zstd -q -1 -T1 > /dev/null")
        for level in (int(x) for x in args.levels.split(",") if x.strip()):
            tag = f"z{level}" if level >= 0 else f"z-fast{-level}"
            zflag = f"-{level}" if level > 0 else f"--fast={max(1, -level)}"
            contenders[f"ours-{tag}"] = ours(f"ours-{tag}", level)
            contenders[f"zstd-cli-{tag}"] = cli(f"{tool} {flags} | zstd -q {zflag} -T1 > /dev/null")
        times = await alternate_rounds(contenders, args.rounds, quiet)
        sizes["gzip"] = gz_file.stat().st_size
        print(f"\nplain dump {mb(sizes['plain'])}")
        print_backup_medians(contenders, times, sizes)
        print(f"  {quiet.summary()}")
    finally:
        mariadb(f"DROP DATABASE IF EXISTS {db}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
