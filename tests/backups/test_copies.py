"""One dump, several destinations: every copy gets the same bytes from a single pass of
the pipeline; a failing or stalled copy is removed without failing (or holding up) the
backup, a failing primary leaves nothing anywhere. Real PostgreSQL, real local storage,
moto's S3 server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import re
import time
from pathlib import Path
from typing import Any

import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.stores.backends import LocalStorage, StorageBackend
from opscenter.streaming import pipeline
from opscenter.streaming.manifest import globals_key, read_manifest
from opscenter.streaming.pipeline import BackupOptions, CopyOutcome, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import PostgresTarget
from opscenter.streaming.sources import PostgresSource
from opscenter.streaming.streams import Compression
from opscenter.streaming.verification import quick_verify
from tests.storage import conftest as s3_fixtures

from .conftest import all_files, pg_table_hashes, psql
from .helpers import HookedStorage, RecordingRunner, group_gone, process_gone, until

pytestmark = pytest.mark.postgres

# moto's S3 server on loopback, shared with tests/storage.
s3_endpoint = s3_fixtures.s3_endpoint
raw_s3 = s3_fixtures.raw_s3
bucket = s3_fixtures.bucket
make_s3 = s3_fixtures.make_s3


async def read_all(storage: StorageBackend, key: str) -> bytes:
    out = bytearray()
    reader = await storage.open_reader(key)
    async with reader:
        while chunk := await reader.read():
            out += chunk
    return bytes(out)


def bucket_is_empty(raw: Any, name: str) -> bool:
    objects = raw.list_objects_v2(Bucket=name).get("Contents", [])
    uploads = raw.list_multipart_uploads(Bucket=name).get("Uploads", [])
    return not objects and not uploads


def dumps_started(runner: RecordingRunner, tool: str = "pg_dump") -> int:
    return sum(1 for c in runner.commands if posixpath.basename(c.argv[0]) == tool)


@pytest.fixture
def src_db(pg_db: Any) -> str:
    """~3 MB of poorly compressible rows plus a small table."""
    db: str = pg_db()
    psql(
        db,
        "create table big as select g, repeat(md5(g::text), 20) as filler "
        "from generate_series(1, 4000) g;"
        "create table small (id int primary key, name text);"
        "insert into small values (1, 'one'), (2, 'zwei'), (3, 'trois');",
    )
    return db


@pytest.fixture
def tall_db(src_db: str) -> str:
    """~11 MB: a dozen stored blocks of 1 MiB, so a copy can fall several blocks behind."""
    psql(
        src_db,
        "insert into big select g, repeat(md5(g::text), 20) from generate_series(4001, 16000) g",
    )
    return src_db


async def assert_identical(result: Any, *storages: StorageBackend) -> None:
    """Each storage holds the backup's bytes (same sha256) and a manifest that verifies."""
    for storage in storages:
        data = await read_all(storage, result.key)
        assert len(data) == result.size_bytes
        assert hashlib.sha256(data).hexdigest() == result.sha256
        await quick_verify(storage, await read_manifest(storage, result.key))


