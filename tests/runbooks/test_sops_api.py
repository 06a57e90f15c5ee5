"""Runbooks (SOPs) through the API on SQLite and PostgreSQL: manual, approval, command and
wait steps against a real sshd on loopback; versions; pause, resume, cancel; a failed step
stops the run unless it says continue; bad input, roles and team scoping."""

from __future__ import annotations

import getpass
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.commands.helpers import create_command, unique
from tests.conftest import Api, UserFactory
from tests.ssh.conftest import SshServer


@pytest.fixture
async def ssh_server(
    admin: httpx.AsyncClient, sshd: SshServer, ssh_client_key: Path
) -> dict[str, Any]:
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": unique("ssh"),
            "type": "ssh",
            "host": "127.0.0.1",
            "port": sshd.port,
            "credentials": {"username": getpass.getuser(), "ssh_key": ssh_client_key.read_text()},
        },
    )
    assert r.status_code == 201, r.text
    server: dict[str, Any] = r.json()
    return server


async def settle(api: Api, client: httpx.AsyncClient, run: dict[str, Any]) -> dict[str, Any]:
    """The run once its current advance job ended."""
    if run.get("job_id"):
        await api.app.state.ctx.runner.wait(int(run["job_id"]), limit_seconds=60)
    r = await client.get(f"/api/v1/sops/executions/{run['id']}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def start(api: Api, client: httpx.AsyncClient, sop_id: int, **body: Any) -> dict[str, Any]:
    r = await client.post(f"/api/v1/sops/{sop_id}/execute", json=body)
    assert r.status_code == 202, r.text
    return await settle(api, client, {"id": r.json()["id"], "job_id": r.json()["job_id"]})


def _running(marker: str) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


async def test_manual_approval_and_command_steps(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, ssh_server: dict[str, Any]
) -> None:
    cmd = await create_command(admin, command_template="echo {{word}}")
    operator = await make_user("operator")
    other_operator = await make_user("operator")
    viewer = await make_user("viewer")
    sop_body = {
        "name": unique("Restart the web tier"),
        "description": "Seed 004's runbook",
        "server_ids": [ssh_server["id"]],
        "steps": [
            {"name": "Check the dashboards", "type": "manual"},
            {"name": "Change approval", "type": "approval", "approver_role": "admin"},
            {
                "name": "Say hello",
                "type": "command",
                "command_id": cmd["id"],
                "variables": {"word": "hello"},
            },
        ],
    }
    async with operator.client(api) as op:
        r = await op.post("/api/v1/sops", json=sop_body)
        assert r.status_code == 201, r.text
        sop = r.json()
        assert sop["version"] == 1 and len(sop["steps"]) == 3
        listed = (await op.get("/api/v1/sops")).json()
        assert sop["id"] in [s["id"] for s in listed["items"]]

        run = await start(api, op, sop["id"])
        assert run["status"] == "waiting" and run["current_step"] == 0 and run["version"] == 1
        assert run["steps"][0]["status"] == "waiting"
        # The approval cannot be given before its turn.
        r = await admin.post(f"/api/v1/sops/executions/{run['id']}/steps/1/approve", json={})
        assert r.status_code == 409
        r = await op.post(
            f"/api/v1/sops/executions/{run['id']}/steps/0/complete",
            json={"note": "all green"},
        )
        assert r.status_code == 200, r.text
        run = await settle(api, op, r.json())
        assert run["status"] == "waiting" and run["current_step"] == 1
        first = run["steps"][0]
        assert first["status"] == "completed" and first["actor"] == operator.username
        assert first["note"] == "all green" and first["completed_at"]

        # The requester cannot approve their own run; nor can a viewer or a non-approver.
        url = f"/api/v1/sops/executions/{run['id']}/steps/1/approve"
        r = await op.post(url, json={})
        assert r.status_code == 403 and "started this run" in r.json()["detail"]
    async with viewer.client(api) as c:
        assert (await c.post(url, json={})).status_code == 403
    async with other_operator.client(api) as c:
        r = await c.post(url, json={})
        assert r.status_code == 403 and "'admin'" in r.json()["detail"]
    still = (await admin.get(f"/api/v1/sops/executions/{run['id']}")).json()
    assert still["status"] == "waiting" and still["steps"][1]["status"] == "waiting"

    r = await admin.post(url, json={"note": "go"})
    assert r.status_code == 200, r.text
    run = await settle(api, admin, r.json())
    assert run["status"] == "completed", run
    approval, command = run["steps"][1], run["steps"][2]
    assert approval["actor"] == "admin" and approval["status"] == "completed"
    assert command["status"] == "completed" and command["command_execution_id"]
    e = (await admin.get(f"/api/v1/commands/executions/{command['command_execution_id']}")).json()
    assert e["stdout"] == "hello\n" and e["executed_by"] == operator.username
    assert e["sop_run_id"] == run["id"]

    # A new version; the finished run keeps the one it ran.
    async with operator.client(api) as op:
        r = await op.put(f"/api/v1/sops/{sop['id']}", json={"description": "v2"})
        assert r.status_code == 200 and r.json()["version"] == 2
        versions = (await op.get(f"/api/v1/sops/{sop['id']}/versions")).json()
        assert [v["version"] for v in versions] == [2, 1]
        assert (await op.get(f"/api/v1/sops/executions/{run['id']}")).json()["version"] == 1
        audit = (await admin.get("/api/v1/audit/logs", params={"action": "sop.approve"})).json()
        assert any(
            a["resource_id"] == str(run["id"]) or a["resource_id"] == run["id"]
            for a in audit["items"]
        )


async def test_pause_resume_cancel_kills_the_command(
    api: Api, admin: httpx.AsyncClient, ssh_server: dict[str, Any]
) -> None:
    marker = f"oc{uuid.uuid4().hex[:10]}"
    cmd = await create_command(admin, command_template=f"sleep 300; echo {marker}")
    r = await admin.post(
        "/api/v1/sops",
        json={
            "name": unique("sop"),
            "server_ids": [ssh_server["id"]],
            "steps": [
                {"name": "Ready?", "type": "manual"},
                {"name": "Long", "type": "command", "command_id": cmd["id"]},
            ],
        },
    )
    sop = r.json()
    run = await start(api, admin, sop["id"])
    base = f"/api/v1/sops/executions/{run['id']}"
    r = await admin.post(f"{base}/pause")
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = await admin.post(f"{base}/steps/0/complete", json={})
    assert r.status_code == 409 and "paused" in r.json()["detail"]
    r = await admin.post(f"{base}/resume")
    assert r.status_code == 200
    run = await settle(api, admin, r.json())
    assert run["status"] == "waiting" and not run["paused"]
    r = await admin.post(f"{base}/steps/0/complete", json={})
    job_id = r.json()["job_id"]
    for _ in range(200):  # until the command runs on the target
        if _running(marker):
            break
        await __import__("asyncio").sleep(0.05)
    assert _running(marker)
    r = await admin.post(f"{base}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    await api.app.state.ctx.runner.wait(job_id, limit_seconds=30)
    run = (await admin.get(base)).json()
    assert run["status"] == "cancelled" and run["steps"][1]["status"] == "cancelled"
    assert not _running(marker)
    assert (await admin.post(f"{base}/cancel")).status_code == 409


async def test_failed_step_stops_unless_it_continues_and_wait_times_out(
    api: Api, admin: httpx.AsyncClient, ssh_server: dict[str, Any]
) -> None:
    fail = await create_command(
        admin, command_template="exit {{code}}", variables=[{"name": "code", "type": "int"}]
    )
    r = await admin.post(
        "/api/v1/sops",
        json={
            "name": unique("sop"),
            "server_ids": [ssh_server["id"]],
            "steps": [
                {
                    "name": "May fail",
                    "type": "command",
                    "command_id": fail["id"],
                    "variables": {"code": 1},
                    "continue_on_failure": True,
                },
                {
                    "name": "Fresh backup",
                    "type": "wait",
                    "condition": "backup_verified_within",
                    "wait_timeout_seconds": 1,
                },
                {"name": "Never", "type": "manual"},
            ],
        },
    )
    assert r.status_code == 201, r.text
    run = await start(api, admin, r.json()["id"])
    assert run["status"] == "failed" and "step 2" in run["error"]
    assert [s["status"] for s in run["steps"]] == ["failed", "failed", "pending"]
    assert "not met" in run["steps"][1]["outputs"]["error"]


async def test_bad_input_roles_and_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, ssh_server: dict[str, Any]
) -> None:
    cmd = await create_command(
        admin, command_template="echo {{n}}", variables=[{"name": "n", "type": "int"}]
    )
    for steps, code in [
        ([], 422),
        ([{"name": "x", "type": "command"}], 422),
        ([{"name": "x", "type": "wait"}], 422),
        ([{"name": "x", "type": "teleport"}], 422),
        ([{"name": "x", "type": "manual", "command_id": cmd["id"]}], 422),
        ([{"name": "x", "type": "command", "command_id": 999999}], 404),
    ]:
        r = await admin.post("/api/v1/sops", json={"name": unique(), "steps": steps})
        assert r.status_code == code, (steps, r.text)
    r = await admin.post(
        "/api/v1/sops",
        json={"name": unique(), "steps": [{"name": "m", "type": "manual"}], "server_ids": [999999]},
    )
    assert r.status_code == 404
    # A value its command refuses fails the start, and no run is left behind.
    bad = (
        await admin.post(
            "/api/v1/sops",
            json={
                "name": unique(),
                "server_ids": [ssh_server["id"]],
                "steps": [
                    {
                        "name": "c",
                        "type": "command",
                        "command_id": cmd["id"],
                        "variables": {"n": "1; id"},
                    }
                ],
            },
        )
    ).json()
    r = await admin.post(f"/api/v1/sops/{bad['id']}/execute", json={})
    assert r.status_code == 422 and "whole number" in r.json()["detail"]
    runs = (await admin.get("/api/v1/sops/executions", params={"sop_id": bad["id"]})).json()
    assert runs["total"] == 0

    manual = (
        await admin.post(
            "/api/v1/sops", json={"name": unique(), "steps": [{"name": "m", "type": "manual"}]}
        )
    ).json()
    run = await start(api, admin, manual["id"])
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.get(f"/api/v1/sops/{manual['id']}")).status_code == 200
        assert (await c.post(f"/api/v1/sops/{manual['id']}/execute", json={})).status_code == 403
        r = await c.post(
            "/api/v1/sops", json={"name": unique(), "steps": [{"name": "m", "type": "manual"}]}
        )
        assert r.status_code == 403
    async with api.client() as c:
        assert (await c.get("/api/v1/sops")).status_code == 401
    team = (await admin.post("/api/v1/users/teams", json={"name": unique("team")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    async with outsider.client(api) as c:
        for method, path in [
            ("GET", f"/sops/{manual['id']}"),
            ("PUT", f"/sops/{manual['id']}"),
            ("DELETE", f"/sops/{manual['id']}"),
            ("POST", f"/sops/{manual['id']}/execute"),
            ("GET", f"/sops/executions/{run['id']}"),
            ("POST", f"/sops/executions/{run['id']}/steps/0/complete"),
            ("POST", f"/sops/executions/{run['id']}/cancel"),
        ]:
            r = await c.request(method, f"/api/v1{path}", json={} if method != "GET" else None)
            assert r.status_code == 404, (method, path, r.text)
    # A runbook with a run still going cannot be deleted.
    r = await admin.delete(f"/api/v1/sops/{manual['id']}")
    assert r.status_code == 409
