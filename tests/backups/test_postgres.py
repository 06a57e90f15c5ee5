"""PostgreSQL: round trip, standard-tools restore, and injected faults."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import textwrap

import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.postgres import PgConnection
from opscenter.stores.backends import LocalStorage
from opscenter.streaming.manifest import Manifest, read_manifest, scan_catalog, write_manifest
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import PostgresTarget
from opscenter.streaming.sources import PostgresSource
from opscenter.streaming.streams import Compression
from opscenter.streaming.verification import deep_verify, quick_verify

from .conftest import all_files, ensure_age_cli, have, pg_table_hashes, psql
from .helpers import HookedStorage, RecordingRunner, group_gone, process_gone

pytestmark = pytest.mark.postgres

VARIED_SCHEMA = textwrap.dedent(
    r"""
    create table kinds (
      id bigserial primary key,
      j json, jb jsonb, b bytea, arr int[], tarr text[], big text,
      n numeric(40, 12), ts timestamptz, t timestamp, d date, u uuid,
      f float8, flag boolean, iv interval
    );
    insert into kinds (j, jb, b, arr, tarr, big, n, ts, t, d, u, f, flag, iv)
    select json_build_object('k', g, 'nested', json_build_array(g, 'x')),
           jsonb_build_object('k', g, 'emoji', 'café ☕ 🎉', 'null', null),
           decode(md5(g::text) || '00ff', 'hex') || '\x0001'::bytea,
           array[g, g * 2, -g], array['a,b', 'qu"ote', null, 'ü'],
           repeat(md5(g::text), 10 + g % 50),
           (g * 1234567.890123456789)::numeric(40, 12),
           '2024-03-31 01:59:59.123456+02'::timestamptz + g * interval '1 hour',
           '1999-12-31 23:59:59.999999'::timestamp - g * interval '1 day',
           date '2000-02-29' + g, md5(g::text)::uuid, g / 7.0, g % 2 = 0,
           make_interval(days => g, secs => g / 3.0)
    from generate_series(1, 2000) g;
    insert into kinds (big) values (repeat('big text ', 200000));
    insert into kinds default values;
    create sequence counter_seq start 100;
    select setval('counter_seq', 4242);
    create view v_kinds as select id, jb ->> 'k' as k from kinds where flag;
    create function add_ints(a int, b int) returns int language sql immutable
      as 'select a + b';
    create table audited (id int primary key, val text, audit int);
    create function bump_audit() returns trigger language plpgsql as $$
      begin new.audit := coalesce(new.audit, 0) + 1; return new; end $$;
    create trigger trg_audit before insert or update on audited
      for each row execute function bump_audit();
    insert into audited (id, val) values (1, 'one'), (2, 'two');
    """
)


def _objects(db: str) -> dict[str, str]:
    return {
        "seq": psql(db, "select last_value || '/' || is_called from counter_seq"),
        "serial": psql(db, "select last_value from kinds_id_seq"),
        "view": psql(db, "select count(*) || '/' || sum(k::int) from v_kinds"),
        "func": psql(db, "select add_ints(2, 3)"),
    }


async def test_roundtrip_varied_types(pg_db, pg_conn, storage, age_identity, age_recipient):
    src_db = pg_db()
    psql(src_db, VARIED_SCHEMA)
    result = await run_backup(
        PostgresSource(pg_conn(src_db)),
        storage,
        options=BackupOptions(recipients=(age_recipient,), row_counts=True),
    )
    assert result.encrypted and result.compression is Compression.ZSTD
    assert result.size_bytes < result.original_size_bytes
    assert result.key.endswith(".dump.zst.age")
    manifest = await read_manifest(storage, result.key)
    assert manifest.sha256 == result.sha256
    assert manifest.row_counts is not None
    assert manifest.row_counts.tables["public.kinds"] == 2002
    assert manifest.row_counts.tables["public.audited"] == 2
    assert manifest.encryption is not None and manifest.encryption.key_ids == (
        result.recipient_key_ids
    )

    dst_db = pg_db(create=False)
    await run_restore(
        storage, manifest, PostgresTarget(pg_conn(dst_db), create=True), identities=[age_identity]
    )
    assert pg_table_hashes(dst_db) == pg_table_hashes(src_db)
    assert _objects(dst_db) == _objects(src_db)
    assert _objects(dst_db)["seq"] == "4242/true"
    # The trigger survived and fires.
    psql(dst_db, "insert into audited (id, val) values (3, 'three')")
    assert psql(dst_db, "select audit from audited where id = 3") == "1"

    await quick_verify(storage, manifest)
    verified = await deep_verify(storage, manifest, identities=[age_identity])
    assert verified.dump_bytes == result.original_size_bytes


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.NONE])
async def test_roundtrip_other_codecs_unencrypted(pg_db, pg_conn, storage, compression):
    src_db = pg_db()
    psql(src_db, "create table t as select g, md5(g::text) m from generate_series(1, 5000) g")
    result = await run_backup(
        PostgresSource(pg_conn(src_db)), storage, options=BackupOptions(compression=compression)
    )
    assert not result.encrypted
    manifest = await read_manifest(storage, result.key)
    dst_db = pg_db()
    await run_restore(storage, manifest, PostgresTarget(pg_conn(dst_db)))
    assert pg_table_hashes(dst_db) == pg_table_hashes(src_db)


async def test_standard_tools_restore(
    pg_db, pg_conn, storage, age_identity, age_recipient, tmp_path
):
    """The artifact restores with only age, zstd and pg_restore: no opscenter."""
    ensure_age_cli()
    if not (have("age") and have("zstd")):
        pytest.fail("age and zstd CLIs are required (apt-get install -y age zstd)")
    src_db = pg_db()
    psql(src_db, VARIED_SCHEMA)
    result = await run_backup(
        PostgresSource(pg_conn(src_db)),
        storage,
        options=BackupOptions(recipients=(age_recipient,)),
    )
    key_file = tmp_path / "key.txt"
    key_file.write_text(age_identity + "\n")
    key_file.chmod(0o600)
    dst_db = pg_db()
    artifact = storage.path_for(result.key)
    cmd = (
        f"set -o pipefail; age -d -i {key_file} {artifact} | zstd -d | "
        f"pg_restore --exit-on-error --single-transaction -h 127.0.0.1 -U postgres -d {dst_db}"
    )
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert pg_table_hashes(dst_db) == pg_table_hashes(src_db)
    assert _objects(dst_db) == _objects(src_db)
    # The manifest documents that same one-liner.
    manifest = await read_manifest(storage, result.key)
    assert manifest.restore_command.startswith("age -d -i key.txt ")
    assert "| zstd -d | pg_restore" in manifest.restore_command


# ------------------------------------------------------------------------ faults


async def test_auth_failed_does_not_leak_password(pg_db, storage):
    db = pg_db()
    password = "S3cr3t-Passw0rd-xyzzy"
    conn = PgConnection("127.0.0.1", db, user="oc_test_no_such_role", password=password)
    with pytest.raises(BackupError) as info:
        await run_backup(PostgresSource(conn), storage)
    assert info.value.code is ErrorCode.AUTH_FAILED
    assert password not in str(info.value) and password not in repr(info.value)
    assert all_files(storage.root) == [] if storage.root.exists() else True


async def test_password_travels_in_env_not_argv(pg_db, storage):
    db = pg_db()
    runner = RecordingRunner()
    conn = PgConnection("127.0.0.1", db, password="not-in-argv-123")
    await run_backup(PostgresSource(conn), storage, runner=runner)
    # pg_dump, and pg_dumpall for the cluster globals beside it.
    assert sorted(c.tool for c in runner.commands) == ["pg_dump", "pg_dumpall"]
    for cmd in runner.commands:
        assert not any("not-in-argv-123" in a for a in cmd.argv)
        assert cmd.env["PGPASSWORD"] == "not-in-argv-123"
        assert "not-in-argv-123" not in cmd.display()


async def test_unreachable(storage):
    conn = PgConnection("127.0.0.1", "postgres", port=1, connect_timeout=3)
    with pytest.raises(BackupError) as info:
        await run_backup(PostgresSource(conn), storage)
    assert info.value.code is ErrorCode.UNREACHABLE
    assert info.value.retryable


async def test_database_missing(pg_db, pg_conn, storage):
    name = pg_db(create=False)
    with pytest.raises(BackupError) as info:
        await run_backup(PostgresSource(pg_conn(name)), storage)
    assert info.value.code is ErrorCode.DATABASE_MISSING
    # Also classified when the probe is skipped and pg_dump itself fails.
    with pytest.raises(BackupError) as info:
        await run_backup(PostgresSource(pg_conn(name), server_version_num=150000), storage)
    assert info.value.code is ErrorCode.DATABASE_MISSING
    assert "does not exist" in info.value.detail
    assert all_files(storage.root) == []


@pytest.fixture
def big_db(pg_db):
    """~40 MB of poorly compressible rows: long enough to be killed mid-stream."""
    db = pg_db()
    psql(
        db,
        "create table big as select g, repeat(md5(g::text), 32) as filler "
        "from generate_series(1, 40000) g",
    )
    return db


async def test_dump_killed_mid_stream(big_db, pg_conn, tmp_path):
    storage = HookedStorage(tmp_path / "store")
    runner = RecordingRunner()
    storage.delay = 0.01
    killed: list[int] = []

    def on_write(total: int) -> None:
        if total > 2 << 20 and not killed:
            pid = runner.started[0].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    storage.on_write = on_write
    with pytest.raises(BackupError) as info:
        await run_backup(
            PostgresSource(pg_conn(big_db)),
            storage,
            runner=runner,
            options=BackupOptions(compression=Compression.NONE),
        )
    assert killed, "the dump finished before it could be killed"
    assert info.value.code is ErrorCode.DUMP_KILLED
    assert "SIGKILL" in info.value.message
    assert all_files(storage.root) == []


async def test_disk_full_tmpfs(big_db, pg_conn, tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    try:
        if mounted:
            storage: LocalStorage = LocalStorage(mnt)
        else:  # no privilege to mount: inject ENOSPC in the writer instead
            storage = HookedStorage(mnt)
            storage.fail_after = 2 << 20
        runner = RecordingRunner()
        with pytest.raises(BackupError) as info:
            await run_backup(
                PostgresSource(pg_conn(big_db)),
                storage,
                runner=runner,
                options=BackupOptions(compression=Compression.NONE),
            )
        assert info.value.code is ErrorCode.DISK_FULL
        assert not info.value.retryable
        assert all_files(mnt) == []
        assert process_gone(runner.started[0].pid or 0)
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)


async def test_cancel_kills_process_group_and_removes_partial(big_db, pg_conn, tmp_path):
    storage = HookedStorage(tmp_path / "store")
    storage.delay = 0.02
    runner = RecordingRunner()
    started = asyncio.Event()
    storage.on_write = lambda total: started.set() if total > 1 << 20 else None
    task = asyncio.create_task(
        run_backup(
            PostgresSource(pg_conn(big_db)),
            storage,
            runner=runner,
            options=BackupOptions(compression=Compression.NONE),
        )
    )
    await asyncio.wait_for(started.wait(), 30)
    pid = runner.started[0].pid
    assert pid is not None and not process_gone(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert process_gone(pid) and group_gone(pid)
    assert all_files(storage.root) == []


async def test_time_limit_and_row_counts_estimates(big_db, pg_conn, tmp_path):
    storage = HookedStorage(tmp_path / "store")
    storage.delay = 0.05
    with pytest.raises(BackupError) as info:
        await run_backup(
            PostgresSource(pg_conn(big_db)),
            storage,
            options=BackupOptions(compression=Compression.NONE, time_limit=0.5),
        )
    assert info.value.code is ErrorCode.TIME_LIMIT
    assert all_files(storage.root) == []


async def test_database_dropped_mid_dump(pg_db, pg_conn, tmp_path, age_recipient):
    """DROP DATABASE ... WITH (FORCE) while pg_dump streams: a classified failure that
    says what happened, nothing left in storage, the older backup untouched."""
    # ~120 MB: far more than the pipeline's buffers and the socket's hold together
    # (~30 MB), so pg_dump is still reading when the database goes.
    big_db = pg_db()
    psql(
        big_db,
        "create table big as select g, repeat(md5(g::text), 32) as filler "
        "from generate_series(1, 120000) g",
    )
    storage = HookedStorage(tmp_path / "store")
    options = BackupOptions(compression=Compression.NONE, recipients=(age_recipient,))
    old = await run_backup(PostgresSource(pg_conn(big_db)), storage, options=options)
    before = {p: storage.path_for(p).read_bytes() for p in all_files(storage.root)}
    assert len(before) == 3  # artifact, cluster globals, manifest

    # Once pg_dump is well into the table data, stop the storage: the pipeline's
    # bounded buffers fill and pg_dump blocks with most of the table still unread on
    # the server. Drop the database then, and let the storage go on.
    resume = asyncio.Event()
    midway = asyncio.Event()

    def on_write(total: int) -> None:
        if total > 2 << 20 and not midway.is_set():
            storage.paused = resume
            midway.set()

    storage.on_write = on_write
    task = asyncio.create_task(
        run_backup(PostgresSource(pg_conn(big_db)), storage, options=options)
    )
    await asyncio.wait_for(midway.wait(), 30)
    assert not task.done()
    await asyncio.to_thread(psql, "postgres", f'DROP DATABASE "{big_db}" WITH (FORCE)')
    resume.set()
    with pytest.raises(BackupError) as info:
        await task
    err = info.value
    assert err.code is ErrorCode.DATABASE_MISSING, err
    assert not err.retryable
    assert "was dropped while pg_dump was running" in err.message
    assert err.stage == "dump"
    # Nothing of the failed run is left; the older backup is byte for byte the same
    # and still verifies.
    assert {p: storage.path_for(p).read_bytes() for p in all_files(storage.root)} == before
    await quick_verify(storage, await read_manifest(storage, old.key))


# ------------------------------------------------------------------------ damaged artifacts


async def _two_backups(pg_db, pg_conn, storage, recipient):
    db = pg_db()
    psql(
        db,
        "create table t as select g, repeat(md5(g::text), 20) s from generate_series(1, 20000) g",
    )
    old = await run_backup(
        PostgresSource(pg_conn(db)), storage, options=BackupOptions(recipients=(recipient,))
    )
    new = await run_backup(
        PostgresSource(pg_conn(db)), storage, options=BackupOptions(recipients=(recipient,))
    )
    return db, old, new


async def _rewrite(
    storage: LocalStorage, manifest: Manifest, data: bytes, *, fix_manifest: bool
) -> Manifest:
    """Replace the artifact bytes; optionally forge a manifest that matches them."""
    import dataclasses
    import hashlib

    storage.path_for(manifest.key).write_bytes(data)
    if not fix_manifest:
        return manifest
    forged = dataclasses.replace(
        manifest, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    await storage.delete(manifest.key + ".manifest.json")
    await write_manifest(storage, forged)
    return forged


@pytest.mark.parametrize("damage", ["truncate", "truncate_chunk_boundary", "bitflip"])
@pytest.mark.parametrize("fix_manifest", [False, True])
async def test_damaged_artifact_fails_restore_and_deep_verify(
    damage, fix_manifest, pg_db, pg_conn, storage, age_identity, age_recipient
):
    _db, old, new = await _two_backups(pg_db, pg_conn, storage, age_recipient)
    old_bytes = storage.path_for(old.key).read_bytes()
    manifest = await read_manifest(storage, new.key)
    data = storage.path_for(new.key).read_bytes()
    if damage == "truncate":
        damaged = data[: len(data) * 2 // 3]
    elif damage == "truncate_chunk_boundary":
        header_end = data.index(b"\n---") + data[data.index(b"\n---") + 1 :].index(b"\n") + 2
        damaged = data[: header_end + 16 + 2 * (64 * 1024 + 16)]
    else:
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01
        damaged = bytes(flipped)
    manifest = await _rewrite(storage, manifest, damaged, fix_manifest=fix_manifest)

    expected = (
        {ErrorCode.DECRYPT_FAILED}
        if fix_manifest
        else {ErrorCode.CHECKSUM_MISMATCH, ErrorCode.DECRYPT_FAILED}
    )
    target_db = pg_db()
    with pytest.raises(BackupError) as info:
        await run_restore(
            storage, manifest, PostgresTarget(pg_conn(target_db)), identities=[age_identity]
        )
    assert info.value.code in expected, info.value
    # Nothing half-restored: the single transaction was never committed.
    assert psql(target_db, "select count(*) from pg_tables where schemaname = 'public'") == "0"
    with pytest.raises(BackupError) as info:
        await deep_verify(storage, manifest, identities=[age_identity])
    assert info.value.code in expected
    if not fix_manifest:
        with pytest.raises(BackupError) as info:
            await quick_verify(storage, manifest)
        assert info.value.code is ErrorCode.CHECKSUM_MISMATCH

    # The older backup in the same storage is untouched and still restores.
    assert storage.path_for(old.key).read_bytes() == old_bytes
    old_manifest = await read_manifest(storage, old.key)
    await quick_verify(storage, old_manifest)
    await deep_verify(storage, old_manifest, identities=[age_identity])


async def test_wrong_identity_fails(pg_db, pg_conn, storage, age_recipient):
    from opscenter.streaming.crypto import generate_identity

    db = pg_db()
    psql(db, "create table t (i int)")
    result = await run_backup(
        PostgresSource(pg_conn(db)), storage, options=BackupOptions(recipients=(age_recipient,))
    )
    manifest = await read_manifest(storage, result.key)
    with pytest.raises(BackupError) as info:
        await deep_verify(storage, manifest, identities=[generate_identity()])
    assert info.value.code is ErrorCode.DECRYPT_FAILED


async def test_restore_refuses_non_empty_target_and_reports_errors(pg_db, pg_conn, storage):
    src = pg_db()
    psql(src, "create table t as select g from generate_series(1, 10) g")
    result = await run_backup(PostgresSource(pg_conn(src)), storage)
    manifest = await read_manifest(storage, result.key)
    with pytest.raises(BackupError) as info:
        await run_restore(storage, manifest, PostgresTarget(pg_conn(src)))
    assert info.value.code is ErrorCode.TARGET_NOT_EMPTY
    # Forcing it over existing objects: pg_restore's error is reported, scrubbed.
    with pytest.raises(BackupError) as info:
        await run_restore(storage, manifest, PostgresTarget(pg_conn(src), allow_non_empty=True))
    assert info.value.code is ErrorCode.RESTORE_FAILED
    assert "already exists" in info.value.detail
    # clean: drop and recreate works.
    await run_restore(storage, manifest, PostgresTarget(pg_conn(src), clean=True))
    assert psql(src, "select count(*) from t") == "10"


async def test_catalog_rebuilt_from_storage(pg_db, pg_conn, storage, tmp_path):
    db = pg_db()
    psql(db, "create table t (i int)")
    a = await run_backup(PostgresSource(pg_conn(db)), storage)
    b = await run_backup(PostgresSource(pg_conn(db)), storage)
    # An orphan (object without manifest) and a manifest without object.
    orphan = storage.path_for("postgresql/orphan.dump.zst")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"x")
    storage.path_for(b.key).unlink()
    scan = await scan_catalog(storage)
    assert [m.key for m in scan.manifests] == [a.key]
    assert scan.orphans == ["postgresql/orphan.dump.zst"]
    assert [k for k, _ in scan.invalid] == [b.key + ".manifest.json"]


async def test_checksum_gate_withholds_tail_from_pg_restore(pg_db, pg_conn, storage):
    """Unencrypted and uncompressed: only the sha256 at the end can see a flipped bit.

    pg_restore must never get the end of the stream, so it cannot commit.
    """
    src = pg_db()
    psql(src, "create table t as select g, md5(g::text) m from generate_series(1, 50000) g")
    result = await run_backup(
        PostgresSource(pg_conn(src)), storage, options=BackupOptions(compression=Compression.NONE)
    )
    manifest = await read_manifest(storage, result.key)
    path = storage.path_for(result.key)
    data = bytearray(path.read_bytes())
    # Flip a digit inside the row data, far from the end (the hold-back is 64 KiB).
    pos = data.index(b"c4ca4238a0b923820dcc509a6f75849b")  # md5('1')
    data[pos] = ord("d")
    path.write_bytes(bytes(data))
    target = pg_db()
    with pytest.raises(BackupError) as info:
        await run_restore(storage, manifest, PostgresTarget(pg_conn(target)))
    assert info.value.code is ErrorCode.CHECKSUM_MISMATCH
    assert psql(target, "select count(*) from pg_tables where schemaname = 'public'") == "0"


# ------------------------------------------------------------------------ parallel restore


async def test_parallel_restore_equals_source_and_leaves_no_staging_file(
    pg_db, pg_conn, storage, age_identity, age_recipient, tmp_path
):
    src_db = pg_db()
    psql(src_db, VARIED_SCHEMA)
    result = await run_backup(
        PostgresSource(pg_conn(src_db)), storage, options=BackupOptions(recipients=(age_recipient,))
    )
    manifest = await read_manifest(storage, result.key)
    staging = tmp_path / "staging"
    dst_db = pg_db(create=False)
    runner = RecordingRunner()
    await run_restore(
        storage,
        manifest,
        PostgresTarget(pg_conn(dst_db), create=True, jobs=2, staging_dir=str(staging)),
        identities=[age_identity],
        runner=runner,
    )
    assert pg_table_hashes(dst_db) == pg_table_hashes(src_db)
    assert _objects(dst_db) == _objects(src_db)
    assert list(staging.iterdir()) == []
    # pg_restore read a staged file with two jobs, not its stdin.
    (restore_cmd,) = [c for c in runner.ran if c.tool == "pg_restore" and len(c.argv) > 2]
    assert "--jobs=2" in restore_cmd.argv and "--single-transaction" not in restore_cmd.argv
    assert restore_cmd.argv[-1].startswith(str(staging))


@pytest.mark.parametrize("damage", ["bitflip", "missing_table_data"])
async def test_parallel_restore_failure_drops_the_new_database(
    damage, pg_db, pg_conn, storage, age_identity, age_recipient, tmp_path
):
    _db, _old, new = await _two_backups(pg_db, pg_conn, storage, age_recipient)
    manifest = await read_manifest(storage, new.key)
    staging = tmp_path / "staging"
    dst_db = pg_db(create=False)
    if damage == "bitflip":
        data = bytearray(storage.path_for(new.key).read_bytes())
        data[len(data) // 2] ^= 0x01
        manifest = await _rewrite(storage, manifest, bytes(data), fix_manifest=False)
        expected = {ErrorCode.CHECKSUM_MISMATCH, ErrorCode.DECRYPT_FAILED}
    else:
        # A role the dump's ACLs name does not exist in the target: pg_restore itself
        # fails (--exit-on-error), after the staging, mid-restore.
        psql(_db, "create role oc_gone_role; grant select on t to oc_gone_role")
        try:
            again = await run_backup(
                PostgresSource(pg_conn(_db)),
                storage,
                options=BackupOptions(recipients=(age_recipient,)),
            )
        finally:
            psql(_db, "revoke all on t from oc_gone_role")
            psql("postgres", "drop role oc_gone_role")
        manifest = await read_manifest(storage, again.key)
        expected = {ErrorCode.RESTORE_FAILED}
    with pytest.raises(BackupError) as info:
        await run_restore(
            storage,
            manifest,
            PostgresTarget(pg_conn(dst_db), create=True, jobs=2, staging_dir=str(staging)),
            identities=[age_identity],
        )
    assert info.value.code in expected, info.value
    assert psql("postgres", f"select count(*) from pg_database where datname = '{dst_db}'") == "0"
    assert not staging.exists() or list(staging.iterdir()) == []


async def test_replace_leaves_exactly_the_backup_or_nothing_changed(
    pg_db, pg_conn, storage, age_identity, age_recipient
):
    """``replace`` (drop_existing): afterwards the database holds exactly what the backup
    holds (objects it does not have are gone too), in one transaction: a restore that
    fails leaves it as it was."""
    src = pg_db()
    psql(src, VARIED_SCHEMA)
    psql(src, "create schema extra; create table extra.kept as select 1 as i")
    result = await run_backup(
        PostgresSource(pg_conn(src)), storage, options=BackupOptions(recipients=(age_recipient,))
    )
    manifest = await read_manifest(storage, result.key)
    dst = pg_db()
    psql(
        dst,
        "create table stray (i int); create view stray_view as select * from stray; "
        "create schema other; create table other.t (i int); create function f() returns int "
        "language sql as 'select 1'; select lo_create(4242); create table kinds (old int)",
    )
    schemas = "select string_agg(nspname, ',' order by nspname) from pg_namespace"
    target = PostgresTarget(pg_conn(dst), replace=True)

    # a corrupt artifact: nothing changes
    path = storage.path_for(result.key)
    good = path.read_bytes()
    path.write_bytes(good[:-100] + bytes([good[-100] ^ 1]) + good[-99:])
    before = (pg_table_hashes(dst), psql(dst, schemas))
    with pytest.raises(BackupError):
        await run_restore(storage, manifest, target, identities=[age_identity])
    assert (pg_table_hashes(dst), psql(dst, schemas)) == before
    path.write_bytes(good)

    await run_restore(storage, manifest, target, identities=[age_identity])
    assert pg_table_hashes(dst) == pg_table_hashes(src)
    assert psql(dst, schemas) == psql(src, schemas)
    views = "select string_agg(viewname, ',') from pg_views where schemaname = 'public'"
    assert psql(dst, views) == psql(src, views)
    functions = (
        "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
        "where n.nspname = 'public' and p.proname = 'f'"
    )
    assert psql(dst, functions) == "0"
    assert psql(dst, "select count(*) from pg_largeobject_metadata") == "0"
    # the public schema is usable as before by everyone
    assert psql(dst, "select has_schema_privilege('public', 'public', 'USAGE')") == "t"
