"""SftpStorage against a real OpenSSH sshd (internal-sftp) on loopback.

The server is this machine, so the SFTP root is a local temp dir the tests can inspect.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from opscenter.remote.ssh import HostKeyInfo
from opscenter.stores.backends import StorageError
from opscenter.stores.sftp import SftpStorage
from opscenter.streaming.manifest import read_manifest
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.verification import quick_verify

from ..backups.helpers import ShellSource
from .conftest import SshServer, keygen


def _files(root: Path) -> list[str]:
    """Every file under root, hidden and partial ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
async def store(sshd: SshServer, tmp_path: Path):
    s = SftpStorage(sshd.config(), str(tmp_path / "sftp-root"))
    yield s
    await s.close()


async def _put(store: SftpStorage, key: str, data: bytes, **kw: bool) -> None:
    writer = await store.open_writer(key, **kw)
    await writer.write(data)
    await writer.commit()


async def _get(store: SftpStorage, key: str, **kw: int) -> bytes:
    out = bytearray()
    async with await store.open_reader(key, **kw) as reader:
        while chunk := await reader.read(300_000):
            out += chunk
    return bytes(out)


async def test_round_trip_multi_mib(store: SftpStorage, tmp_path: Path):
    data = os.urandom(13 * 1024 * 1024 + 12345)
    writer = await store.open_writer("pg/prod/2024.dump.zst")
    pos = 0
    for size in (1, 4096, 1 << 20, 3 << 20, 777_777):  # uneven blocks, then the rest
        await writer.write(memoryview(data)[pos : pos + size])
        pos += size
    await writer.write(data[pos:])
    assert writer.bytes_written == len(data)
    root = tmp_path / "sftp-root"
    # Before commit only a hidden partial exists.
    assert [Path(f).name.startswith(".") for f in _files(root)] == [True]
    info = await writer.commit()
    assert (info.key, info.size) == ("pg/prod/2024.dump.zst", len(data))
    assert _files(root) == ["pg/prod/2024.dump.zst"]
    assert (root / "pg/prod/2024.dump.zst").stat().st_mode & 0o777 == 0o600
    back = await _get(store, "pg/prod/2024.dump.zst")
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    st = await store.stat("pg/prod/2024.dump.zst")
    assert st.size == len(data) and abs(st.modified - time.time()) < 60
    assert await store.exists("pg/prod/2024.dump.zst")


async def test_ranges(store: SftpStorage):
    data = bytes(range(256)) * 8192  # 2 MiB
    await _put(store, "r/obj", data)
    assert await _get(store, "r/obj", offset=1000, length=1_500_000) == data[1000:1_501_000]
    assert await _get(store, "r/obj", offset=len(data) - 10) == data[-10:]
    assert await _get(store, "r/obj", offset=len(data)) == b""
    assert await _get(store, "r/obj", offset=5, length=0) == b""
    assert await _get(store, "r/obj", offset=len(data) - 3, length=100) == data[-3:]
    with pytest.raises(StorageError) as info:
        await store.open_reader("r/obj", offset=-1)
    assert info.value.code == "invalid_range"
    with pytest.raises(StorageError) as info:
        await store.open_reader("r/missing")
    assert info.value.code == "not_found"


async def test_abort_leaves_no_partial(store: SftpStorage, tmp_path: Path):
    root = tmp_path / "sftp-root"
    writer = await store.open_writer("a/b/c")
    await writer.write(b"x" * 100_000)
    await writer.abort()
    await writer.abort()  # idempotent
    assert _files(root) == []
    with pytest.raises(StorageError) as info:
        await writer.write(b"more")
    assert info.value.code == "closed"

    with pytest.raises(RuntimeError):
        async with await store.open_writer("a/b/d") as w:
            await w.write(b"y" * 1000)
            raise RuntimeError("boom")
    assert _files(root) == []

    # Cancelled in the middle of a write: the partial is still removed.
    started = asyncio.Event()

    async def slow_upload() -> None:
        w = await store.open_writer("a/b/e")
        try:
            while True:
                await w.write(os.urandom(1 << 20))
                started.set()
        except BaseException:
            await w.abort()
            raise

    task = asyncio.ensure_future(slow_upload())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _files(root) == []
    assert not await store.exists("a/b/e")


async def test_exists_overwrite_and_concurrent_writers(store: SftpStorage, tmp_path: Path):
    await _put(store, "k/obj", b"first")
    with pytest.raises(StorageError) as info:
        await store.open_writer("k/obj")
    assert info.value.code == "exists"
    await _put(store, "k/obj", b"second", overwrite=True)
    assert await _get(store, "k/obj") == b"second"

    # Two writers race for a new key: one commits, the other gets "exists".
    w1 = await store.open_writer("k/race")
    w2 = await store.open_writer("k/race")
    await w1.write(b"one")
    await w2.write(b"two")
    await w1.commit()
    with pytest.raises(StorageError) as info:
        await w2.commit()
    assert info.value.code == "exists"
    assert await _get(store, "k/race") == b"one"
    assert _files(tmp_path / "sftp-root") == ["k/obj", "k/race"]


async def test_stat_delete_and_invalid_keys(store: SftpStorage):
    with pytest.raises(StorageError) as info:
        await store.stat("nope/x")
    assert info.value.code == "not_found"
    assert not await store.exists("nope/x")
    await store.delete("nope/x")  # idempotent
    await _put(store, "d/x", b"1")
    await store.delete("d/x")
    assert not await store.exists("d/x")
    with pytest.raises(StorageError) as info:
        await store.stat("d")  # a directory is not an object
    assert info.value.code == "not_found"
    for bad in ("../etc/passwd", "/abs", "a/../b", "x.partial"):
        with pytest.raises(StorageError) as info:
            await store.open_writer(bad)
        assert info.value.code == "invalid_key"


