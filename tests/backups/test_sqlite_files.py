"""SQLite and directory sources; stall and wall-clock limits on a slow source."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.streaming.manifest import read_manifest
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import DirectoryTarget, SqliteTarget
from opscenter.streaming.sources import DirectorySource, SqliteSource
from opscenter.streaming.streams import Compression
from opscenter.streaming.verification import deep_verify

from .conftest import all_files
from .helpers import RecordingRunner, ShellSource, group_gone


def _sqlite_dump(path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("select * from t order by id").fetchall()
    finally:
        con.close()


async def test_sqlite_roundtrip_while_in_use(tmp_path, storage, age_identity, age_recipient):
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("pragma journal_mode=wal")
    con.execute("create table t (id integer primary key, s text, b blob, f real)")
    con.executemany(
        "insert into t (s, b, f) values (?, ?, ?)",
        [(f"row {i} ✓", os.urandom(50), i / 3) for i in range(5000)],
    )
    con.commit()
    # A writer holds an open transaction during the backup: the copy stays consistent.
    con.execute("begin immediate")
    con.execute("insert into t (s) values ('uncommitted')")
    result = await run_backup(
        SqliteSource(str(db)), storage, options=BackupOptions(recipients=(age_recipient,))
    )
    con.rollback()
    con.close()
    manifest = await read_manifest(storage, result.key)
    assert manifest.dump_format == "sqlite_db"
    await deep_verify(storage, manifest, identities=[age_identity])
    out = tmp_path / "restored" / "app.db"
    await run_restore(storage, manifest, SqliteTarget(str(out)), identities=[age_identity])
    assert _sqlite_dump(out) == _sqlite_dump(db)
    assert [p.name for p in out.parent.iterdir()] == ["app.db"]  # no temp left
    with pytest.raises(BackupError) as info:  # no silent overwrite
        await run_restore(storage, manifest, SqliteTarget(str(out)), identities=[age_identity])
    assert info.value.code is ErrorCode.TARGET_NOT_EMPTY


async def test_sqlite_missing(tmp_path, storage):
    with pytest.raises(BackupError) as info:
        await run_backup(SqliteSource(str(tmp_path / "nope.db")), storage)
    assert info.value.code is ErrorCode.SOURCE_MISSING
    assert not (tmp_path / "nope.db").exists()


def _tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        st = p.lstat()
        if p.is_symlink():
            out[rel] = ("link", stat.S_IMODE(st.st_mode), os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


async def test_directory_roundtrip(tmp_path, storage, age_identity, age_recipient):
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("hello ünïcode\n")
    (src / "sub" / "script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "sub" / "script.sh").chmod(0o750)
    (src / "sub" / "secret").write_bytes(os.urandom(300_000))
    (src / "sub" / "secret").chmod(0o600)
    (src / "sub" / "deep").chmod(0o711)
    (src / "empty").write_bytes(b"")
    (src / "spaced name ☃.bin").write_bytes(b"\x00" * 1000)
    (src / "link-rel").symlink_to("a.txt")
    (src / "link-abs").symlink_to("/etc/hostname")
    (src / "link-dangling").symlink_to("nowhere")
    result = await run_backup(
        DirectorySource(str(src)), storage, options=BackupOptions(recipients=(age_recipient,))
    )
    manifest = await read_manifest(storage, result.key)
    await deep_verify(storage, manifest, identities=[age_identity])
    out = tmp_path / "out"
    await run_restore(storage, manifest, DirectoryTarget(str(out)), identities=[age_identity])
    assert _tree(out) == _tree(src)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    with pytest.raises(BackupError) as info:
        await run_restore(storage, manifest, DirectoryTarget(str(out)), identities=[age_identity])
    assert info.value.code is ErrorCode.TARGET_NOT_EMPTY


async def test_directory_restore_is_all_or_nothing(tmp_path, storage):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(100_000))
    result = await run_backup(
        DirectorySource(str(src)), storage, options=BackupOptions(compression=Compression.NONE)
    )
    manifest = await read_manifest(storage, result.key)
    path = storage.path_for(result.key)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(BackupError) as info:
        await run_restore(storage, manifest, DirectoryTarget(str(out)))
    assert info.value.code is ErrorCode.CHECKSUM_MISMATCH
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "store"]


async def test_source_missing_directory(tmp_path, storage):
    with pytest.raises(BackupError) as info:
        await run_backup(DirectorySource(str(tmp_path / "missing")), storage)
    assert info.value.code is ErrorCode.SOURCE_MISSING
    assert all_files(storage.root) == []


async def test_stall_timeout_kills_process_group(storage):
    runner = RecordingRunner()
    # A child process keeps the group alive: the whole group must go.
    source = ShellSource("head -c 100000 /dev/urandom; sleep 60 & wait")
    with pytest.raises(BackupError) as info:
        await run_backup(source, storage, runner=runner, options=BackupOptions(stall_timeout=1.0))
    assert info.value.code is ErrorCode.STALLED
    pid = runner.started[0].pid
    assert pid is not None
    await asyncio.sleep(0.1)
    assert group_gone(pid)
    assert all_files(storage.root) == []


async def test_dump_failure_reports_scrubbed_stderr_tail(storage):
    source = ShellSource(
        "echo 'connect password=hunter2 failed: boom' >&2; head -c 1000 /dev/zero; exit 3"
    )
    with pytest.raises(BackupError) as info:
        await run_backup(source, storage)
    assert info.value.code is ErrorCode.DUMP_FAILED
    assert "boom" in info.value.detail and "hunter2" not in str(info.value)
    assert "exit status 3" in info.value.message
    assert all_files(storage.root) == []


async def test_progress_reports_read_and_written(storage):
    seen = []
    source = ShellSource("head -c 3000000 /dev/urandom")
    result = await run_backup(
        source,
        storage,
        options=BackupOptions(on_progress=seen.append, progress_interval=0.01),
    )
    assert seen and seen[-1].bytes_read == 3_000_000 == result.original_size_bytes
    assert seen[-1].bytes_written == result.size_bytes
