"""Storage providers through the API: local, network and S3 (moto on loopback), secrets
never returned, the outbound address policy, and a backup into S3 that restores."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import admin_client, make_settings
from tests.helpers import psql
from tests.storage.conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, OPSCENTER_OUTBOUND_ALLOWLIST="127.0.0.1/32")
    async with admin_client(settings, ("127.0.0.1", 40000)) as c:
        yield c


def s3_body(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"s3-{uuid.uuid4().hex[:6]}",
        "type": "s3",
        "config": {"bucket": bucket, "endpoint_url": endpoint, "addressing_style": "path"},
        "credentials": {"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET_ACCESS_KEY},
        **extra,
    }


async def test_default_local_provider_exists_and_works(client: httpx.AsyncClient) -> None:
    providers = (await client.get("/api/v1/storage/providers")).json()["items"]
    default = next(p for p in providers if p["is_default"])
    assert default["type"] == "local" and default["name"] == "local"
    r = await client.post("/api/v1/storage/test", json={"provider_id": default["id"]})
    assert r.json()["success"] is True, r.json()
    space = (await client.get(f"/api/v1/storage/{default['id']}/space")).json()
    assert space["free_bytes"] > 0 and space["total_bytes"] >= space["free_bytes"]


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"path": "\\\\fileserver\\backups"}, "not a mounted path"),
        ({"path": "//fileserver/backups"}, "not a mounted path"),
        ({"path": "relative/dir"}, "absolute"),
        ({"path": "/tmp/../etc"}, "'..'"),
    ],
)
async def test_bad_path_configs_say_what_to_do(
    client: httpx.AsyncClient, config: dict[str, str], fragment: str
) -> None:
    r = await client.post(
        "/api/v1/storage/providers", json={"name": "bad", "type": "network", "config": config}
    )
    assert r.status_code == 422 and fragment in str(r.json()["detail"]), r.json()
    names = [p["name"] for p in (await client.get("/api/v1/storage/providers")).json()["items"]]
    assert "bad" not in names


async def test_network_path_must_be_a_mount_point(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    r = await client.post(
        "/api/v1/storage/providers",
        json={"name": "nas", "type": "network", "config": {"path": str(tmp_path)}},
    )
    assert r.status_code == 422 and "not a mount point" in r.json()["detail"]


async def test_s3_provider_roundtrip_and_secrets(
    client: httpx.AsyncClient, s3_endpoint: str, bucket: str
) -> None:
    r = await client.post("/api/v1/storage/test", json={"provider": s3_body(s3_endpoint, bucket)})
    assert r.json()["success"] is True, r.json()
    r = await client.post("/api/v1/storage/providers", json=s3_body(s3_endpoint, bucket))
    assert r.status_code == 201, r.text
    provider = r.json()
    assert provider["has_credentials"] is True and "credentials" not in provider
    assert SECRET_ACCESS_KEY not in r.text
    listed = await client.get("/api/v1/storage/providers")
    assert SECRET_ACCESS_KEY not in listed.text
    audit = await client.get("/api/v1/audit/logs", params={"resource_type": "storage"})
    assert SECRET_ACCESS_KEY not in audit.text

    # wrong secret: the test fails clearly, and without echoing the secret
    r = await client.put(
        f"/api/v1/storage/providers/{provider['id']}",
        json={
            "credentials": {"access_key_id": "AKIAWRONG", "secret_access_key": "wrong-secret-value"}
        },
    )
    assert r.status_code == 200
    result = (
        await client.post("/api/v1/storage/test", json={"provider_id": provider["id"]})
    ).json()
    assert "wrong-secret-value" not in str(result)


async def test_outbound_policy_refuses_internal_endpoints(
    client: httpx.AsyncClient, bucket: str
) -> None:
    for endpoint in (
        "http://10.1.2.3:9000",
        "http://169.254.169.254",
        "http://[::1]:9000",
        "http://0x7f000002:9000",
        "http://2130706434:9000",
    ):
        r = await client.post("/api/v1/storage/providers", json=s3_body(endpoint, bucket))
        assert r.status_code == 422 and "OUTBOUND_ALLOWLIST" in r.json()["detail"], (
            endpoint,
            r.text,
        )


async def test_backup_into_s3_and_restore(
    client: httpx.AsyncClient, s3_endpoint: str, bucket: str, raw_s3: Any
) -> None:
    provider = (
        await client.post("/api/v1/storage/providers", json=s3_body(s3_endpoint, bucket))
    ).json()
    source = f"oc_s3_{uuid.uuid4().hex[:8]}"
    target = f"oc_s3_{uuid.uuid4().hex[:8]}"

    psql(f'CREATE DATABASE "{source}"')
    try:
        psql(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 3000) g",
            source,
        )
        server = (
            await client.post(
                "/api/v1/servers",
                json={
                    "name": "pg",
                    "type": "postgresql",
                    "host": "127.0.0.1",
                    "credentials": {"username": "postgres"},
                },
            )
        ).json()
        accepted = (
            await client.post(
                "/api/v1/backups",
                json={
                    "server_id": server["id"],
                    "database_name": source,
                    "storage_id": provider["id"],
                },
            )
        ).json()
        runner = client.app.state.ctx.runner  # type: ignore[attr-defined]
        job = await runner.wait(accepted["job_id"], limit_seconds=120)
        assert job.status == "succeeded", job.error_message
        backup = (await client.get(f"/api/v1/backups/{accepted['id']}")).json()
        keys = {o["Key"] for o in raw_s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert backup["storage_path"] in keys and backup["storage_path"] + ".manifest.json" in keys

        link = (await client.post(f"/api/v1/backups/{backup['id']}/download")).json()
        assert link["download_url"].startswith(s3_endpoint)  # presigned by the storage
        body = httpx.get(link["download_url"]).content
        assert "sha256:" + hashlib.sha256(body).hexdigest() == backup["checksum"]

        restore = (
            await client.post(
                f"/api/v1/backups/{backup['id']}/restore", json={"target_database": target}
            )
        ).json()
        job = await runner.wait(restore["job_id"], limit_seconds=120)
        assert job.status == "succeeded", job.error_message
        digest = "SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM t"
        assert psql(digest, target) == psql(digest, source)
    finally:
        for name in (source, target):
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_delete_refuses_providers_that_backups_or_schedules_use(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    async def local_provider(name: str) -> dict[str, Any]:
        r = await client.post(
            "/api/v1/storage/providers",
            json={"name": name, "type": "local", "config": {"path": str(tmp_path / name)}},
        )
        assert r.status_code == 201, r.text
        return r.json()

    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("alpha")
    server = (
        await client.post(
            "/api/v1/servers", json={"name": "files", "type": "local", "paths": [str(files)]}
        )
    ).json()

    holding = await local_provider("holding")
    accepted = (
        await client.post(
            "/api/v1/backups",
            json={
                "server_id": server["id"],
                "source_path": str(files),
                "storage_id": holding["id"],
            },
        )
    ).json()
    runner = client.app.state.ctx.runner  # type: ignore[attr-defined]
    assert (await runner.wait(accepted["job_id"], limit_seconds=60)).status == "succeeded"
    r = await client.delete(f"/api/v1/storage/providers/{holding['id']}")
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
    assert "1 backup(s)" in r.json()["detail"] and "is_active" in r.json()["detail"]
    assert (await client.get(f"/api/v1/storage/providers/{holding['id']}")).status_code == 200
    backup = (await client.get(f"/api/v1/backups/{accepted['id']}")).json()
    assert backup["status"] == "completed"

    scheduled = await local_provider("scheduled")
    schedule = await client.post(
        "/api/v1/schedules",
        json={
            "name": "nightly-files",
            "server_id": server["id"],
            "source_path": str(files),
            "cron_expression": "0 3 * * *",
            "storage_ids": [scheduled["id"]],
        },
    )
    assert schedule.status_code == 201, schedule.text
    r = await client.delete(f"/api/v1/storage/providers/{scheduled['id']}")
    assert r.status_code == 409 and "nightly-files" in r.json()["detail"]

    # Once nothing uses them, both go; an unknown id is a 404.
    assert (await client.delete(f"/api/v1/backups/{accepted['id']}")).status_code == 204
    assert (await client.delete(f"/api/v1/schedules/{schedule.json()['id']}")).status_code == 204
    for provider in (holding, scheduled):
        r = await client.delete(f"/api/v1/storage/providers/{provider['id']}")
        assert r.status_code == 204, r.text
        assert (await client.get(f"/api/v1/storage/providers/{provider['id']}")).status_code == 404
    r = await client.delete(f"/api/v1/storage/providers/{holding['id']}")
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"


async def test_seed_000_connection_strings_are_understood(
    client: httpx.AsyncClient, tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    async def test(body: dict[str, Any]) -> dict[str, Any]:
        r = await client.post("/api/v1/storage/test", json=body)
        assert r.status_code == 200, (body, r.text)
        result: dict[str, Any] = r.json()
        assert {"success", "message"} <= set(result)
        return result

    # The seed's example as written: a share name, answered with how to use it.
    result = await test({"provider_type": "network", "connection_string": "\\\\server\\backup"})
    assert result["success"] is False and "mount" in result["message"], result
    assert (await test({"provider_type": "local", "connection_string": str(tmp_path)}))["success"]
    s3 = {
        "provider_type": "s3",
        "connection_string": f"s3://{bucket}/nightly",
        "endpoint_url": s3_endpoint,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }
    assert (await test(s3))["success"] is True
    closed = {"provider_type": "sftp", "connection_string": "sftp://backup@127.0.0.1:1/srv/b"}
    result = await test({**closed, "password": "pw-not-shown"})
    assert result["success"] is False and "pw-not-shown" not in str(result)

    for bad in (
        {"provider_type": "s3", "connection_string": "bucket-only"},
        {"provider_type": "sftp", "connection_string": "sftp://host-without-user/path"},
        {"provider_type": "network"},
        {"provider_type": "ftp", "connection_string": "ftp://x/y"},
    ):
        r = await client.post("/api/v1/storage/test", json=bad)
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", (bad, r.text)


async def test_a_slow_name_lookup_stalls_no_other_request(
    client: httpx.AsyncClient, bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolving a provider's endpoint blocks for as long as DNS takes: in a thread, and with
    no transaction held, so the server answers everyone else meanwhile."""
    resolve = socket.getaddrinfo

    def slow(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow-dns.example":
            time.sleep(1.5)
            return resolve("127.0.0.1", *args, **kwargs)
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    endpoint = s3_endpoint.replace("127.0.0.1", "slow-dns.example")
    creating = asyncio.create_task(
        client.post("/api/v1/storage/providers", json=s3_body(endpoint, bucket))
    )
    await asyncio.sleep(0.3)  # the lookup has begun
    started = time.monotonic()
    listed = await client.get("/api/v1/storage/providers")
    renamed = await client.put("/api/v1/storage/providers/1", json={"name": "local-renamed"})
    answered = time.monotonic() - started
    assert listed.status_code == 200 and renamed.status_code == 200, renamed.text
    assert not creating.done() and answered < 1.0, answered
    created = await creating
    assert created.status_code == 201, created.text
    assert created.json()["config"]["endpoint_url"] == endpoint
