"""Helpers for the verification tests: a real PostgreSQL source, backups made through
the API, and direct access to the stored artifact (to damage it on purpose)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opscenter.models import Backup, StorageProvider
from opscenter.stores.backends import LocalStorage
from opscenter.streaming import keys as backup_keys
from opscenter.streaming.manifest import Manifest, manifest_key, read_manifest, write_manifest
from tests.conftest import Api
from tests.helpers import psql

PG_SERVER = {
    "type": "postgresql",
    "host": "127.0.0.1",
    "port": 5432,
    "credentials": {"username": "postgres"},
}


def scratch_databases() -> set[str]:
    """Every verification scratch database on the PostgreSQL server now."""
    out = psql("SELECT datname FROM pg_database WHERE datname LIKE 'oc\\_verify\\_%'")
    return set(out.split()) if out else set()


@pytest.fixture
def source_db() -> Iterator[str]:
    name = f"oc_vsrc_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    psql(
        "CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL);"
        "INSERT INTO customers (email) SELECT 'u' || g || '@example.com'"
        " FROM generate_series(1, 300) g;"
        "CREATE TABLE orders (id serial PRIMARY KEY, total numeric(10,2));"
        "INSERT INTO orders (total) SELECT g * 1.5 FROM generate_series(1, 120) g;",
        name,
    )
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def make_server(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": f"pg-{uuid.uuid4().hex[:6]}", **PG_SERVER, **fields}
    r = await client.post("/api/v1/servers", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def wait_job(api: Api, job_id: int) -> None:
    await api.app.state.ctx.runner.wait(job_id, limit_seconds=120)


async def make_backup(api: Api, client: httpx.AsyncClient, server_id: int, db: str) -> int:
    r = await client.post("/api/v1/backups", json={"server_id": server_id, "database_name": db})
    assert r.status_code == 202, r.text
    await wait_job(api, r.json()["job_id"])
    backup = (await client.get(f"/api/v1/backups/{r.json()['id']}")).json()
    assert backup["status"] == "completed", backup
    backup_id: int = backup["id"]
    return backup_id


async def verify(
    api: Api, client: httpx.AsyncClient, backup_id: int, **body: Any
) -> dict[str, Any]:
    """Start a verification, wait for it, return its result."""
    r = await client.post(f"/api/v1/verify/{backup_id}", json=body)
    assert r.status_code == 202, r.text
    accepted = r.json()
    await wait_job(api, accepted["job_id"])
    return await run_result(client, backup_id, accepted["id"])


async def run_result(client: httpx.AsyncClient, backup_id: int, run_id: int) -> dict[str, Any]:
    """The run's result once its finisher recorded the outcome (just after the job ends)."""
    for _ in range(200):
        result = await client.get(f"/api/v1/verify/{backup_id}/result?run_id={run_id}")
        assert result.status_code == 200, result.text
        data: dict[str, Any] = result.json()
        if data["status"] not in ("queued", "running"):
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"verification run {run_id} did not finish: {data}")


async def local_storage(api: Api, backup_id: int) -> tuple[LocalStorage, Backup]:
    ctx = api.app.state.ctx
    async with ctx.db.read_session() as session:
        backup = await session.get(Backup, backup_id)
        assert backup is not None and backup.storage_key
        provider = await session.get(StorageProvider, backup.storage_id)
    storage = ctx.storages.get(provider)
    assert isinstance(storage, LocalStorage)
    return storage, backup


async def artifact_path(api: Api, backup_id: int) -> Path:
    storage, backup = await local_storage(api, backup_id)
    assert backup.storage_key is not None
    return storage.path_for(backup.storage_key)


async def replace_dump(api: Api, backup_id: int, keep_bytes: int, tmp: Path) -> None:
    """Re-encode the backup with its dump cut to `keep_bytes`: a truncated dump inside a
    consistent artifact (size, sha256, manifest and catalog all agree), as if the dump
    tool had died unnoticed. Only reading the dump itself can tell."""
    ctx = api.app.state.ctx
    storage, backup = await local_storage(api, backup_id)
    assert backup.storage_key is not None
    keys = backup_keys.load_or_create(ctx.keyring, ctx.settings.keys_dir)
    identity = tmp / "identity.txt"
    identity.write_text(keys.identity + "\n")
    identity.chmod(0o600)
    path = storage.path_for(backup.storage_key)
    pipeline = (
        f"age -d -i {identity} {path} | zstd -dc | head -c {keep_bytes} "
        f"| zstd -q -c | age -r {keys.recipient} > {tmp / 'cut.age'}"
    )
    await asyncio.to_thread(subprocess.run, ["sh", "-c", pipeline], check=True)
    data = (tmp / "cut.age").read_bytes()
    identity.unlink()
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    manifest = await read_manifest(storage, backup.storage_key)
    await rewrite_manifest(storage, dataclasses.replace(manifest, size_bytes=len(data), sha256=sha))
    async with ctx.db.write_session() as session:
        row = await session.get(Backup, backup_id)
        assert row is not None
        row.size_bytes, row.checksum = len(data), f"sha256:{sha}"
        await session.commit()


async def add_counted_table(api: Api, backup_id: int, table: str, rows: int) -> None:
    """Make the manifest's dump-time row counts name a table the dump does not hold."""
    storage, backup = await local_storage(api, backup_id)
    assert backup.storage_key is not None
    manifest = await read_manifest(storage, backup.storage_key)
    assert manifest.row_counts is not None
    counts = dataclasses.replace(
        manifest.row_counts, tables={**manifest.row_counts.tables, table: rows}
    )
    await rewrite_manifest(storage, dataclasses.replace(manifest, row_counts=counts))


async def rewrite_manifest(storage: LocalStorage, manifest: Manifest) -> None:
    await storage.delete(manifest_key(manifest.key))
    await write_manifest(storage, manifest)
