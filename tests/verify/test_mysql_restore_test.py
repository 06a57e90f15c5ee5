"""A restore test of a MariaDB backup: scratch database created, row counts compared
with the dump-time ones, scratch dropped; a table missing from the dump is caught."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Api
from tests.verify.helpers import add_counted_table, make_backup, verify

MARIADB = {"type": "mysql", "host": "127.0.0.1", "port": 3306, "credentials": {"username": "root"}}


def mariadb(sql: str) -> str:
    out = subprocess.run(
        ["mariadb", "-h127.0.0.1", "-uroot", "--batch", "--skip-column-names", "-e", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def scratch_schemas() -> set[str]:
    out = mariadb("SELECT schema_name FROM information_schema.schemata")
    return {s for s in out.split() if s.startswith("oc_verify_")}


@pytest.fixture
def maria_db() -> Iterator[str]:
    name = f"oc_vmy_{uuid.uuid4().hex[:8]}"
    mariadb(
        f"CREATE DATABASE {name} CHARACTER SET utf8mb4; "
        f"CREATE TABLE {name}.people (id INT PRIMARY KEY, name VARCHAR(50)); "
        f"INSERT INTO {name}.people WITH RECURSIVE s(n) AS "
        "(SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 250) SELECT n, CONCAT('p', n) FROM s;"
    )
    yield name
    mariadb(f"DROP DATABASE IF EXISTS {name}")


async def test_mariadb_restore_test(api: Api, admin: httpx.AsyncClient, maria_db: str) -> None:
    r = await admin.post("/api/v1/servers", json={"name": f"my-{uuid.uuid4().hex[:6]}", **MARIADB})
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    backup_id = await make_backup(api, admin, server_id, maria_db)
    before = scratch_schemas()

    passed = await verify(api, admin, backup_id, test_type="restore")
    assert passed["status"] == "passed", passed
    assert passed["backup_verification_status"] == "restore_verified"
    counts = {t["table"]: (t["expected"], t["actual"]) for t in passed["table_comparison"]}
    assert next(v for k, v in counts.items() if k.endswith("people")) == (250, 250)
    assert scratch_schemas() <= before

    await add_counted_table(api, backup_id, f"{maria_db}.ghost", 10)
    caught = await verify(api, admin, backup_id, test_type="restore")
    assert caught["status"] == "corrupt" and caught["error_code"] == "table_missing", caught
    assert caught["backup_verification_status"] == "corrupt"
    assert scratch_schemas() <= before
