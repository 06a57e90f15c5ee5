from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import Api


def unique(prefix: str = "cmd") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def create_command(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": unique(), "command_template": "echo hello", **fields}
    r = await client.post("/api/v1/commands", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def this_host(client: httpx.AsyncClient) -> dict[str, Any]:
    servers = (await client.get("/api/v1/servers", params={"type": "local"})).json()["items"]
    local: dict[str, Any] = next(s for s in servers if s["name"] == "this host")
    return local


async def execute(
    api: Api, client: httpx.AsyncClient, command_id: int, **body: Any
) -> dict[str, Any]:
    """Run and wait for the end; the execution with its results."""
    r = await client.post(f"/api/v1/commands/{command_id}/execute", json=body)
    assert r.status_code == 202, r.text
    accepted = r.json()
    try:
        await api.app.state.ctx.runner.wait(accepted["job_id"], limit_seconds=60)
    except TimeoutError:
        jobs = (await client.get("/api/v1/jobs", params={"limit": 10})).json()["items"]
        raise AssertionError(
            [(j["id"], j["kind"], j["status"], j["phase"]) for j in jobs]
        ) from None
    r = await client.get(f"/api/v1/commands/executions/{accepted['execution_id']}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data
