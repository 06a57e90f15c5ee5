"""Fixtures of the AI model registry tests: a fresh team per test (its chains, budget and
cooldowns are its own) and helpers that register models and chains through the API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.ai_models.fakes import LlmServer

BASE = "/api/v1/ai-models"


def uid(prefix: str = "m") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    assert "timestamp" in body and "detail" in body
    return body


@pytest.fixture
async def team(admin: httpx.AsyncClient) -> int:
    r = await admin.post("/api/v1/users/teams", json={"name": uid("team-")})
    assert r.status_code == 201, r.text
    team_id: int = r.json()["id"]
    return team_id


async def add_model(
    client: httpx.AsyncClient, team: int, server: LlmServer, **fields: Any
) -> dict[str, Any]:
    params = fields.pop("parameters", {})
    body = {
        "name": uid("model-"),
        "provider": server.protocol,
        "model": "gpt-test" if server.protocol == "openai" else "claude-test",
        "endpoint": server.base,
        "api_key": server.api_key,
        "parameters": {"timeout_seconds": 5, **params},
        "price_per_input_token": 0.000001,
        "price_per_output_token": 0.000002,
        "team_id": team,
        **fields,
    }
    r = await client.post(f"{BASE}/", json={k: v for k, v in body.items() if v is not None})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def set_chain(
    client: httpx.AsyncClient, team: int, model_ids: list[int], **fields: Any
) -> dict[str, Any]:
    budget = {k: fields.pop(k) for k in ("budget_usd", "budget_period") if k in fields}
    chain = {
        "purpose": fields.pop("purpose", "default"),
        "model_ids": model_ids,
        "max_retries": 0,
        "backoff_seconds": 0,
        "cooldown_seconds": 0,
        **fields,
    }
    r = await client.put(
        f"{BASE}/fallback-config", json={"chains": [chain], "team_id": team, **budget}
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def add_prompt(client: httpx.AsyncClient, team: int, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "greet",
        "template": "Say hello to {{who}}",
        "labels": ["production"],
        "team_id": team,
        **fields,
    }
    r = await client.post(f"{BASE}/prompts", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def run(client: httpx.AsyncClient, team: int, **fields: Any) -> httpx.Response:
    body = {"prompt": "greet", "variables": {"who": "ops"}, "team_id": team, **fields}
    return await client.post(f"{BASE}/run", json=body)
