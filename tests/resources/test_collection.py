"""Collection from this host and from an SSH server on loopback, with values checked
against what the host itself reports; the API's reads and /metrics over them."""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from opscenter.models import StorageProvider
from opscenter.resources.service import collect_round
from tests.conftest import Api, UserFactory
from tests.resources.conftest import mem_total
from tests.ssh.conftest import SshServer


def values_of(body: dict[str, Any], source: str) -> dict[tuple[str, str], float]:
    item = next(i for i in body["items"] if i["source"] == source)
    return {(m["metric"], m["label"]): m["value"] for m in item["metrics"]}


def root_disk() -> float:
    st = os.statvfs("/")
    return float(st.f_blocks * st.f_frsize)


async def test_this_host_is_collected_and_matches_the_kernel(
    api: Api, admin: httpx.AsyncClient
) -> None:
    ctx = api.app.state.ctx
    first = await collect_round(ctx, only={"host"})
    assert first.errors == {} and first.sources == 1 and first.samples >= 8
    await collect_round(ctx, only={"host"})  # rates (CPU, network) need a second reading

    r = await admin.get("/api/v1/resources/metrics/current")
    assert r.status_code == 200, r.text
    got = values_of(r.json(), "host")
    assert got[("memory_total_bytes", "")] == mem_total()
    assert 0 < got[("memory_used_percent", "")] < 100
    assert abs(got[("load_1", "")] - os.getloadavg()[0]) < 2
    assert 0 <= got[("cpu_percent", "")] <= 100
    if ("disk_total_bytes", "/") in got:
        assert got[("disk_total_bytes", "/")] == root_disk()

    r = await admin.get(
        "/api/v1/resources/metrics/history",
        params={"metric": "memory_total_bytes", "window": "1h", "step": "1m"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "host" and body["step_seconds"] == 60
    (series,) = body["series"]
    assert series["points"] and series["points"][-1]["max"] == mem_total()

    infra = (await admin.get("/api/v1/resources/infrastructure")).json()["items"]
    host = next(i for i in infra if i["server_id"] is None)
    assert host["metrics"]["memory_total_bytes"] == mem_total()

    text = (await admin.get("/metrics")).text
    assert 'opscenter_resource_value{label="",metric="memory_total_bytes",source="host"}' in text


async def test_a_storage_that_cannot_be_opened_is_an_error_of_the_round_not_its_end(
    api: Api, admin: httpx.AsyncClient
) -> None:
    ctx = api.app.state.ctx
    async with ctx.db.write_session() as session:  # a row no API call could write
        broken = StorageProvider(team_id=1, name=f"broken-{uuid.uuid4().hex[:6]}", type="local")
        session.add(broken)
        await session.commit()
    try:
        source = f"storage:{broken.id}"
        host_only = await collect_round(ctx, only={"host"})
        assert host_only.errors == {} and host_only.sources == 1
        both = await collect_round(ctx, only={"host", source})
        assert both.sources == 1 and set(both.errors) == {source}
    finally:
        async with ctx.db.write_session() as session:
            await session.execute(delete(StorageProvider).where(StorageProvider.id == broken.id))
            await session.commit()


async def test_an_ssh_host_is_read_through_its_transport(
    api: Api,
    admin: httpx.AsyncClient,
    make_sshd: Callable[[], SshServer],
    ssh_client_key: Path,
) -> None:
    sshd = make_sshd()
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": f"mon-{uuid.uuid4().hex[:6]}",
            "type": "ssh",
            "host": "127.0.0.1",
            "port": sshd.port,
            "credentials": {"username": getpass.getuser(), "ssh_key": ssh_client_key.read_text()},
        },
    )
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    source = f"server:{server_id}"
    ctx = api.app.state.ctx
    result = await collect_round(ctx, only={source})
    assert result.errors == {}, result.errors
    await collect_round(ctx, only={source})

    r = await admin.get("/api/v1/resources/metrics/current", params={"server_id": server_id})
    got = values_of(r.json(), source)
    # The SSH host is this host: /proc and df there say what the kernel says here.
    assert got[("memory_total_bytes", "")] == mem_total()
    assert 0 <= got[("cpu_percent", "")] <= 100
    assert ("net_rx_bytes_per_second", "") in got
    if ("disk_total_bytes", "/") in got:
        assert got[("disk_total_bytes", "/")] == pytest.approx(root_disk(), rel=1e-3)

    infra = (await admin.get("/api/v1/resources/infrastructure")).json()["items"]
    item = next(i for i in infra if i["server_id"] == server_id)
    assert item["metrics"]["memory_total_bytes"] == mem_total() and item["collected_at"]

    # A host that stops answering is an error of its own; the round goes on.
    sshd.stop()
    failed = await collect_round(ctx, only={source, "host"})
    assert source in failed.errors and "host" not in failed.errors


async def test_reads_refuse_bad_input_and_other_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    history = "/api/v1/resources/metrics/history"
    for params, code in (
        ({"metric": "nonsense"}, "VALIDATION_ERROR"),
        ({"metric": "cpu_percent", "window": "7 days"}, "VALIDATION_ERROR"),
        ({"metric": "cpu_percent", "window": "400d"}, "VALIDATION_ERROR"),
        ({"metric": "cpu_percent", "window": "30d", "step": "15s"}, "VALIDATION_ERROR"),
        ({"metric": "cpu_percent", "server_id": 2_000_000}, "NOT_FOUND"),
    ):
        r = await admin.get(history, params=params)
        assert r.status_code in (404, 422) and r.json()["code"] == code, (params, r.text)
    r = await admin.get("/api/v1/resources/capacity/forecast", params={"window": "soon"})
    assert r.status_code == 422

    async with api.client() as anonymous:
        assert (await anonymous.get("/api/v1/resources/metrics/current")).status_code == 401

    team = await admin.post("/api/v1/users/teams", json={"name": f"t-{uuid.uuid4().hex[:6]}"})
    outsider = await make_user("operator", team_ids=[team.json()["id"]])
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": f"pg-{uuid.uuid4().hex[:6]}",
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": 5432,
            "credentials": {"username": "postgres"},
        },
    )
    server_id = r.json()["id"]
    async with outsider.client(api) as c:
        r = await c.get(history, params={"metric": "cpu_percent", "server_id": server_id})
        assert r.status_code == 404
        infra = (await c.get("/api/v1/resources/infrastructure")).json()["items"]
        assert server_id not in {i["server_id"] for i in infra}


async def test_a_database_server_reports_its_own_statistics(
    api: Api, admin: httpx.AsyncClient
) -> None:
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": f"pg-{uuid.uuid4().hex[:6]}",
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": 5432,
            "credentials": {"username": "postgres"},
        },
    )
    server_id = r.json()["id"]
    source = f"server:{server_id}"
    result = await collect_round(api.app.state.ctx, only={source})
    assert result.errors == {}, result.errors
    got = values_of(
        (
            await admin.get("/api/v1/resources/metrics/current", params={"server_id": server_id})
        ).json(),
        source,
    )
    assert got[("db_connections", "")] >= 1 and got[("db_max_connections", "")] >= 1
    assert got[("db_size_bytes", "postgres")] > 0
    r = await admin.get("/api/v1/resources/capacity/forecast")
    kinds = {(i["kind"], i["label"]) for i in r.json()["items"] if i["server_id"] == server_id}
    assert ("database", "postgres") in kinds
