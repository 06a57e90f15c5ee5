"""Parallel PostgreSQL backups (``parallel_streams``): several pg_dump archives of one
snapshot, restored, verified, damaged, interrupted, downloaded and restored by hand."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.postgres import split_by_size
from opscenter.models import StorageProvider
from opscenter.remote.runner import Command, LocalProcess
from opscenter.stores.backends import LocalStorage
from opscenter.streaming import keys as backup_keys
from opscenter.streaming.manifest import PART_NAME, Manifest, read_manifest, scan_catalog
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import PostgresTarget
from opscenter.streaming.sources import PostgresSource
from opscenter.streaming.verification import deep_verify, quick_verify
from tests.backups.helpers import damage_a_data_part
from tests.conftest import Api
from tests.core.helpers import assert_error

from .conftest import all_files, ensure_age_cli, pg_table_hashes, psql
from .helpers import HookedStorage, RecordingRunner
from .test_backups import make_server, run_job

pytestmark = pytest.mark.postgres

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "restore-parts.sh"

#: Tables of different sizes (so the groups differ), a name pg_dump patterns would
#: misread unquoted, large objects, sequences, a view, a function, constraints.
SCHEMA = textwrap.dedent(
    r"""
    create table big (id bigserial primary key, body text not null check (body <> ''));
    insert into big (body) select repeat(md5(g::text), 8) from generate_series(1, 6000) g;
    create table mid (id int primary key references big (id), note text unique);
    insert into mid select g, 'n' || g from generate_series(1, 3000) g;
    create schema "Odd.Schema";
    create table "Odd.Schema"."we*ird ""q"" t" (k text primary key);
    insert into "Odd.Schema"."we*ird ""q"" t" select 'k' || g from generate_series(1, 500) g;
    create table small (id int);
    insert into small values (1), (2);
    create table empty (id int);
    create sequence counter_seq start 100;
    select setval('counter_seq', 4242);
    create view v_big as select id, length(body) as n from big where id % 2 = 0;
    create function add_ints(a int, b int) returns int language sql immutable
      as 'select a + b';
    select lo_from_bytea(0, 'large object one'),
           lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'));
    """
)


def _facts(db: str) -> dict[str, str]:
    """What pg_table_hashes does not cover: sequences, views, functions, large objects,
    constraints."""
    return {
        "seq": psql(db, "select last_value || '/' || is_called from counter_seq"),
        "serial": psql(db, "select last_value from big_id_seq"),
        "view": psql(db, "select count(*) || '/' || sum(n) from v_big"),
        "func": psql(db, "select add_ints(2, 3)"),
        "lo": psql(
            db,
            "select string_agg(md5(lo_get(oid)), ',' order by md5(lo_get(oid))) "
            "from pg_largeobject_metadata",
        ),
        "constraints": psql(
            db,
            "select string_agg(d, '; ' order by d) from (select conrelid::regclass || ' ' "
            "|| pg_get_constraintdef(oid) d from pg_constraint "
            "where connamespace::regnamespace::text not in ('pg_catalog', 'information_schema')) c",
        ),
    }


def test_tables_split_largest_first_into_even_groups() -> None:
    tables = [("a", 10), ("b", 70), ("c", 30), ("d", 30), ("e", 0)]
    assert split_by_size(tables, 2) == [["b", "e"], ["c", "d", "a"]]  # 70 + 0 | 30 + 30 + 10
    assert split_by_size(tables, 4) == [["b"], ["c"], ["d"], ["a", "e"]]
    assert split_by_size([("a", 5)], 3) == [["a"], [], []]


class _WritesAfterTheSnapshot(RecordingRunner):
    """Commits rows into ``big`` once the snapshot is exported, before any pg_dump of
    it starts: a dump that did not use the shared snapshot would hold them."""

    def __init__(self, db: str) -> None:
        super().__init__()
        self.db = db
        self.written = False

    async def start(
        self, command: Command, *, stdin: int | None = None, stdout: int | None = None
    ) -> LocalProcess:
        if any(a.startswith("--snapshot=") for a in command.argv) and not self.written:
            self.written = True
            await asyncio.to_thread(
                psql, self.db, "insert into big (body) values ('after the snapshot')"
            )
        return await super().start(command, stdin=stdin, stdout=stdout)


async def test_parallel_backup_restores_equal_to_its_snapshot(
    pg_db, pg_conn, storage, age_identity, age_recipient
):
    src = pg_db()
    psql(src, SCHEMA)
    before = pg_table_hashes(src), _facts(src)
    runner = _WritesAfterTheSnapshot(src)
    result = await run_backup(
        PostgresSource(pg_conn(src)),
        storage,
        options=BackupOptions(recipients=(age_recipient,), parallel_streams=3),
        runner=runner,
    )
    assert psql(src, "select count(*) from big where body = 'after the snapshot'") == "1"
    dumps = [c.argv for c in runner.commands if c.tool == "pg_dump"]
    assert len(dumps) == 5 and all(len([a for a in d if "--snapshot=" in a]) == 1 for d in dumps)
    assert [p.section for p in result.parts] == ["pre-data", "data", "data", "data", "post-data"]
    assert result.size_bytes == sum(p.size_bytes for p in result.parts)

    manifest = await read_manifest(storage, result.key)
    assert manifest.parts == result.parts and manifest.parts[0].key == result.key
    assert "restore-parts.sh" in manifest.restore_command
    scan = await scan_catalog(storage)
    assert [m.key for m in scan.manifests] == [result.key] and not scan.orphans

    dst = pg_db(create=False)
    restored = await run_restore(
        storage, manifest, PostgresTarget(pg_conn(dst), create=True), identities=[age_identity]
    )
    assert restored.bytes_read == result.size_bytes
    # The row written later is absent; a sequence is read as it is when dumped (pg_dump
    # does the same: sequences are not transactional), so it may only be ahead.
    facts, old_facts = _facts(dst), before[1]
    assert int(facts.pop("serial")) >= int(old_facts.pop("serial"))
    assert (pg_table_hashes(dst), facts) == (before[0], old_facts)
    assert psql(dst, "select count(*) from big where body = 'after the snapshot'") == "0"

    quick = await quick_verify(storage, manifest)
    assert quick.size_bytes == result.size_bytes
    deep = await deep_verify(storage, manifest, identities=[age_identity])
    assert deep.dump_bytes == result.original_size_bytes and "5 parts" in deep.detail


async def test_a_corrupted_part_fails_verification_and_restore_untouched(pg_db, pg_conn, storage):
    src = pg_db()
    psql(src, SCHEMA)
    result = await run_backup(
        PostgresSource(pg_conn(src)), storage, options=BackupOptions(parallel_streams=2)
    )
    manifest = await damage_a_data_part(storage, result.key)
    existing = pg_db()  # empty: checked whole before the first statement
    with pytest.raises(BackupError) as err:
        await run_restore(storage, manifest, PostgresTarget(pg_conn(existing)))
    assert err.value.code is ErrorCode.CHECKSUM_MISMATCH
    assert psql(existing, "select count(*) from pg_class where relname = 'big'") == "0"
    created = pg_db(create=False)  # made by the restore: dropped again
    with pytest.raises(BackupError):
        await run_restore(storage, manifest, PostgresTarget(pg_conn(created), create=True))
    assert psql("postgres", f"select count(*) from pg_database where datname = '{created}'") == "0"
    with pytest.raises(BackupError) as err:  # one transaction cannot hold the parts
        await run_restore(storage, manifest, PostgresTarget(pg_conn(existing), replace=True))
    assert err.value.code is ErrorCode.INVALID_CONFIG


async def test_a_failed_or_cancelled_part_leaves_nothing(pg_db, pg_conn, tmp_path):
    src = pg_db()
    psql(src, SCHEMA)
    storage = HookedStorage(tmp_path / "store")
    # The biggest data part fails after the small ones (pre-data, post-data) committed.
    storage.fail_after = 64 << 10
    with pytest.raises(BackupError) as err:
        await run_backup(
            PostgresSource(pg_conn(src)), storage, options=BackupOptions(parallel_streams=2)
        )
    assert err.value.code is ErrorCode.DISK_FULL
    assert all_files(storage.root) == []

    storage.fail_after = None
    storage.paused = asyncio.Event()  # every part backs up to its dump: cancel then
    runner = RecordingRunner()
    task = asyncio.ensure_future(
        run_backup(
            PostgresSource(pg_conn(src)),
            storage,
            options=BackupOptions(parallel_streams=2),
            runner=runner,
        )
    )
    while len([c for c in runner.commands if c.tool == "pg_dump"]) < 4:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    task.cancel()
    storage.paused.set()  # the blocked writes return (and find their run aborted)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all_files(storage.root) == []
    assert all(p.returncode is not None for p in runner.started)  # dumps and the snapshot


async def test_a_copy_holds_every_part_or_none(pg_db, pg_conn, storage, tmp_path):
    src = pg_db()
    psql(src, SCHEMA)
    good, bad = LocalStorage(tmp_path / "copy"), HookedStorage(tmp_path / "bad")
    bad.fail_after = 64 << 10  # the biggest data part fails there, the others commit
    result = await run_backup(
        PostgresSource(pg_conn(src)),
        storage,
        options=BackupOptions(parallel_streams=2),
        copies=[good, bad],
    )
    assert [c.committed for c in result.copies] == [True, False]
    assert result.copies[1].error is not None
    assert result.copies[1].error.code is ErrorCode.DISK_FULL
    assert all_files(bad.root) == []
    scan = await scan_catalog(good)
    assert [m.key for m in scan.manifests] == [result.key] and not scan.orphans
    await quick_verify(good, scan.manifests[0])


async def test_kill_9_mid_way_leaves_nothing_that_looks_usable(pg_db, tmp_path):
    """The first part waits for all the others before it commits, the manifest comes
    last: killed with parts committed, storage holds no backup, only leftovers that the
    job's finisher removes (tests/backups/test_backups.py, start-up after a kill)."""
    src = pg_db()
    psql(src, SCHEMA)
    root = tmp_path / "store"
    code = textwrap.dedent(
        f"""
        import asyncio, pathlib
        from opscenter.engines.postgres import PgConnection
        from opscenter.streaming.pipeline import BackupOptions, run_backup
        from opscenter.streaming.sources import PostgresSource
        from opscenter.streaming.streams import Compression
        from tests.backups.helpers import HookedStorage
        storage = HookedStorage(pathlib.Path({str(root)!r}))
        # The part with the largest table's data (the first data part) hangs, whatever
        # the size of the blocks it comes in; the others commit.
        storage.stall_key = ".data-1."
        source = PostgresSource(PgConnection("127.0.0.1", {src!r}))
        options = BackupOptions(parallel_streams=2, compression=Compression.NONE)
        asyncio.run(run_backup(source, storage, options=options))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        for _ in range(1200):  # the child imports the package first: seconds when busy
            if len([f for f in root.rglob("*") if f.name[0] != "."]) == 5:  # 3 + 2 dirs
                break
            await asyncio.sleep(0.05)
        else:
            seen = sorted(str(f.relative_to(root)) for f in root.rglob("*"))
            pytest.fail(f"the post-data part was never committed; storage holds {seen}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    storage = LocalStorage(root)
    scan = await scan_catalog(storage)
    assert scan.manifests == [] and scan.invalid == []
    assert len(scan.orphans) == 3  # post-data, the small data part, the globals
    assert all(PART_NAME.search(k) or ".globals." in k for k in scan.orphans)
    await storage.cleanup_partials()
    assert [k for k in all_files(root) if not PART_NAME.search(k) and ".globals." not in k] == []


async def test_downloaded_parallel_backup_restores_with_the_documented_script(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    ensure_age_cli()
    src = f"oc_src_{uuid.uuid4().hex[:8]}"
    manual, restored = f"oc_man_{uuid.uuid4().hex[:8]}", f"oc_dst_{uuid.uuid4().hex[:8]}"
    psql("postgres", f'create database "{src}"')
    try:
        psql(src, SCHEMA)
        server = await make_server(admin)
        accepted = await admin.post(
            "/api/v1/backups",
            json={"server_id": server["id"], "database_name": src, "parallel_streams": 2},
        )
        assert (await run_job(api, admin, accepted))["status"] == "succeeded"
        backup = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
        assert backup["parallel_streams"] == 2 and backup["is_encrypted"]

        link = (await admin.post(f"/api/v1/backups/{backup['id']}/download")).json()
        async with api.client() as anonymous:
            r = await anonymous.get(link["download_url"])
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
        r_tar = r.content
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            names = tar.getnames()
            tar.extractall(tmp_path, filter="data")
        first = backup["storage_path"].rsplit("/", 1)[-1]
        assert names[0] == first and names[-1] == first + ".manifest.json" and len(names) == 5
        manifest = Manifest.from_json((tmp_path / names[-1]).read_bytes())
        assert manifest.total_size_bytes == backup["size_bytes"]

        ctx = api.app.state.ctx
        key = tmp_path / "key.txt"
        key.write_text(backup_keys.load_or_create(ctx.keyring, ctx.settings.keys_dir).identity)
        psql("postgres", f'create database "{manual}"')
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGUSER": "postgres"}
        done = subprocess.run(
            ["sh", str(SCRIPT), str(tmp_path / first), manual, str(key)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert (pg_table_hashes(manual), _facts(manual)) == (pg_table_hashes(src), _facts(src))

        job = await run_job(
            api,
            admin,
            await admin.post(
                f"/api/v1/backups/{backup['id']}/restore", json={"target_database": restored}
            ),
        )
        assert job["status"] == "succeeded", job
        assert pg_table_hashes(restored) == pg_table_hashes(src)
        again = await admin.post(
            f"/api/v1/backups/{backup['id']}/restore",
            json={"target_database": restored, "drop_existing": True},
        )
        assert "new database" in assert_error(again, 422, "VALIDATION_ERROR")["detail"]

        async with ctx.db.read_session() as session:
            storage = ctx.storages.get(await session.get(StorageProvider, backup["storage_id"]))
        stem = backup["storage_path"].split(".dump", 1)[0]
        assert (
            len([o async for o in storage.list(stem)]) == len(manifest.parts) + 2
        )  # globals, manifest
        r = await admin.delete(f"/api/v1/backups/{backup['id']}")
        assert r.status_code == 204, r.text
        assert [o async for o in storage.list(stem)] == []

        # The downloaded tar uploads again (a new installation): a damaged part is
        # refused with nothing stored, the whole tar lands as the same backup.
        header = {
            "X-Backup-Manifest": base64.b64encode(manifest.to_json()).decode(),
            "Content-Type": "application/octet-stream",
        }
        tampered = bytearray(r_tar)
        tampered[len(tampered) // 2] ^= 1
        r = await admin.post("/api/v1/backups/import", content=bytes(tampered), headers=header)
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", r.text
        assert [o async for o in storage.list(stem)] == []
        r = await admin.post("/api/v1/backups/import", content=r_tar, headers=header)
        assert r.status_code == 201, r.text
        assert r.json()["parallel_streams"] == 2 and r.json()["size_bytes"] == backup["size_bytes"]
        scan = await scan_catalog(storage, stem)
        assert [m.parts for m in scan.manifests] == [manifest.parts] and not scan.orphans
    finally:
        for db in (src, manual, restored):
            psql("postgres", f'drop database if exists "{db}" with (force)')
