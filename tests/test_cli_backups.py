"""The backup CLI, as an operator uses it: run a backup with a progress bar, list it,
export the key, and restore the artifact with nothing but age, zstd and pg_restore."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from opscenter.app import create_app
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.helpers import psql


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    source, copy = f"oc_cli_{uuid.uuid4().hex[:8]}", f"oc_cli_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{source}"')
    psql(
        "CREATE TABLE t (id int PRIMARY KEY, body text); "
        "INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 2000) g",
        source,
    )
    yield source, copy
    for name in (source, copy):
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OPSCENTER_DATA_DIR": str(data_dir),
        "OPSCENTER_HEALTH_INTERVAL": "0",
        "OPSCENTER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "OPSCENTER_LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "opscenter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_cli_backup_and_standard_tools_restore(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    source, copy = databases
    app = create_app(make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        import httpx

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            token = (
                await c.post(
                    "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
                )
            ).json()
            auth = {"Authorization": f"Bearer {token['access_token']}"}
            r = await c.post(
                "/api/v1/servers",
                headers=auth,
                json={
                    "name": "pg",
                    "type": "postgresql",
                    "host": "127.0.0.1",
                    "credentials": {"username": "postgres"},
                },
            )
            server_id = r.json()["id"]
            providers = (await c.get("/api/v1/storage/providers", headers=auth)).json()["items"]
            (tmp_path / "second").mkdir()
            r = await c.post(
                "/api/v1/storage/providers",
                headers=auth,
                json={
                    "name": "second",
                    "type": "local",
                    "config": {"path": str(tmp_path / "second")},
                },
            )
            storage_ids = [providers[0]["id"], r.json()["id"]]

    run = cli(tmp_path, "backup", "run", "--server", str(server_id), "--database", source)
    assert run.returncode == 0, run.stderr
    backup_id, key, size, checksum = run.stdout.strip().split("\t")
    assert "backup succeeded" in run.stderr and checksum.startswith("sha256:")

    listing = cli(tmp_path, "backup", "list")
    assert listing.returncode == 0 and source in listing.stdout and "completed" in listing.stdout

    verify = cli(tmp_path, "backup", "verify", backup_id)
    assert verify.returncode == 0, verify.stderr
    assert "verification_status deep_ok" in verify.stderr
    listing = cli(tmp_path, "backup", "list")
    assert "deep_ok" in listing.stdout  # recorded, as through the API
    bad = cli(tmp_path, "backup", "verify", backup_id, "--type", "thorough")
    assert bad.returncode == 2 and "checksum, deep or restore" in bad.stderr

    exported = cli(tmp_path, "keys", "export")
    assert exported.returncode == 0 and "AGE-SECRET-KEY-1" in exported.stdout
    assert "AGE-SECRET-KEY" not in exported.stderr
    key_file = tmp_path / "key.txt"
    key_file.write_text(exported.stdout)

    artifact = tmp_path / "backups" / key
    assert artifact.stat().st_size == int(size)
    psql(f'CREATE DATABASE "{copy}"')
    # The one-liner of the README, with only standard tools:
    subprocess.run(
        f"age -d -i {key_file} {artifact} | zstd -d | "
        f"pg_restore -h 127.0.0.1 -U postgres --exit-on-error -d {copy}",
        shell=True,
        check=True,
    )
    digest = "SELECT md5(string_agg(id || ':' || body, ',' ORDER BY id)) FROM t"
    assert psql(digest, copy) == psql(digest, source)

    decrypted = tmp_path / "dump.zst"
    assert cli(tmp_path, "decrypt", str(artifact), "-o", str(decrypted)).returncode == 0
    assert decrypted.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame

    # copies in two storages from one dump: one line per copy, equal bytes
    both = [f"--storage={i}" for i in storage_ids]
    run = cli(tmp_path, "backup", "run", "--server", str(server_id), "--database", source, *both)
    assert run.returncode == 0, run.stderr
    (_, key1, size1, sum1), (_, key2, size2, sum2) = (
        line.split("\t") for line in run.stdout.strip().splitlines()
    )
    assert (size1, sum1) == (size2, sum2)
    primary = (tmp_path / "backups" / key1).read_bytes()
    assert (tmp_path / "second" / key2).read_bytes() == primary

    too_many = ("--parallel-streams", "17")
    refused = cli(
        tmp_path, "backup", "run", "--server", str(server_id), "--database", source, *too_many
    )
    assert refused.returncode == 2 and "--parallel-streams" in refused.stderr, refused.stderr

    failed = cli(tmp_path, "backup", "run", "--server", str(server_id), "--database", "nope_db")
    assert failed.returncode == 1 and "database_missing" in failed.stderr
