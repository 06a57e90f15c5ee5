from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from tests.conftest import Api
from tests.core.helpers import uid

from opscenter.core.events import Event

BASE = "/api/v1/integrations"


def publish(api: Api, type_: str, data: dict[str, Any], team_id: int | None = None) -> None:
    api.app.state.ctx.events.publish(Event(type_, data, team_id=team_id))


async def create(
    client: httpx.AsyncClient,
    type_: str,
    config: dict[str, Any],
    credentials: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": uid(f"{type_}-"), "type": type_, "config": config}
    if credentials is not None:
        body["credentials"] = credentials
    r = await client.post(f"{BASE}/", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def deliveries(client: httpx.AsyncClient, integration_id: int) -> list[dict[str, Any]]:
    r = await client.get(f"{BASE}/{integration_id}/deliveries")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def wait_deliveries(
    client: httpx.AsyncClient,
    integration_id: int,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 15,
) -> list[dict[str, Any]]:
    """Poll the delivery log until `done` holds for it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        items = await deliveries(client, integration_id)
        if done(items):
            return items
        if loop.time() > deadline:
            raise AssertionError(f"deliveries never settled: {items}")
        await asyncio.sleep(0.05)


def settled(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda items: (
        len(items) >= count and all(d["status"] in ("succeeded", "failed") for d in items)
    )