async def test_list_prefix(store: SftpStorage):
    keys = ["a/x1", "a/x2", "a/b/y", "ab", "b/z", "top"]
    for k in keys:
        await _put(store, k, k.encode())
    pending = await store.open_writer("a/in-progress")
    await pending.write(b"partial")
    try:

        async def listed(prefix: str = "") -> list[str]:
            return [o.key async for o in store.list(prefix)]

        assert sorted(await listed()) == sorted(keys)
        assert sorted(await listed("a/")) == ["a/b/y", "a/x1", "a/x2"]
        assert sorted(await listed("a/x")) == ["a/x1", "a/x2"]
        assert sorted(await listed("a")) == ["a/b/y", "a/x1", "a/x2", "ab"]
        assert await listed("zzz/") == []
        sizes = {o.key: o.size async for o in store.list()}
        assert sizes["a/b/y"] == 5
        with pytest.raises(StorageError):
            await listed("../")
    finally:
        await pending.abort()


async def test_cleanup_partials(store: SftpStorage, tmp_path: Path):
    root = tmp_path / "sftp-root"
    old = await store.open_writer("c/old")
    await old.write(b"o" * 10)
    fresh = await store.open_writer("c/fresh")
    await fresh.write(b"f" * 10)
    # Simulate a writer that died a day ago.
    old_partial = root / old.temp_path.removeprefix(str(root) + "/")
    past = time.time() - 86400
    os.utime(old_partial, (past, past))
    await _put(store, "c/done", b"kept")
    assert await store.cleanup_partials(older_than_seconds=3600) == 1
    assert not old_partial.exists()
    assert len(_files(root)) == 2  # c/done and the fresh partial
    assert await store.cleanup_partials() == 1
    assert _files(root) == ["c/done"]


async def test_space(store: SftpStorage, tmp_path: Path):
    space = await store.space()
    st = os.statvfs(tmp_path)
    assert space.total_bytes == st.f_blocks * st.f_frsize
    assert space.free_bytes is not None and space.free_bytes > 0
    assert space.used_bytes is not None and 0 <= space.used_bytes <= space.total_bytes


async def test_disk_full(sshd: SshServer, tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode().strip()}")
    try:
        async with SftpStorage(sshd.config(), str(mnt)) as store:
            writer = await store.open_writer("big/object")
            with pytest.raises(StorageError) as info:
                for _ in range(8):
                    await writer.write(os.urandom(1 << 20))
                await writer.commit()
            assert info.value.code == "disk_full" and not info.value.retryable
            assert _files(mnt) == []
            await _put(store, "small", b"fits")  # space is back
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_backup_pipeline_into_sftp(store: SftpStorage):
    result = await run_backup(
        ShellSource("head -c 3000000 /dev/urandom"),
        store,
        options=BackupOptions(labels={"target": "sftp-test"}),
    )
    manifest = await read_manifest(store, result.key)
    assert manifest.size_bytes == result.size_bytes
    verified = await quick_verify(store, manifest)
    assert verified.sha256 == result.sha256
    assert sorted([o.key async for o in store.list()]) == sorted(
        [result.key, f"{result.key}.manifest.json"]
    )


# --------------------------------------------------------------------------- auth, pins, loss


async def test_host_key_pinning(sshd: SshServer, tmp_path: Path):
    seen: list[HostKeyInfo] = []
    async with SftpStorage(sshd.config(), str(tmp_path / "r"), on_host_key=seen.append) as s:
        await s.space()
        assert [k.public_key for k in seen] == [sshd.host_key_line]
        assert s.host_key == seen[0]
    async with SftpStorage(sshd.config(host_key=sshd.host_fingerprint), str(tmp_path)) as s:
        assert (await s.connect()).pinned
    other = tmp_path / "other_key"
    keygen(other)
    wrong = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    async with SftpStorage(sshd.config(host_key=wrong), str(tmp_path)) as s:
        with pytest.raises(StorageError) as info:
            await s.exists("x")
    assert info.value.code == "host_key_mismatch" and not info.value.retryable
    assert "host key mismatch" in info.value.message


async def test_wrong_password(sshd: SshServer, tmp_path: Path):
    password = "wrong-" + secrets.token_hex(8)
    async with SftpStorage(sshd.config(private_key=None, password=password), str(tmp_path)) as s:
        with pytest.raises(StorageError) as info:
            await s.open_writer("x")
    assert info.value.code == "auth_failed" and not info.value.retryable
    assert password not in str(info.value)


async def test_connection_loss_is_retryable_then_recovers(make_sshd, tmp_path: Path):
    server = make_sshd()
    root = tmp_path / "r"
    async with SftpStorage(server.config(), str(root)) as store:
        writer = await store.open_writer("lost/object")
        await writer.write(b"z" * 100_000)
        server.drop_connections()
        with pytest.raises(StorageError) as info:
            for _ in range(50):
                await writer.write(b"z" * 100_000)
                await asyncio.sleep(0.05)
            await writer.commit()
        assert info.value.code == "io_error" and info.value.retryable
        assert not await store.exists("lost/object")  # reconnected
        # The partial of the lost connection is an orphan for cleanup_partials.
        orphans = _files(root)
        assert len(orphans) == 1 and orphans[0].endswith(".partial")
        assert await store.cleanup_partials() == 1
        assert _files(root) == []
        await _put(store, "lost/object", b"retried")
        assert await _get(store, "lost/object") == b"retried"
