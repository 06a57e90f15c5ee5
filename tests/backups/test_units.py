"""Storage, tool selection, runner secrets, codecs: no database needed."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from opscenter.core.failures import BackupError, ErrorCode, scrub
from opscenter.engines.mysql import MySQLConnection, classify_mysql_error
from opscenter.engines.postgres import classify_pg_error, select_pg_tool
from opscenter.remote.runner import Command, LocalRunner, SecretFile
from opscenter.stores.backends import LocalStorage, StorageError, validate_key
from opscenter.streaming.crypto import (
    generate_identity,
    key_id,
    load_identity_file,
    recipient_of,
    write_identity_file,
)
from opscenter.streaming.streams import (
    Aborted,
    Channel,
    Compression,
    Decompressor,
    ZstdFrameTracker,
    make_compressor,
)

# ------------------------------------------------------------------ storage


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "a/../b",
        "..",
        "a//b",
        "a/./b",
        "a\\b",
        "x\x00",
        ".hidden",
        "a/b.partial",
        "-x",
        "a/ b",
    ],
)
def test_invalid_keys_refused(key):
    with pytest.raises(StorageError) as info:
        validate_key(key)
    assert info.value.code == "invalid_key"


async def test_local_storage_atomic_write_abort_and_list(tmp_path):
    st = LocalStorage(tmp_path)
    w = await st.open_writer("pg/db/one.dump")
    await w.write(b"hello ")
    await w.write(b"world")
    assert not (tmp_path / "pg/db/one.dump").exists()  # invisible until commit
    assert next(p.name for p in (tmp_path / "pg/db").iterdir()).endswith(".partial")
    info = await w.commit()
    assert info.size == 11 and (tmp_path / "pg/db/one.dump").read_bytes() == b"hello world"

    w2 = await st.open_writer("pg/db/two.dump")
    await w2.write(b"partial")
    await w2.abort()
    assert sorted(p.name for p in (tmp_path / "pg/db").iterdir()) == ["one.dump"]

    with pytest.raises(StorageError) as exc:
        await st.open_writer("pg/db/one.dump")
    assert exc.value.code == "exists"

    async with await st.open_writer("pg/db/three.dump") as w3:
        await w3.write(b"x")
        with pytest.raises(RuntimeError):
            async with w3:
                raise RuntimeError("boom")
    assert not (tmp_path / "pg/db/three.dump").exists()

    keys = [i.key async for i in st.list("pg/")]
    assert keys == ["pg/db/one.dump"]
    assert [i.key async for i in st.list("pg/db/o")] == ["pg/db/one.dump"]
    assert [i.key async for i in st.list("other/")] == []

    r = await st.open_reader("pg/db/one.dump", offset=6, length=3)
    async with r:
        assert await r.read() == b"wor"
        assert await r.read() == b""
    assert (await st.stat("pg/db/one.dump")).size == 11
    await st.delete("pg/db/one.dump")
    await st.delete("pg/db/one.dump")  # idempotent
    assert not await st.exists("pg/db/one.dump")
    space = await st.space()
    assert space.free_bytes and space.total_bytes and space.free_bytes <= space.total_bytes


async def test_cleanup_partials(tmp_path):
    st = LocalStorage(tmp_path)
    w = await st.open_writer("a/b")
    await w.write(b"x")
    # Simulate a crash: the writer is never committed or aborted.
    assert await st.cleanup_partials() == 1
    assert list((tmp_path / "a").iterdir()) == []


async def test_symlinked_dir_cannot_escape_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "evil").symlink_to(outside)
    st = LocalStorage(root)
    with pytest.raises(StorageError) as info:
        await st.open_writer("evil/x")
    assert info.value.code == "invalid_key"


# ------------------------------------------------------------------ tool selection


def _fake_pg(bindir: Path, name: str, version: str) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / name
    exe.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
    exe.chmod(0o755)


class _NoPathRunner(LocalRunner):
    async def which(self, name: str) -> str | None:
        return None


async def test_select_newest_pg_dump_at_least_server(tmp_path):
    for v in ("13.9", "15.4", "16.2"):
        _fake_pg(tmp_path / v.split(".")[0] / "bin", "pg_dump", v)
    globs = (str(tmp_path / "*" / "bin"),)
    runner = _NoPathRunner()
    tool = await select_pg_tool(runner, "pg_dump", 15, globs)
    assert tool.major == 16 and tool.path.endswith("16/bin/pg_dump")
    with pytest.raises(BackupError) as info:
        await select_pg_tool(runner, "pg_dump", 17, globs)
    assert info.value.code is ErrorCode.TOOL_VERSION
    assert "PostgreSQL 17" in info.value.message and "16" in info.value.message
    with pytest.raises(BackupError) as info:
        await select_pg_tool(runner, "pg_dump", 15, (str(tmp_path / "none" / "*"),))
    assert info.value.code is ErrorCode.TOOL_MISSING


async def test_debian_pg_wrapper_is_asked_only_as_a_last_resort(tmp_path):
    from opscenter.engines.postgres import find_pg_tools

    share = tmp_path / "share"
    share.mkdir()
    wrapper = share / "pg_wrapper"
    marker = tmp_path / "wrapper-ran"
    wrapper.write_text(f"#!/bin/sh\ntouch {marker}\necho 'pg_dump (PostgreSQL) 15.9'\n")
    wrapper.chmod(0o755)
    (tmp_path / "usr-bin").mkdir()
    (tmp_path / "usr-bin" / "pg_dump").symlink_to(wrapper)

    class _WrapperOnPath(LocalRunner):
        async def which(self, name: str) -> str | None:
            return str(tmp_path / "usr-bin" / name)

    _fake_pg(tmp_path / "15" / "bin", "pg_dump", "15.9")
    tools = await find_pg_tools(_WrapperOnPath(), "pg_dump", (str(tmp_path / "*" / "bin"),))
    assert [t.path for t in tools] == [str(tmp_path / "15" / "bin" / "pg_dump")]
    assert not marker.exists()  # not even started
    tools = await find_pg_tools(_WrapperOnPath(), "pg_dump", (str(tmp_path / "none" / "*"),))
    assert [t.path for t in tools] == [str(tmp_path / "usr-bin" / "pg_dump")]
    assert marker.exists()


def test_error_classification():
    assert (
        classify_pg_error(
            'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: '
            'FATAL:  password authentication failed for user "x"'
        )
        is ErrorCode.AUTH_FAILED
    )
    assert (
        classify_pg_error('connection to server at "127.0.0.1", port 1 failed: Connection refused')
        is ErrorCode.UNREACHABLE
    )
    assert classify_pg_error('FATAL:  database "nope" does not exist') is (
        ErrorCode.DATABASE_MISSING
    )
    assert classify_pg_error('failed: FATAL:  role "nobody" does not exist') is (
        ErrorCode.AUTH_FAILED
    )
    # A GRANT to a role the target lacks is a restore error, not a login problem.
    assert (
        classify_pg_error(
            'pg_restore: error: could not execute query: ERROR:  role "app_ro" does not exist'
        )
        is None
    )
    assert (
        classify_pg_error("pg_dump: error: aborting because of server version mismatch")
        is ErrorCode.TOOL_VERSION
    )
    assert (
        classify_mysql_error(
            "Got error: 1045: Access denied for user 'u'@'h' (using password: YES)"
        )
        is ErrorCode.AUTH_FAILED
    )
    for denied in (
        "Got error: 1044: Access denied for user 'u'@'%' to database 'd' when selecting",
        "ERROR 1044 (42000) at line 1: Access denied for user 'u'@'%' to database 'd'",
        "ERROR 1142 (42000): DROP command denied to user 'u'@'h' for table `d`.`t`",
    ):
        assert classify_mysql_error(denied) is ErrorCode.PERMISSION_DENIED, denied
    assert classify_mysql_error("Got error: 1049: \"Unknown database 'x'\"") is (
        ErrorCode.DATABASE_MISSING
    )


def test_scrub():
    text = "failed: postgresql://u:hunter2@h/db password=hunter3 PGPASSWORD='x y' s3kr1t"
    out = scrub(text, ["s3kr1t"])
    for secret in ("hunter2", "hunter3", "x y", "s3kr1t"):
        assert secret not in out
    ident = generate_identity()
    assert ident not in scrub(f"oops {ident}")


# ------------------------------------------------------------------ runner secrets


async def test_secret_file_is_private_and_never_on_disk():
    conn = MySQLConnection("127.0.0.1", "db", password='pa"ss\\word')
    f = conn.defaults_file()
    assert b'password="pa\\"ss\\\\word"' in f.content
    runner = LocalRunner()
    script = 'stat -L -c %a "$0"; readlink -f "$0"; cat "$0"'
    res = await runner.run(Command(("sh", "-c", script, f.ref), secret_files=(f,)))
    mode, target, content = res.stdout.decode().split("\n", 2)
    # An in-memory file the command inherits: no path a crash could leave behind.
    assert mode == "600" and target.startswith("/memfd:mysql-client")
    assert "password=" in content
    assert 'pa"ss' not in Command(("x", f.ref), secret_files=(f,), secrets=('pa"ss',)).display()
    _ = SecretFile


def test_identity_file_roundtrip(tmp_path):
    ident = generate_identity()
    p = write_identity_file(ident, tmp_path / "key.txt")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_identity_file(p) == ident
    assert recipient_of(ident) in p.read_text()
    assert key_id(recipient_of(ident)).startswith("age-x25519:")
    with pytest.raises(FileExistsError):
        write_identity_file(ident, p)


# ------------------------------------------------------------------ codecs and channels


@pytest.mark.parametrize("kind", list(Compression))
def test_codec_roundtrip_and_truncation(kind):
    data = b"".join(b"row %d some text\n" % i for i in range(200_000)) + os.urandom(200_000)
    comp = make_compressor(kind)
    blob = b"".join(comp.compress(data[i : i + 65536]) for i in range(0, len(data), 65536))
    blob += comp.flush()
    out: list[bytes] = []
    dec = Decompressor(kind, out.append)
    for i in range(0, len(blob), 10_000):
        dec.feed(blob[i : i + 10_000])
    dec.finish()
    assert b"".join(out) == data
    assert max(len(b) for b in out) <= 1 << 20
    if kind is not Compression.NONE:
        dec = Decompressor(kind, lambda b: None)
        dec.feed(blob[:-3])
        with pytest.raises(BackupError) as info:
            dec.finish()
        assert info.value.code is ErrorCode.DECOMPRESS_FAILED


def test_zstd_frame_tracker_every_cut():
    comp = make_compressor(Compression.ZSTD)
    blob = comp.compress(os.urandom(300_000) + bytes(300_000)) + comp.flush()
    whole = ZstdFrameTracker()
    whole.feed(blob)
    assert whole.complete
    for cut in range(1, len(blob), max(1, len(blob) // 200)):
        t = ZstdFrameTracker()
        t.feed(blob[:cut])
        assert not t.complete, cut


def test_channel_abort_wakes_blocked_threads():
    import threading

    ch = Channel(1)
    ch.put(b"a")
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            ch.put(b"b")  # blocks: channel full
        except Aborted as exc:
            errors.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    ch.abort()
    t.join(2)
    assert not t.is_alive() and errors


async def test_concurrent_writers_same_key_one_wins(tmp_path):
    st = LocalStorage(tmp_path)
    a = await st.open_writer("k/x")
    b = await st.open_writer("k/x")
    await a.write(b"a")
    await b.write(b"b")
    await a.commit()
    with pytest.raises(StorageError) as info:
        await b.commit()
    assert info.value.code == "exists"
    assert (tmp_path / "k/x").read_bytes() == b"a"
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["x"]


async def test_a_commit_cancelled_in_flight_leaves_no_object(tmp_path):
    """The commit's thread cannot be stopped: an abort after its caller was cancelled
    waits for it, then takes back what it made visible (a parallel backup's failed part
    cancels the others, which may be committing)."""
    storage = LocalStorage(tmp_path)
    for attempt in range(40):  # at each, the cancel lands somewhere else in the commit
        writer = await storage.open_writer(f"a/{attempt}")
        await writer.write(b"x" * 100_000)
        commit = asyncio.ensure_future(writer.commit())
        await asyncio.sleep(attempt / 20_000)
        commit.cancel()
        try:
            await commit
        except (asyncio.CancelledError, StorageError):
            expected = []
        else:  # it had ended before the cancel came: committed, as asked
            expected = [str(attempt)]
        await writer.abort()
        assert [p.name for p in (tmp_path / "a").iterdir()] == expected, attempt
        for p in (tmp_path / "a").iterdir():
            p.unlink()


def test_hold_back_withholds_the_tail_without_copying():
    from opscenter.streaming.streams import HoldBack

    written: list[bytes] = []
    counted: list[int] = []
    hb = HoldBack(written.append, 64 * 1024, counted.append)
    blocks = [os.urandom(n) for n in (10, 70_000, 1 << 20, 5, 30_000, 200_000, 1)]
    pushed = 0
    for b in blocks:
        hb.push(b)
        pushed += len(b)
        assert hb.held_bytes >= min(64 * 1024, pushed)
        assert sum(map(len, written)) + hb.held_bytes == pushed
    hb.release()
    assert b"".join(written) == b"".join(blocks) and sum(counted) == len(b"".join(blocks))
    # Blocks are handed over as the very objects pushed (no copies).
    assert all(any(w is b for b in blocks) for w in written)


def test_channel_reader_and_block_writer_pass_blocks_through():
    from opscenter.streaming.streams import BlockWriter, ChannelReader

    ch: Channel[bytes] = Channel(4)
    big = os.urandom(100_000)
    ch.put(big)
    ch.put(b"xyz")
    ch.close()
    reader = ChannelReader(ch)
    assert reader.read(1 << 20) is big  # a whole block: no copy
    assert reader.read(2) == b"xy" and reader.read() == b"z" and reader.read() == b""
    out: list[bytes] = []
    bw = BlockWriter(out.append, block_size=1000)
    bw.write(b"a" * 600)
    bw.write(bytearray(b"b" * 600))  # a reusable buffer is copied, once
    bw.write(b"c" * 10)
    bw.finish()
    assert out == [b"a" * 600 + b"b" * 600, b"c" * 10]


def test_globals_key_and_backup_objects():
    from opscenter.streaming.manifest import backup_object_keys, globals_key

    key = "postgresql/app/20240501T030000Z-1a2b3c4d.dump.zst.age"
    g = "postgresql/app/20240501T030000Z-1a2b3c4d.globals.sql.zst.age"
    assert globals_key(key) == g
    assert globals_key("p/db.dump") == "p/db.globals.sql"
    assert globals_key("x/custom.bin", Compression.GZIP, True) == "x/custom.bin.globals.sql.gz.age"
    assert globals_key("x/a.dumpling.zst") == "x/a.dumpling.zst.globals.sql"
    assert backup_object_keys(key) == [key, g, key + ".manifest.json"]
    assert backup_object_keys("mysql/app/x.sql.zst") == [
        "mysql/app/x.sql.zst",
        "mysql/app/x.sql.zst.manifest.json",
    ]
    validate_key(g)


def test_manifest_json_roundtrip_with_globals():
    import dataclasses

    from opscenter.streaming.manifest import GlobalsInfo, Manifest

    m = Manifest(
        key="postgresql/app/x.dump.zst",
        engine="postgresql",
        dump_format="pg_custom",
        database="app",
        server_version="150020",
        tool="pg_dump",
        tool_versions={"pg_dump": "15"},
        size_bytes=10,
        original_size_bytes=20,
        sha256="a" * 64,
        compression="zstd",
        encryption=None,
        started_at="2024-05-01T03:00:00+00:00",
        created_at="2024-05-01T03:00:01+00:00",
        duration_seconds=1.0,
        restore_command="cat x | zstd -d | pg_restore",
        globals=GlobalsInfo(
            status="saved",
            key="postgresql/app/x.globals.sql.zst",
            size_bytes=5,
            original_size_bytes=9,
            sha256="b" * 64,
            role_passwords=False,
        ),
    )
    assert Manifest.from_json(m.to_json()) == m
    skipped = dataclasses.replace(m, globals=GlobalsInfo(status="skipped", reason="no"))
    assert Manifest.from_json(skipped.to_json()) == skipped
    bad = m.to_json().replace(b'"saved"', b'"maybe"')
    with pytest.raises(BackupError) as info:
        Manifest.from_json(bad)
    assert info.value.code is ErrorCode.MANIFEST_INVALID
