"""DockerRunner against a real Docker engine: commands run in the container, secrets
never in any argv, kill reaches the process group inside, a dump and a restore of the
container's own PostgreSQL (reachable only from inside) equal the source."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.postgres import PgConnection
from opscenter.remote.docker import DockerRunner
from opscenter.remote.runner import Command, LocalRunner, SecretFile
from opscenter.stores.backends import LocalStorage
from opscenter.streaming.crypto import generate_identity, recipient_of
from opscenter.streaming.manifest import read_manifest
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import PostgresTarget
from opscenter.streaming.sources import PostgresSource

from ..backups.helpers import pgrep, until
from .conftest import PgContainer, docker

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, doc jsonb, tags text[], blob bytea, note text);
INSERT INTO items SELECT g, jsonb_build_object('n', g, 'k', md5(g::text)),
  ARRAY[md5(g::text), 'x'], decode(md5(g::text), 'hex'), repeat('é', g % 50)
  FROM generate_series(1, 5000) g;
CREATE SEQUENCE counter START 42;
CREATE VIEW big AS SELECT id FROM items WHERE id > 4000;
CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql AS 'SELECT 2 * x';
"""
DIGEST = (
    "SELECT md5(string_agg(id || ':' || doc::text || array_to_string(tags, ',') || "
    "encode(blob, 'hex') || note, '|' ORDER BY id)) || ':' || "
    "(SELECT last_value FROM counter) || ':' || (SELECT count(*) FROM big) || ':' || twice(21) "
    "FROM items"
)