async def test_one_dump_every_copy_identical_and_restorable(
    src_db: str,
    pg_db: Any,
    pg_conn: Any,
    tmp_path: Path,
    make_s3: Any,
    age_identity: str,
    age_recipient: str,
) -> None:
    primary = LocalStorage(tmp_path / "a")
    second = LocalStorage(tmp_path / "b")
    s3 = make_s3()
    runner = RecordingRunner()
    result = await run_backup(
        PostgresSource(pg_conn(src_db)),
        primary,
        runner=runner,
        copies=[second, s3],
        options=BackupOptions(recipients=(age_recipient,), row_counts=True),
    )
    assert result.copies == (CopyOutcome(0, True), CopyOutcome(1, True))
    assert dumps_started(runner) == 1  # the dump ran once for three destinations
    assert dumps_started(runner, "pg_dumpall") == 1  # and so did the globals

    stored = [await read_all(s, result.key) for s in (primary, second, s3)]
    assert stored[0] == stored[1] == stored[2]
    assert len(stored[0]) == result.size_bytes
    assert hashlib.sha256(stored[0]).hexdigest() == result.sha256
    gkey = globals_key(result.key, Compression.ZSTD, encrypted=True)
    for storage in (primary, second, s3):
        manifest = await read_manifest(storage, result.key)
        assert manifest.sha256 == result.sha256 and manifest.size_bytes == result.size_bytes
        assert manifest.globals is not None and manifest.globals.saved
        assert manifest.globals.key == gkey and await storage.exists(gkey)
        await quick_verify(storage, manifest)

    # Restore from the S3 copy, by its own manifest.
    dst = pg_db(create=False)
    await run_restore(
        s3,
        await read_manifest(s3, result.key),
        PostgresTarget(pg_conn(dst), create=True),
        identities=[age_identity],
    )
    assert pg_table_hashes(dst) == pg_table_hashes(src_db)


async def test_copy_failing_mid_write_is_removed_and_the_backup_commits(
    src_db: str, pg_conn: Any, tmp_path: Path
) -> None:
    primary = LocalStorage(tmp_path / "a")
    good = LocalStorage(tmp_path / "b")
    failing = HookedStorage(tmp_path / "c")
    failing.fail_after = 512 << 10  # the dump is several MiB: it fails mid-stream
    result = await run_backup(
        PostgresSource(pg_conn(src_db)),
        primary,
        copies=[failing, good],
        options=BackupOptions(compression=Compression.NONE),
    )
    bad, ok = result.copies
    assert not bad.committed and bad.error is not None
    assert bad.error.code is ErrorCode.DISK_FULL
    assert ok == CopyOutcome(1, True)
    assert result.size_bytes > failing.fail_after
    # Nothing is left in the failed copy's storage: no partial, no globals, no manifest.
    assert all_files(failing.root) == []
    for storage in (primary, good):
        manifest = await read_manifest(storage, result.key)
        await quick_verify(storage, manifest)
    assert await read_all(primary, result.key) == await read_all(good, result.key)


async def test_primary_failing_leaves_nothing_anywhere(
    src_db: str, pg_conn: Any, tmp_path: Path, make_s3: Any, raw_s3: Any, bucket: str
) -> None:
    primary = HookedStorage(tmp_path / "a")
    primary.fail_after = 512 << 10
    copy = LocalStorage(tmp_path / "b")
    runner = RecordingRunner()
    with pytest.raises(BackupError) as info:
        await run_backup(
            PostgresSource(pg_conn(src_db)),
            primary,
            runner=runner,
            copies=[copy, make_s3()],
            options=BackupOptions(compression=Compression.NONE),
        )
    assert info.value.code is ErrorCode.DISK_FULL
    assert all_files(primary.root) == [] and all_files(copy.root) == []
    assert bucket_is_empty(raw_s3, bucket)
    assert dumps_started(runner) == 1


