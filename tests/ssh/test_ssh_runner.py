"""SshRunner against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.postgres import PgConnection
from opscenter.remote.runner import Command, SecretFile
from opscenter.remote.ssh import HostKeyInfo, HostKeyMismatch, SshRunner, probe_host
from opscenter.stores.backends import LocalStorage
from opscenter.streaming.crypto import generate_identity, recipient_of
from opscenter.streaming.manifest import read_manifest
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import PostgresTarget
from opscenter.streaming.sources import PostgresSource

from ..backups.conftest import new_name, pg_table_hashes, psql
from ..backups.helpers import ShellSource, pgrep, until
from .conftest import SshServer, keygen


async def _read_all(fd: int) -> bytes:
    def read() -> bytes:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        os.close(fd)
        return b"".join(chunks)

    return await asyncio.to_thread(read)


@pytest.fixture
async def runner(sshd: SshServer):
    r = SshRunner(sshd.config())
    yield r
    await r.close()


# --------------------------------------------------------------------------- basics


async def test_run_reads_stdout_and_status(runner: SshRunner):
    res = await runner.run(Command(("echo", "hello", "it's a $HOME `x`")))
    assert res.returncode == 0
    assert res.stdout == b"hello it's a $HOME `x`\n"
    res = await runner.run(Command(("sh", "-c", "echo oops >&2; exit 3")))
    assert (res.returncode, res.stderr.strip()) == (3, "oops")
    res = await runner.run(Command(("cat",)), input=b"bin\x00ary\n")
    assert res.stdout == b"bin\x00ary\n"
    # Killed by a signal on the remote side: negative, as with the local runner.
    res = await runner.run(Command(("sh", "-c", "kill -9 $$")))
    assert res.returncode == -9
    res = await runner.run(Command(("pwd",), cwd="/usr/lib"))
    assert res.stdout == b"/usr/lib\n"


async def test_start_streams_stdout_to_fd(runner: SshRunner):
    size = 24 * 1024 * 1024
    rfd, wfd = os.pipe()
    proc = await runner.start(Command(("sh", "-c", f"yes abcdefg | head -c {size}")), stdout=wfd)
    os.close(wfd)  # as the pipeline does: the runner keeps its own copy
    data, rc = await asyncio.gather(_read_all(rfd), proc.wait())
    assert rc == 0
    assert len(data) == size
    assert hashlib.sha256(data).digest() == hashlib.sha256((b"abcdefg\n" * size)[:size]).digest()


async def test_start_stdout_to_regular_file(runner: SshRunner, tmp_path: Path):
    target = tmp_path / "out.bin"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        proc = await runner.start(Command(("head", "-c", "3000000", "/dev/zero")), stdout=fd)
    finally:
        os.close(fd)
    assert await proc.wait() == 0
    assert await until(lambda: target.stat().st_size == 3_000_000)


async def test_output_in_flight_survives_exit(runner: SshRunner):
    # The command exits while most of its output is still buffered on our side
    # (nobody read yet): wait() returns, and every byte still reaches the reader.
    rfd, wfd = os.pipe()
    size = 1_000_000
    proc = await runner.start(Command(("head", "-c", str(size), "/dev/urandom")), stdout=wfd)
    os.close(wfd)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    await asyncio.sleep(0.2)
    assert len(await _read_all(rfd)) == size


async def test_start_streams_stdin_from_fd(runner: SshRunner):
    payload = os.urandom(8 * 1024 * 1024) + b"\nOPSCENTER_fake_sentinel\n"
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    proc = await runner.start(Command(("sha256sum",)), stdin=in_r, stdout=out_w)
    os.close(in_r)
    os.close(out_w)

    def feed() -> None:
        view = memoryview(payload)
        while view:
            view = view[os.write(in_w, view[: 1 << 20]) :]
        os.close(in_w)

    _, out, rc = await asyncio.gather(asyncio.to_thread(feed), _read_all(out_r), proc.wait())
    assert rc == 0
    assert out.split()[0].decode() == hashlib.sha256(payload).hexdigest()


async def test_which_and_glob_run_remotely(runner: SshRunner):
    import glob as globmod

    assert (await runner.which("sh") or "").startswith("/")
    assert await runner.which("no-such-tool-opscenter") is None
    pattern = "/usr/lib/postgresql/*/bin"
    assert await runner.glob(pattern) == sorted(globmod.glob(pattern))
    # A pattern is only globbed, never run as shell syntax.
    marker = Path("/tmp") / f"opscenter-glob-{secrets.token_hex(4)}"
    assert await runner.glob(f"/nonexistent/$(touch {marker})*") == []
    assert not marker.exists()


async def test_missing_tool_raises_file_not_found(runner: SshRunner):
    with pytest.raises(FileNotFoundError):
        await runner.start(Command(("no-such-tool-opscenter", "--version")))
    with pytest.raises(FileNotFoundError):
        await runner.run(Command(("/usr/bin/no-such-tool-opscenter",)))
    with pytest.raises(FileNotFoundError):
        await runner.run(Command(("true",), cwd="/no/such/dir"))


# --------------------------------------------------------------------------- secrets


async def test_env_secrets_never_in_remote_argv(runner: SshRunner):
    secret = "pw-" + secrets.token_hex(12)
    file_secret = "file-" + secrets.token_hex(12)
    duration = f"30.{secrets.randbelow(10**6):06d}"
    sf = SecretFile("client", f"[client]\npassword={file_secret}\n".encode())
    proc = await runner.start(
        Command(
            ("sh", "-c", f'sleep {duration}; echo "$PGPASSWORD" >&2', "sh", sf.ref),
            env={"PGPASSWORD": secret, "PGUSER": "someone"},
            secret_files=(sf,),
            secrets=(secret,),
        )
    )
    try:
        assert await until(lambda: bool(pgrep(f"sleep {duration}")))
        ps = await runner.run(Command(("ps", "-eo", "args")))
        assert f"sleep {duration}" in ps.stdout.decode()
        assert secret not in ps.stdout.decode()
        assert file_secret not in ps.stdout.decode()
        # Locally too (loopback: remote == local), through /proc/*/cmdline.
        local = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert secret not in local and file_secret not in local
    finally:
        proc.kill()
        await proc.wait()

    # The variable does reach the tool, and its output is scrubbed of it.
    res = await runner.run(
        Command(
            ("sh", "-c", 'printf %s "$PGPASSWORD"; echo "password is $PGPASSWORD" >&2'),
            env={"PGPASSWORD": secret},
            secrets=(secret,),
        )
    )
    assert res.stdout.decode() == secret
    assert secret not in res.stderr and "***" in res.stderr


async def test_secret_files_private_and_never_left_on_disk(runner: SshRunner):
    content = b"[client]\npassword='x\"%s\\n\x00\xff\n"
    sf = SecretFile("my", content)
    # The tool reads an open descriptor whose file was removed before it started: a
    # killed process (or a killed opscenter) leaves no secret on the host.
    script = 'stat -L -c "%a" "$1"; readlink "$1"; cat "$1"'
    res = await runner.run(Command(("sh", "-c", script, "sh", sf.ref), secret_files=(sf,)))
    assert res.returncode == 0, res.stderr
    mode, target, rest = res.stdout.split(b"\n", 2)
    assert mode == b"600" and rest == content
    assert target.startswith(b"/tmp/opscenter-secret.") and target.endswith(b" (deleted)")
    directory = target.removesuffix(b" (deleted)").rsplit(b"/", 1)[0].decode()
    assert not Path(directory).exists()


# --------------------------------------------------------------------------- kill, loss


async def test_kill_stops_remote_process_group(runner: SshRunner):
    a, b = f"61.{secrets.randbelow(10**6):06d}", f"62.{secrets.randbelow(10**6):06d}"
    rfd, wfd = os.pipe()
    proc = await runner.start(
        Command(("sh", "-c", f"sleep {a} & sleep {b}; yes; wait")), stdout=wfd
    )
    os.close(wfd)
    reader = asyncio.ensure_future(_read_all(rfd))
    assert await until(lambda: bool(pgrep(f"sleep {a}")) and bool(pgrep(f"sleep {b}")))
    assert proc.returncode is None and proc.pid is not None
    t0 = time.monotonic()
    proc.kill()
    rc = await asyncio.wait_for(proc.wait(), 10)
    assert rc < 0
    assert time.monotonic() - t0 < 5
    assert await until(lambda: not pgrep(f"sleep {a}") and not pgrep(f"sleep {b}"))
    await asyncio.wait_for(reader, 10)  # the caller's read end saw EOF


async def test_kill_while_reader_stalled_and_reader_closing(runner: SshRunner):
    # Nobody reads: the SSH channel is flow-controlled; kill still ends it promptly.
    rfd, wfd = os.pipe()
    proc = await runner.start(Command(("yes", "stalled-reader")), stdout=wfd)
    os.close(wfd)
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    proc.kill()
    assert await asyncio.wait_for(proc.wait(), 10) == -9
    assert time.monotonic() - t0 < 5
    await asyncio.wait_for(_read_all(rfd), 5)  # EOF after at most the buffered bytes
    assert await until(lambda: not pgrep("yes stalled-reader"))

    # The reader goes away: the remote writer gets SIGPIPE, as a local one would.
    rfd, wfd = os.pipe()
    proc = await runner.start(Command(("yes", "closed-reader")), stdout=wfd)
    os.close(wfd)
    await asyncio.to_thread(os.read, rfd, 1000)
    os.close(rfd)
    assert await asyncio.wait_for(proc.wait(), 10) == -13
    assert await until(lambda: not pgrep("yes closed-reader"))


async def test_stalled_backup_over_ssh_kills_remote_dump(runner: SshRunner, tmp_path: Path):
    duration = f"63.{secrets.randbelow(10**6):06d}"
    with pytest.raises(BackupError) as info:
        await run_backup(
            ShellSource(f"printf x; sleep {duration}"),
            LocalStorage(tmp_path / "store"),
            options=BackupOptions(stall_timeout=1.0),
            runner=runner,
        )
    assert info.value.code is ErrorCode.STALLED
    assert await until(lambda: not pgrep(f"sleep {duration}"))
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


async def test_dropped_connection_fails_the_command(make_sshd):
    server = make_sshd()
    runner = SshRunner(server.config(keepalive_interval=1.0, keepalive_count_max=2))
    duration = f"64.{secrets.randbelow(10**6):06d}"
    try:
        rfd, wfd = os.pipe()
        proc = await runner.start(Command(("sleep", duration)), stdout=wfd)
        os.close(wfd)
        reader = asyncio.ensure_future(_read_all(rfd))
        server.drop_connections()
        rc = await asyncio.wait_for(proc.wait(), 15)
        assert rc == 255
        assert "connection" in proc.stderr_tail() and "lost" in proc.stderr_tail()
        await asyncio.wait_for(reader, 5)
        # The runner reconnects for the next command.
        assert (await runner.run(Command(("echo", "again")))).stdout == b"again\n"
    finally:
        await runner.close()
        subprocess.run(["pkill", "-f", f"sleep {duration}"], check=False)


# --------------------------------------------------------------------------- auth, host keys


async def test_wrong_password_is_auth_failed_without_password(sshd: SshServer):
    password = "wrong-" + secrets.token_hex(10)
    config = sshd.config(private_key=None, password=password)
    runner = SshRunner(config)
    with pytest.raises(BackupError) as info:
        await runner.run(Command(("true",)))
    err = info.value
    assert err.code is ErrorCode.AUTH_FAILED and not err.retryable
    for text in (str(err), repr(err), err.message, err.detail, repr(config)):
        assert password not in text
    with pytest.raises(BackupError) as info2:
        await probe_host(config)
    assert info2.value.code is ErrorCode.AUTH_FAILED and password not in str(info2.value)


async def test_pem_and_encrypted_keys(sshd: SshServer, tmp_path: Path):
    pem = tmp_path / "id_rsa_pem"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(pem)],
        check=True,
    )
    enc = tmp_path / "id_enc"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "pass-phrase", "-f", str(enc)], check=True
    )
    auth = sshd.root / "authorized_keys"
    original = auth.read_text()
    auth.write_text(original + pem.with_suffix(".pub").read_text() + Path(f"{enc}.pub").read_text())
    try:
        assert pem.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
        for config in (
            sshd.config(private_key=pem.read_text()),
            sshd.config(private_key=enc.read_text(), passphrase="pass-phrase"),
        ):
            async with SshRunner(config) as r:
                assert (await r.run(Command(("echo", "ok")))).stdout == b"ok\n"
        with pytest.raises(BackupError) as info:
            await probe_host(sshd.config(private_key=enc.read_text(), passphrase="nope"))
        assert info.value.code is ErrorCode.INVALID_CONFIG
    finally:
        auth.write_text(original)


async def test_unreachable_is_retryable(sshd: SshServer):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackupError) as info:
        await probe_host(sshd.config(port=port, connect_timeout=3))
    assert info.value.code is ErrorCode.UNREACHABLE and info.value.retryable


async def test_probe_reports_host_key_and_latency(sshd: SshServer):
    result = await probe_host(sshd.config())
    assert result.host_key.public_key == sshd.host_key_line
    assert result.host_key.fingerprint == sshd.host_fingerprint
    assert result.host_key.pinned is False
    assert result.server_version.startswith("SSH-2.0-OpenSSH")
    assert 0 < result.connect_seconds < 10 and 0 < result.latency_seconds < 10
    pinned = await probe_host(sshd.config(host_key=sshd.host_fingerprint))
    assert pinned.host_key.pinned is True


async def test_host_key_pinned_on_first_use_then_fails_closed(make_sshd, tmp_path: Path):
    server = make_sshd()
    seen: list[HostKeyInfo] = []
    tofu = SshRunner(server.config(), on_host_key=seen.append)
    try:
        assert (await tofu.run(Command(("true",)))).returncode == 0
        assert len(seen) == 1 and seen[0].public_key == server.host_key_line
        assert tofu.host_key == seen[0] and seen[0].pinned is False
        old_line, old_fp = server.host_key_line, server.host_fingerprint

        # Known key (line or fingerprint) that matches: accepted.
        for pin in (old_line, old_fp, f"[127.0.0.1]:{server.port} {old_line}"):
            async with SshRunner(server.config(host_key=pin)) as r:
                assert (await r.connect()).pinned is True

        # The server's key changes (same host and port).
        server.stop()
        server.regenerate_host_key()
        server.start()
        assert server.host_key_line != old_line
        for runner in (tofu, SshRunner(server.config(host_key=old_line))):
            with pytest.raises(HostKeyMismatch) as info:
                await runner.run(Command(("true",)))
            err = info.value
            assert err.code is ErrorCode.AUTH_FAILED and not err.retryable
            assert "host key mismatch" in str(err)
            assert err.seen is not None and err.seen.fingerprint == server.host_fingerprint
        with pytest.raises(HostKeyMismatch):
            await probe_host(server.config(host_key=old_fp))
        assert len(seen) == 1  # nothing new was accepted

        # A pin of another algorithm than the server offers also fails closed.
        rsa = tmp_path / "other_rsa"
        keygen(rsa, "rsa")
        rsa_line = " ".join(Path(f"{rsa}.pub").read_text().split()[:2])
        with pytest.raises(HostKeyMismatch):
            await probe_host(server.config(host_key=rsa_line))
        with pytest.raises(BackupError) as bad:
            await probe_host(server.config(host_key="not a key"))
        assert bad.value.code is ErrorCode.INVALID_CONFIG
    finally:
        await tofu.close()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_dbs():
    created: list[str] = []

    def make(create: bool = True) -> str:
        name = new_name("oc_test_ssh")
        created.append(name)
        if create:
            psql("postgres", f'CREATE DATABASE "{name}"')
        return name

    yield make
    for name in created:
        psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)


SCHEMA = """
create table items (id bigserial primary key, name text, payload bytea, j jsonb, n numeric);
insert into items (name, payload, j, n)
select 'item ' || g || ' café', decode(md5(g::text), 'hex'), jsonb_build_object('g', g),
       g * 1.5 from generate_series(1, 20000) g;