async def _until_async(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
def runner(pg_container: PgContainer) -> DockerRunner:
    return DockerRunner(LocalRunner(), pg_container.name)


async def test_run_in_the_container(runner: DockerRunner) -> None:
    res = await runner.run(Command(("sh", "-c", 'echo "$HOME:$(id -un)"; echo err >&2; exit 3')))
    assert (res.returncode, res.stdout, res.stderr) == (3, b"/var/lib/pg:postgres\n", "err")
    # The container's own file system, not this host's.
    assert (await runner.run(Command(("cat", "/etc/passwd")))).stdout.count(b"\n") == 2
    assert await runner.which("psql") is not None and await runner.which("no-such-tool") is None
    found = await runner.glob("/usr/lib/postgresql/*/bin/pg_dump")
    assert "/usr/lib/postgresql/15/bin/pg_dump" in found
    with pytest.raises(FileNotFoundError):
        await runner.run(Command(("no-such-tool", "x")))
    with pytest.raises(FileNotFoundError):
        await runner.start(Command(("no-such-tool",)))


async def test_stdin_and_stdout_stream_through(runner: DockerRunner) -> None:
    payload = os.urandom(3 << 20)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    proc = await runner.start(Command(("sh", "-c", "cat; echo done >&2")), stdin=in_r, stdout=out_w)
    os.close(in_r)
    os.close(out_w)

    def write() -> None:
        with os.fdopen(in_w, "wb") as f:
            f.write(payload)

    def read() -> bytes:
        with os.fdopen(out_r, "rb") as f:
            return f.read()

    _, echoed = await asyncio.gather(asyncio.to_thread(write), asyncio.to_thread(read))
    assert await proc.wait() == 0
    assert echoed == payload and proc.stderr_tail() == "done"


async def test_secrets_never_in_any_argv(runner: DockerRunner) -> None:
    secret = "pw-" + secrets.token_hex(12)
    file_secret = "file-" + secrets.token_hex(12)
    duration = f"30.{secrets.randbelow(10**6):06d}"
    sf = SecretFile("client", f"[client]\npassword={file_secret}\n".encode())
    proc = await runner.start(
        Command(
            ("sh", "-c", f'sleep {duration}; echo "$PGPASSWORD" >&2', "sh", sf.ref),
            env={"PGPASSWORD": secret},
            secret_files=(sf,),
            secrets=(secret,),
        )
    )
    try:
        assert await until(lambda: bool(pgrep(f"sleep {duration}")))
        # This host sees the docker client's argv and the container's processes.
        everything = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert f"sleep {duration}" in everything
        assert secret not in everything and file_secret not in everything
    finally:
        proc.kill()
        await proc.wait()
    res = await runner.run(
        Command(("sh", "-c", 'printf %s "$PGPASSWORD"; echo "pw $PGPASSWORD" >&2'),
                env={"PGPASSWORD": secret}, secrets=(secret,))
    )  # fmt: skip
    assert res.stdout.decode() == secret and secret not in res.stderr


async def test_secret_files_private_and_never_left_on_disk(runner: DockerRunner) -> None:
    sf = SecretFile("my", b"[client]\npassword=x\n")
    res = await runner.run(
        Command(("sh", "-c", 'stat -L -c %a "$1"; readlink "$1"; cat "$1"', "sh", sf.ref),
                secret_files=(sf,))
    )  # fmt: skip
    mode, target, content = res.stdout.decode().split("\n", 2)
    assert mode == "600" and content == "[client]\npassword=x\n"
    assert target.startswith("/tmp/opscenter-secret.") and target.endswith(" (deleted)")
    directory = target.removesuffix(" (deleted)").rsplit("/", 1)[0]
    assert (await runner.run(Command(("test", "-e", directory)))).returncode == 1


async def test_kill_stops_the_process_group_inside(runner: DockerRunner) -> None:
    a, b = f"61.{secrets.randbelow(10**6):06d}", f"62.{secrets.randbelow(10**6):06d}"
    rfd, wfd = os.pipe()
    command = Command(("sh", "-c", f"sleep {a} & sleep {b}; yes; wait"))
    proc = await runner.start(command, stdout=wfd)
    os.close(wfd)
    reader = asyncio.ensure_future(asyncio.to_thread(lambda: os.read(rfd, 10) and None))
    assert await until(lambda: bool(pgrep(f"sleep {a}")) and bool(pgrep(f"sleep {b}")))
    t0 = time.monotonic()
    proc.kill()
    assert await asyncio.wait_for(proc.wait(), 15) == -9
    assert time.monotonic() - t0 < 10
    assert await until(lambda: not pgrep(f"sleep {a}") and not pgrep(f"sleep {b}"))
    await reader
    os.close(rfd)


async def test_stopped_or_missing_container_is_a_clear_error(make_pg_container) -> None:
    container = make_pg_container()
    docker("stop", "-t", "1", container.name)
    for name in (container.name, "oc-test-no-such-container"):
        with pytest.raises(BackupError) as info:
            await DockerRunner(LocalRunner(), name).run(Command(("true",)))
        assert info.value.code is ErrorCode.UNREACHABLE
        assert name in info.value.message and "running" in info.value.message


class _Recording:
    """A runner that remembers the commands it ran to completion."""

    def __init__(self, inner: DockerRunner) -> None:
        self.inner = inner
        self.ran: list[Command] = []

    async def run(self, command: Command, **kwargs: Any) -> Any:
        self.ran.append(command)
        return await self.inner.run(command, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_postgres_in_container_dump_and_restore_equal(
    runner: DockerRunner, pg_container: PgContainer, tmp_path: Path
) -> None:
    src = "oc_docker_" + secrets.token_hex(4)
    pg_container.psql(f'CREATE DATABASE "{src}"')
    pg_container.psql(SCHEMA, src)
    identity = generate_identity()
    storage = LocalStorage(tmp_path / "store")
    # The database listens on 127.0.0.1 inside the container only (--network none).
    conn = PgConnection("127.0.0.1", src, 5432, "postgres", password="pw-" + secrets.token_hex(6))
    result = await run_backup(
        PostgresSource(conn),
        storage,
        options=BackupOptions(recipients=(recipient_of(identity),), row_counts=True),
        runner=runner,
    )
    manifest = await read_manifest(storage, result.key)
    assert manifest.row_counts is not None and manifest.row_counts.tables["public.items"] == 5000

    dst = "oc_docker_" + secrets.token_hex(4)
    await run_restore(
        storage,
        manifest,
        PostgresTarget(PgConnection("127.0.0.1", dst, 5432, "postgres"), create=True),
        identities=[identity],
        runner=runner,
    )
    assert pg_container.psql(DIGEST, dst) == pg_container.psql(DIGEST, src)
    assert len(pg_container.psql(DIGEST, src)) > 40

    # In parallel: staged in the container's /tmp, pg_restore --jobs there, file gone.
    recording = _Recording(runner)
    parallel = "oc_docker_" + secrets.token_hex(4)
    await run_restore(
        storage,
        manifest,
        PostgresTarget(PgConnection("127.0.0.1", parallel, 5432, "postgres"), create=True, jobs=2),
        identities=[identity],
        runner=recording,
    )
    assert pg_container.psql(DIGEST, parallel) == pg_container.psql(DIGEST, src)
    (restore_cmd,) = [c for c in recording.ran if "--jobs=2" in c.argv]
    assert restore_cmd.argv[-1].startswith("/tmp/.opscenter-restore-")
    left = await runner.run(Command(("sh", "-c", "ls -a /tmp")))
    assert left.returncode == 0 and b".opscenter-restore-" not in left.stdout

    # A dump killed in the container fails classified, and leaves nothing in storage.
    pg_container.psql("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 20) AS t "
                      "FROM generate_series(1, 200000) g", src)  # fmt: skip
    before = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())
    task = asyncio.ensure_future(
        run_backup(PostgresSource(conn), storage,
                   options=BackupOptions(recipients=(recipient_of(identity),)), runner=runner)
    )  # fmt: skip

    def dump_pids() -> list[int]:
        """Host pids of the container's dump (not a `pg_dump --version` probe)."""
        rows = docker("top", pg_container.name, "-eo", "pid,args").stdout.splitlines()[1:]
        return [
            int(row.split()[0])
            for row in rows
            if len(row.split()) > 2
            and row.split()[1].endswith("/pg_dump")
            and "--version" not in row
        ]

    pids: list[int] = []

    def dumping() -> bool:
        pids[:] = dump_pids()
        return bool(pids)

    # (docker calls in threads: the backup runs on this event loop)
    assert await _until_async(lambda: asyncio.to_thread(dumping), 20)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # ended on its own meanwhile
            os.kill(pid, 9)
    with pytest.raises(BackupError) as info:
        await task
    assert info.value.code is ErrorCode.DUMP_KILLED
    assert sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file()) == before
