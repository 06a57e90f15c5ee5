"""PostgreSQL cluster globals (roles, tablespaces) saved beside each database dump."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path

import pyrage
import pytest
import zstandard

from opscenter.engines.postgres import PgConnection, find_pg_tools
from opscenter.remote.runner import LocalRunner
from opscenter.streaming.manifest import (
    backup_object_keys,
    delete_backup_objects,
    read_manifest,
    scan_catalog,
)
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import PostgresTarget
from opscenter.streaming.sources import PostgresSource
from opscenter.streaming.verification import deep_verify, quick_verify

from .conftest import PG_HOST, PG_PORT, all_files, psql

pytestmark = pytest.mark.postgres


def _role_name() -> str:
    return f"oc_test_role_{uuid.uuid4().hex[:8]}"


def _roles() -> set[str]:
    return set(psql("postgres", "select rolname from pg_roles").splitlines())


def _plain_globals(storage, key: str, identity: str | None) -> str:
    data = storage.path_for(key).read_bytes()
    if identity is not None:
        data = pyrage.decrypt(data, [pyrage.x25519.Identity.from_str(identity)])
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read().decode()


async def test_globals_saved_beside_dump_and_restored_on_request(
    pg_db, pg_conn, storage, age_identity, age_recipient
):
    role = _role_name()
    src = pg_db()
    dst = pg_db(create=False)
    recreated: set[str] = set()
    psql("postgres", f"CREATE ROLE {role} LOGIN PASSWORD 'oc-test-pw'")
    try:
        psql(src, f"create table owned (i int); alter table owned owner to {role}")
        result = await run_backup(
            PostgresSource(pg_conn(src)),
            storage,
            options=BackupOptions(recipients=(age_recipient,)),
        )
        g = result.globals
        assert g is not None and g.saved and not result.warnings
        assert g.key == result.key.replace(".dump.zst.age", ".globals.sql.zst.age")
        assert g.role_passwords is True
        # Recorded in the manifest with the stored object's size and sha256.
        manifest = await read_manifest(storage, result.key)
        assert manifest.globals == g
        stored = storage.path_for(g.key).read_bytes()
        assert len(stored) == g.size_bytes
        assert hashlib.sha256(stored).hexdigest() == g.sha256
        assert "age -d -i key.txt" in g.restore_command and "psql" in g.restore_command
        sql = _plain_globals(storage, g.key, age_identity)
        assert f"CREATE ROLE {role};" in sql
        assert "SCRAM-SHA-256$" in sql  # a superuser's dump keeps the password hashes
        assert len(sql) == g.original_size_bytes

        # Verification covers it too.
        assert (await quick_verify(storage, manifest)).detail == "with the cluster globals"
        verified = await deep_verify(storage, manifest, identities=[age_identity])
        assert "cluster globals complete" in verified.detail

        # Part of the backup, not an orphan; deleting the backup removes all of it.
        scan = await scan_catalog(storage)
        assert [m.key for m in scan.manifests] == [result.key]
        assert scan.orphans == [] and scan.warnings == []
        assert backup_object_keys(result.key, manifest) == [
            result.key,
            g.key,
            result.key + ".manifest.json",
        ]

        # Restore with the globals into a new database after the role is gone.
        psql("postgres", f'DROP DATABASE "{src}" WITH (FORCE)')
        psql("postgres", f"DROP ROLE {role}")
        before = _roles()
        restored = await run_restore(
            storage,
            manifest,
            PostgresTarget(pg_conn(dst), create=True, restore_globals=True),
            identities=[age_identity],
        )
        recreated = _roles() - before - {role}
        assert restored.globals_restored
        assert psql(dst, "select tableowner from pg_tables where tablename = 'owned'") == role
        # Roles that already existed are errors psql skipped; they are reported.
        assert any('role "postgres" already exists' in w for w in restored.warnings)

        await delete_backup_objects(storage, result.key)
        assert all_files(storage.root) == []
    finally:
        psql("postgres", f'DROP DATABASE IF EXISTS "{dst}" WITH (FORCE)', check=False)
        psql("postgres", f"DROP ROLE IF EXISTS {role}", check=False)
        # Roles of other tests that existed at dump time and were re-created by the
        # restore: remove them again (only those the globals named).
        for name in recreated:
            psql("postgres", f'DROP ROLE IF EXISTS "{name}"', check=False)


async def test_restore_globals_refused_when_none_saved(pg_db, pg_conn, storage):
    src = pg_db()
    result = await run_backup(
        PostgresSource(pg_conn(src)), storage, options=BackupOptions(pg_globals=False)
    )
    manifest = await read_manifest(storage, result.key)
    assert manifest.globals is None and result.globals is None
    from opscenter.core.failures import BackupError, ErrorCode

    dst = pg_db(create=False)
    with pytest.raises(BackupError) as info:
        await run_restore(
            storage, manifest, PostgresTarget(pg_conn(dst), create=True, restore_globals=True)
        )
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert psql("postgres", f"select count(*) from pg_database where datname = '{dst}'") == "0"


async def test_globals_without_superuser_have_no_passwords(pg_db, storage):
    role = _role_name()
    psql("postgres", f"CREATE ROLE {role} LOGIN PASSWORD 'oc-test-pw'")
    db = pg_db()
    try:
        psql(db, f'alter database "{db}" owner to {role}; set role {role}; create table t (i int)')
        conn = PgConnection(PG_HOST, db, PG_PORT, role)
        result = await run_backup(PostgresSource(conn), storage)
        g = result.globals
        assert g is not None and g.saved and not result.warnings
        assert g.role_passwords is False and "without role passwords" in g.reason
        sql = _plain_globals(storage, g.key or "", None)
        assert f"CREATE ROLE {role};" in sql and "SCRAM-SHA-256$" not in sql
    finally:
        psql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', check=False)
        psql("postgres", f"DROP ROLE IF EXISTS {role}", check=False)


@pytest.mark.parametrize("fault", ["permission", "crash"])
async def test_globals_failure_does_not_fail_the_backup(fault, pg_db, pg_conn, storage, tmp_path):
    """A pg_dumpall that lacks a privilege is recorded as skipped; one that crashes is
    recorded as failed and reported as a warning. The backup succeeds either way."""
    real = (await find_pg_tools(LocalRunner(), "pg_dump"))[0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("pg_dump", "psql"):
        os.symlink(Path(real.path).with_name(tool), bindir / tool)
    script = {
        "permission": "echo 'pg_dumpall: error: query failed: ERROR:  permission denied "
        "for table pg_authid' >&2; exit 1",
        "crash": "kill -SEGV $$",
    }[fault]
    fake = bindir / "pg_dumpall"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    db = pg_db()
    psql(db, "create table t as select 1 as i")
    result = await run_backup(PostgresSource(pg_conn(db), bin_globs=(str(bindir),)), storage)
    assert result.plan.command.argv[0] == str(bindir / "pg_dump")
    g = result.globals
    assert g is not None and g.key is None
    if fault == "permission":
        assert g.status == "skipped" and "permission denied" in g.reason
        assert result.warnings == ()
    else:
        assert g.status == "failed" and "SIGSEGV" in g.reason
        assert len(result.warnings) == 1 and "SIGSEGV" in result.warnings[0]
    manifest = await read_manifest(storage, result.key)
    assert manifest.globals == g
    assert sorted(all_files(storage.root)) == sorted([result.key, result.key + ".manifest.json"])


async def test_damaged_globals_fail_verification(pg_db, pg_conn, storage, age_identity):
    from opscenter.core.failures import BackupError, ErrorCode
    from opscenter.streaming.crypto import recipient_of

    db = pg_db()
    result = await run_backup(
        PostgresSource(pg_conn(db)),
        storage,
        options=BackupOptions(recipients=(recipient_of(age_identity),)),
    )
    manifest = await read_manifest(storage, result.key)
    assert manifest.globals is not None and manifest.globals.key is not None
    path = storage.path_for(manifest.globals.key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BackupError) as info:
        await quick_verify(storage, manifest)
    assert info.value.code is ErrorCode.CHECKSUM_MISMATCH
    assert manifest.globals.key in info.value.message
    with pytest.raises(BackupError) as info:
        await deep_verify(storage, manifest, identities=[age_identity])
    assert info.value.code in (ErrorCode.CHECKSUM_MISMATCH, ErrorCode.DECRYPT_FAILED)
    # A missing globals object: the backup stays usable, the scan says what is wrong.
    path.unlink()
    scan = await scan_catalog(storage)
    assert [m.key for m in scan.manifests] == [result.key] and scan.orphans == []
    assert scan.warnings == [(manifest.globals.key, "the cluster globals object is missing")]
    # ... and a check calls it damaged (verify_failed: corrupt), not gone (its dump is there)
    for check in (
        quick_verify(storage, manifest),
        deep_verify(storage, manifest, identities=[age_identity]),
    ):
        with pytest.raises(BackupError) as info:
            await check
        assert info.value.code is ErrorCode.VERIFY_FAILED
        assert "cluster globals saved beside the dump are missing" in info.value.message
