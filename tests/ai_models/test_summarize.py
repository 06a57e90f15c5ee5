"""The summary of an incident's timeline made through the registry, against a loopback
server speaking OpenAI chat completions: the text and the model named, the timeline in
the prompt, the team's production prompt replacing the built-in one, no model configured,
roles, another team's incident, bad ids, the audit entry and the recorded call."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.ai_models.conftest import BASE, add_model, add_prompt, assert_error, set_chain, uid
from tests.ai_models.fakes import llm_server
from tests.auth.test_auth import assert_unauthorized, audit_items
from tests.conftest import Api, UserFactory

pytestmark = pytest.mark.usefixtures("allow_loopback")
INCIDENTS = "/api/v1/infra/incidents"


async def make_incident(admin: httpx.AsyncClient, team: int, squad: str) -> dict[str, Any]:
    r = await admin.post(
        INCIDENTS,
        json={
            "title": "Database connection pool exhausted",
            "description": "API pods cannot get connections from the primary database",
            "severity": "critical",
            "environment": "production",
            "squad": squad,
            "affected_services": ["api", "checkout"],
            "team_id": team,
        },
    )
    assert r.status_code == 201, r.text
    incident: dict[str, Any] = r.json()
    r = await admin.patch(f"{INCIDENTS}/{incident['id']}", json={"status": "investigating"})
    assert r.status_code == 200, r.text
    return incident


async def test_summarize_an_incident_timeline(
    api: Api, admin: httpx.AsyncClient, team: int, make_user: UserFactory
) -> None:
    squad = uid("sq")
    incident = await make_incident(admin, team, squad)
    url = f"{BASE}/summarize/incident/{incident['id']}"
    body = assert_error(await admin.post(url), 409, "AI_NOT_CONFIGURED")
    assert "fallback-config" in body["detail"]

    with llm_server("openai", api_key="sk-sum-SECRET", name="GPT") as gpt:
        mid = (await add_model(admin, team, gpt, name="summarizer"))["id"]
        await set_chain(admin, team, [mid], purpose="incident_summary")
        # a staging version does not replace the built-in prompt: production does
        await add_prompt(
            admin, team, name="incident-timeline-summary", template="{{key}}", labels=["staging"]
        )
        r = await admin.post(url)
        assert r.status_code == 200, r.text
        summary: dict[str, Any] = r.json()
        assert summary["summary"] == "GPT says: the answer"
        assert summary["model_name"] == "summarizer" and summary["model_id"] == mid
        assert summary["provider"] == "openai" and summary["model"] == "gpt-test"
        assert summary["prompt_version"] is None  # the built-in prompt
        assert summary["incident_id"] == incident["id"] and summary["team_id"] == team
        # created (status open), then moved to investigating with its timestamp
        assert summary["timeline_entries"] == 3
        assert "sk-sum-SECRET" not in r.text
        sent = gpt.requests[0]["body"]["messages"]
        assert sent[0]["role"] == "system"
        prompt = sent[1]["content"]
        assert f"INC-{incident['id']}: Database connection pool exhausted" in prompt
        assert f"Squad: {squad}" in prompt and "api, checkout" in prompt
        assert "status status: open -> investigating" in prompt
        assert prompt.index("created status") < prompt.index("open -> investigating")

        calls = await admin.get(f"{BASE}/calls", params={"request_id": summary["request_id"]})
        [call] = calls.json()["items"]
        assert call["purpose"] == "incident_summary" and call["outcome"] == "success"
        assert call["model_id"] == mid
        entries = [
            e
            for e in await audit_items(admin, "ai_model.summarize_incident")
            if e["details"].get("request_id") == summary["request_id"]
        ]
        assert len(entries) == 1
        assert entries[0]["resource_type"] == "incident"
        assert entries[0]["resource_id"] == str(incident["id"])

        # the team's own prompt labelled production replaces the built-in one
        await add_prompt(
            admin,
            team,
            name="incident-timeline-summary",
            template="Summarize {{key}} ({{status}}):\n{{timeline}}",
        )
        r = await admin.post(url)
        assert r.status_code == 200, r.text
        assert r.json()["prompt_version"] == 2
        [only] = gpt.requests[1]["body"]["messages"]
        assert only["content"].startswith(f"Summarize INC-{incident['id']} (investigating):\n")
        assert len(gpt.requests) == 2

    viewer = await make_user("viewer", team_ids=[team])
    async with viewer.client(api) as c:
        assert_error(await c.post(url), 403, "FORBIDDEN")
    async with api.client() as c:
        assert_unauthorized(await c.post(url))
    other = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[other["id"]])
    async with outsider.client(api) as c:
        assert_error(await c.post(url), 404, "NOT_FOUND")
    assert_error(await admin.post(f"{BASE}/summarize/incident/2147483647"), 404, "NOT_FOUND")
    assert_error(await admin.post(f"{BASE}/summarize/incident/0"), 422, "VALIDATION_ERROR")
    assert len(gpt.requests) == 2  # none of the refusals reached the model