create table other as select g, repeat(md5(g::text), 20) t from generate_series(1, 3000) g;
"""


@pytest.mark.postgres
async def test_postgres_backup_over_ssh_restore_locally(runner: SshRunner, pg_dbs, tmp_path):
    src = pg_dbs()
    psql(src, SCHEMA)
    identity = generate_identity()
    storage = LocalStorage(tmp_path / "store")
    # A password (ignored by trust auth) proves the env path without leaking it.
    conn = PgConnection("127.0.0.1", src, 5432, "postgres", password="pg-" + secrets.token_hex(8))
    result = await run_backup(
        PostgresSource(conn),
        storage,
        options=BackupOptions(recipients=(recipient_of(identity),), row_counts=True),
        runner=runner,
    )
    assert result.original_size_bytes > 500_000
    manifest = await read_manifest(storage, result.key)
    assert manifest.row_counts is not None and manifest.row_counts.tables["public.items"] == 20000

    dst = pg_dbs(create=False)
    await run_restore(
        storage,
        manifest,
        PostgresTarget(PgConnection("127.0.0.1", dst, 5432, "postgres"), create=True),
        identities=[identity],
    )
    assert pg_table_hashes(dst) == pg_table_hashes(src)

    # And a restore whose pg_restore runs over SSH (stdin streamed through the channel).
    dst2 = pg_dbs(create=False)
    await run_restore(
        storage,
        manifest,
        PostgresTarget(PgConnection("127.0.0.1", dst2, 5432, "postgres"), create=True),
        identities=[identity],
        runner=runner,
    )
    assert pg_table_hashes(dst2) == pg_table_hashes(src)

    # pg_restore over SSH failing early (objects exist) while the dump is still being
    # streamed to it: a classified failure, no hang, nothing half-restored.
    with pytest.raises(BackupError) as info:
        await run_restore(
            storage,
            manifest,
            PostgresTarget(PgConnection("127.0.0.1", dst2, 5432, "postgres"), allow_non_empty=True),
            identities=[identity],
            runner=runner,
        )
    assert info.value.code is ErrorCode.RESTORE_FAILED
    assert "already exists" in info.value.detail
    assert pg_table_hashes(dst2) == pg_table_hashes(src)

    # Replacing it over SSH (pg_restore | psql in one transaction there): exactly the dump.
    psql(dst2, "create table stray (i int)")
    await run_restore(
        storage,
        manifest,
        PostgresTarget(PgConnection("127.0.0.1", dst2, 5432, "postgres"), replace=True),
        identities=[identity],
        runner=runner,
    )
    assert pg_table_hashes(dst2) == pg_table_hashes(src)

    # In parallel over SSH: staged in the SSH host's /tmp (this machine's), read there by
    # pg_restore --jobs, removed after success and after a failure alike.
    staged_before = set(Path("/tmp").glob(".opscenter-restore-*"))
    dst3 = pg_dbs(create=False)
    await run_restore(
        storage,
        manifest,
        PostgresTarget(PgConnection("127.0.0.1", dst3, 5432, "postgres"), create=True, jobs=3),
        identities=[identity],
        runner=runner,
    )
    assert pg_table_hashes(dst3) == pg_table_hashes(src)
    with pytest.raises(BackupError) as info:
        await run_restore(
            storage,
            manifest,
            PostgresTarget(
                PgConnection("127.0.0.1", dst3, 5432, "postgres"), allow_non_empty=True, jobs=2
            ),
            identities=[identity],
            runner=runner,
        )
    assert info.value.code is ErrorCode.RESTORE_FAILED
    assert "already exists" in info.value.detail
    assert set(Path("/tmp").glob(".opscenter-restore-*")) == staged_before


@pytest.mark.postgres
async def test_postgres_dump_failure_over_ssh_is_classified(runner: SshRunner, tmp_path):
    missing = new_name("oc_test_ssh_missing")
    with pytest.raises(BackupError) as info:
        await run_backup(
            PostgresSource(PgConnection("127.0.0.1", missing, 5432, "postgres")),
            LocalStorage(tmp_path / "store"),
            runner=runner,
        )
    assert info.value.code is ErrorCode.DATABASE_MISSING