async def test_copy_storage_that_cannot_open_is_reported(
    src_db: str, pg_conn: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the copy's directory should be")
    primary = LocalStorage(tmp_path / "a")
    result = await run_backup(
        PostgresSource(pg_conn(src_db)),
        primary,
        copies=[LocalStorage(blocker)],
        options=BackupOptions(compression=Compression.NONE),
    )
    [outcome] = result.copies
    assert not outcome.committed and outcome.error is not None
    assert outcome.error.code in (ErrorCode.STORAGE_FAILED, ErrorCode.INVALID_CONFIG)
    await quick_verify(primary, await read_manifest(primary, result.key))
    assert blocker.read_text().startswith("a file")


async def test_stalled_copy_is_dropped_and_the_others_commit(
    tall_db: str, pg_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_COPY_LAG_MAX", 2 << 20)
    monkeypatch.setattr(pipeline, "_COPY_GRACE", 1.0)
    primary = LocalStorage(tmp_path / "a")
    stalled = HookedStorage(tmp_path / "b")
    stalled.stall_after = 1  # takes the first block, then stops answering
    good = LocalStorage(tmp_path / "c")
    t0 = time.monotonic()
    result = await asyncio.wait_for(
        run_backup(
            PostgresSource(pg_conn(tall_db)),
            primary,
            copies=[stalled, good],
            options=BackupOptions(compression=Compression.NONE),
        ),
        60,
    )
    # One grace period of waiting, not the job's stall limit.
    assert time.monotonic() - t0 < 15
    assert result.size_bytes > 8 << 20 and stalled.stalls == 1
    bad, ok = result.copies
    assert ok == CopyOutcome(1, True)
    assert bad.index == 0 and not bad.committed and bad.error is not None
    assert bad.error.code is ErrorCode.STORAGE_FAILED
    assert re.search(r"fell \d+(\.\d)? MiB behind", bad.error.message)
    assert "wrote nothing for 1 s" in bad.error.message
    # Nothing left in the stalled storage: no partial, no globals, no manifest.
    assert all_files(stalled.root) == []
    await assert_identical(result, primary, good)


async def test_slow_copy_within_the_bound_commits_identical_bytes(
    tall_db: str, pg_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small bound, so the primary does wait for the slow copy to make room.
    monkeypatch.setattr(pipeline, "_COPY_LAG_MAX", 2 << 20)
    monkeypatch.setattr(pipeline, "_COPY_GRACE", 2.0)
    primary = LocalStorage(tmp_path / "a")
    slow = HookedStorage(tmp_path / "b")
    slow.delay = 0.1
    result = await run_backup(
        PostgresSource(pg_conn(tall_db)),
        primary,
        copies=[slow],
        options=BackupOptions(compression=Compression.NONE),
    )
    assert result.copies == (CopyOutcome(0, True),)
    assert result.size_bytes > 8 << 20
    await assert_identical(result, primary, slow)


def _backup_task(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and f"{os.sep}opscenter{os.sep}backups{os.sep}" in code.co_filename


async def test_cancel_during_a_stalled_copy_leaves_no_task_and_nothing_stored(
    tall_db: str, pg_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~120 MB: far more than the pipeline's buffers and the socket's hold together
    # (~30 MB), so the dump is still running at the cancel.
    psql(
        tall_db,
        "insert into big select g, repeat(md5(g::text), 20) from generate_series(16001, 190000) g",
    )
    # The primary waits on the stalled copy (it is a block behind) when the cancel comes.
    monkeypatch.setattr(pipeline, "_COPY_LAG_MAX", 1 << 20)
    monkeypatch.setattr(pipeline, "_COPY_GRACE", 60.0)
    primary = LocalStorage(tmp_path / "a")
    stalled = HookedStorage(tmp_path / "b")
    stalled.stall_after = 1
    good = LocalStorage(tmp_path / "c")
    runner = RecordingRunner()
    before = asyncio.all_tasks()
    task = asyncio.create_task(
        run_backup(
            PostgresSource(pg_conn(tall_db)),
            primary,
            runner=runner,
            copies=[stalled, good],
            options=BackupOptions(compression=Compression.NONE),
        )
    )
    assert await until(lambda: stalled.stalls > 0, 30)
    await asyncio.sleep(0.5)
    assert not task.done()
    [pid] = [p.pid for p in runner.started if posixpath.basename(p.command.argv[0]) == "pg_dump"]
    assert pid is not None and not process_gone(pid)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 5
    # The session's event loop also runs other tests' background services (webhook
    # delivery, say): only tasks of the backup code count.
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and _backup_task(t)]
    assert leaked == []
    assert process_gone(pid) and group_gone(pid)
    for storage in (primary, stalled, good):
        assert all_files(storage.root) == []
