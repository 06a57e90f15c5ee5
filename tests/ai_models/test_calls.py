"""Calls through the registry against local servers speaking OpenAI chat completions and
Anthropic Messages: fallback on a failure, a timeout and a 429; retries; cooldown; the
budget; metrics that match the calls made; the key in no response, log or error; and the
explanation of a failed backup."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from opscenter.core.events import Event
from tests.ai_models.conftest import BASE, add_model, add_prompt, assert_error, run, set_chain
from tests.ai_models.fakes import FAIL, OK, RATE_LIMITED, SLOW, llm_server
from tests.conftest import Api, UserFactory
from tests.schedules.helpers import make_server

pytestmark = pytest.mark.usefixtures("allow_loopback")


async def test_fallback_on_failure_429_and_timeout(admin: httpx.AsyncClient, team: int) -> None:
    with (
        llm_server("openai", api_key="sk-a", name="A", script=[FAIL]) as a,
        llm_server("anthropic", api_key="ak-b", name="B", script=[RATE_LIMITED]) as b,
        llm_server("openai", name="C", script=[SLOW], slow_seconds=1.5) as c,
        llm_server("anthropic", api_key="ak-d", name="D") as d,
    ):
        ids = [
            (await add_model(admin, team, a))["id"],
            (await add_model(admin, team, b))["id"],
            (await add_model(admin, team, c, parameters={"timeout_seconds": 0.3}))["id"],
            (await add_model(admin, team, d, name="claude-last"))["id"],
        ]
        await set_chain(admin, team, ids)
        await add_prompt(admin, team, system="Be brief, {{who}}.")
        r = await run(admin, team)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["model_name"] == "claude-last" and answer["provider"] == "anthropic"
        assert answer["text"] == "D says: the answer"
        assert [(t["model_id"], t["outcome"]) for t in answer["attempts"]] == [
            (ids[0], "server_error"),
            (ids[1], "rate_limited"),
            (ids[2], "timeout"),
            (ids[3], "success"),
        ]
        assert [len(s.requests) for s in (a, b, c, d)] == [1, 1, 1, 1]
        # each spoke its own protocol: OpenAI with a bearer key, Anthropic with its headers
        assert a.requests[0]["headers"]["Authorization"] == "Bearer sk-a"
        assert a.requests[0]["body"]["messages"][0] == {
            "role": "system",
            "content": "Be brief, ops.",
        }
        sent = d.requests[0]
        assert sent["headers"]["x-api-key"] == "ak-d"
        assert sent["headers"]["anthropic-version"] == "2023-06-01"
        assert sent["body"]["system"] == "Be brief, ops."
        assert sent["body"]["messages"] == [{"role": "user", "content": "Say hello to ops"}]
        assert sent["body"]["model"] == "claude-test" and sent["body"]["max_tokens"] == 1024
        assert answer["tokens_in"] == 7 and answer["tokens_out"] == 4
        assert answer["cost_usd"] == pytest.approx(7 * 0.000001 + 4 * 0.000002)

        # a transient failure is retried on the same model (with backoff) before falling back
        a.script[:] = [RATE_LIMITED, OK]
        await set_chain(admin, team, [ids[0], ids[3]], max_retries=1, backoff_seconds=0.01)
        answer = (await run(admin, team)).json()
        assert answer["model_id"] == ids[0]
        assert [(t["attempt"], t["outcome"]) for t in answer["attempts"]] == [
            (1, "rate_limited"),
            (2, "success"),
        ]
        assert len(a.requests) == 3 and len(d.requests) == 1


async def test_cooldown_is_honoured(api: Api, admin: httpx.AsyncClient, team: int) -> None:
    with (
        llm_server("openai", name="A", script=[FAIL]) as a,
        llm_server("openai", name="B") as b,
    ):
        first = (await add_model(admin, team, a))["id"]
        second = (await add_model(admin, team, b))["id"]
        await set_chain(admin, team, [first, second], cooldown_seconds=300)
        await add_prompt(admin, team)
        async with api.app.state.ctx.events.subscribe() as queue:
            assert (await run(admin, team)).json()["model_id"] == second
            events = [queue.get_nowait() for _ in range(queue.qsize())]
        cooling = [e for e in events if e.type == "ai_models.model_cooling_down"]
        assert [e.data["model_id"] for e in cooling] == [first]
        assert cooling[0].data["severity"] == "warning" and cooling[0].team_id == team
        model = (await admin.get(f"{BASE}/{first}")).json()
        assert model["cooldown_until"] and "HTTP 500" in model["last_error"]
        # while it cools down, the first model is not even asked
        answer = (await run(admin, team)).json()
        assert answer["model_id"] == second and len(answer["attempts"]) == 1
        assert len(a.requests) == 1 and len(b.requests) == 2
        # a chain of only cooling models says so, and when they can be used again
        await set_chain(admin, team, [first], cooldown_seconds=300)
        body = assert_error(await run(admin, team), 503, "AI_MODELS_UNAVAILABLE")
        assert "cools down until" in body["detail"]
        # enabling it again is the operator's word that it works: the cooldown ends
        r = await admin.put(f"{BASE}/{first}", json={"is_enabled": True})
        assert r.json()["cooldown_until"] is None
        assert (await run(admin, team)).json()["model_id"] == first
        # when every model fails, the request is a 503 and every attempt is on record
        a.script[:] = [FAIL]
        body = assert_error(await run(admin, team), 503, "AI_ALL_MODELS_FAILED")
        request_id = body["detail"].rsplit("request_id=", 1)[1]
        calls = (await admin.get(f"{BASE}/calls", params={"request_id": request_id})).json()
        assert [(c["model_id"], c["outcome"], c["final"]) for c in calls["items"]] == [
            (first, "server_error", True)
        ]


async def test_budget_stops_calls(api: Api, admin: httpx.AsyncClient, team: int) -> None:
    with llm_server("openai", name="A") as a:
        mid = (await add_model(admin, team, a, price_per_input_token=0.01))["id"]
        config = await set_chain(admin, team, [mid], budget_usd=0.05, budget_period="day")
        assert config["spent_usd"] == 0 and config["remaining_usd"] == 0.05
        await add_prompt(admin, team)
        async with api.app.state.ctx.events.subscribe() as queue:
            first = await run(admin, team)
            assert first.status_code == 200, first.text
            events: list[Event] = [queue.get_nowait() for _ in range(queue.qsize())]
        cost = first.json()["cost_usd"]
        assert cost == pytest.approx(4 * 0.01 + 4 * 0.000002)  # 4 words in, 4 out
        assert not [e for e in events if e.type == "ai_models.budget_exhausted"]
        async with api.app.state.ctx.events.subscribe() as queue:
            second = await run(admin, team)  # 0.04 spent of 0.05: still allowed
            events = [queue.get_nowait() for _ in range(queue.qsize())]
        assert second.status_code == 200
        # the call that spends the budget is news for the alert policies
        [exhausted] = [e for e in events if e.type == "ai_models.budget_exhausted"]
        assert exhausted.data["severity"] == "warning" and exhausted.team_id == team
        body = assert_error(await run(admin, team), 429, "AI_BUDGET_EXCEEDED")
        assert "budget_usd" in body["detail"]
        assert int((await run(admin, team)).headers["Retry-After"]) > 0
        assert len(a.requests) == 2  # no call was made once the budget was spent
        config = (await admin.get(f"{BASE}/fallback-config", params={"team_id": team})).json()
        assert config["spent_usd"] == pytest.approx(2 * cost) and config["remaining_usd"] == 0
        # raising the budget lets calls through again
        await set_chain(admin, team, [mid], budget_usd=1, budget_period="day")
        assert (await run(admin, team)).status_code == 200


async def test_metrics_match_the_calls_made(admin: httpx.AsyncClient, team: int) -> None:
    with (
        llm_server("openai", name="A", script=[FAIL]) as a,
        llm_server("anthropic", name="B") as b,
    ):
        first = (await add_model(admin, team, a))["id"]
        second = (await add_model(admin, team, b))["id"]
        await set_chain(admin, team, [first, second])
        await add_prompt(admin, team)
        answers = [(await run(admin, team)).json() for _ in range(3)]
    assert [x["model_id"] for x in answers] == [second, first, first]
    by_a = answers[1:]
    metrics = (await admin.get(f"{BASE}/{first}/metrics")).json()
    assert metrics["calls"] == 3 and metrics["successes"] == 2 and metrics["failures"] == 1
    assert metrics["by_outcome"] == {"success": 2, "server_error": 1}
    assert metrics["answered"] == 2 and metrics["success_rate"] == round(2 / 3, 4)
    assert metrics["tokens_in"] == sum(x["tokens_in"] for x in by_a)
    assert metrics["tokens_out"] == sum(x["tokens_out"] for x in by_a)
    assert metrics["cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in by_a))
    latencies = [t["latency_ms"] for x in answers for t in x["attempts"] if t["model_id"] == first]
    assert metrics["latency_ms_max"] == pytest.approx(max(latencies))
    assert metrics["latency_ms_avg"] == pytest.approx(sum(latencies) / 3, abs=0.01)
    assert sum(b["calls"] for b in metrics["series"]) == 3 and len(metrics["series"]) == 25
    assert sum(b["failures"] for b in metrics["series"]) == 1
    other = (await admin.get(f"{BASE}/{second}/metrics", params={"hours": 720})).json()
    assert other["calls"] == other["answered"] == 1 and len(other["series"]) == 31
    assert other["tokens_in"] == answers[0]["tokens_in"]
    calls = (await admin.get(f"{BASE}/calls", params={"model_id": first})).json()
    assert calls["total"] == 3
    assert_error(
        await admin.get(f"{BASE}/{first}/metrics", params={"hours": 0}), 422, "VALIDATION_ERROR"
    )


async def test_the_api_key_never_leaks(
    api: Api,
    admin: httpx.AsyncClient,
    team: int,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-live-TOPSECRET-0123456789abcdef"
    with llm_server("openai", api_key="sk-right", name="A") as a:
        mid = (await add_model(admin, team, a, api_key=wrong))["id"]
        await set_chain(admin, team, [mid])
        await add_prompt(admin, team)
        async with api.app.state.ctx.events.subscribe() as queue:
            r = await run(admin, team)
            events = [queue.get_nowait() for _ in range(queue.qsize())]
    # the fake echoes the refused key in its answer, as some providers do
    assert wrong in str(a.requests[0]["headers"])
    body = assert_error(r, 503, "AI_ALL_MODELS_FAILED")
    assert "refused the API key" in body["detail"]
    seen = [
        r.text,
        (await admin.get(f"{BASE}/{mid}")).text,
        (await admin.get(f"{BASE}/calls", params={"model_id": mid})).text,
        (await admin.get(f"{BASE}/", params={"limit": 1000})).text,
        (await admin.get("/api/v1/audit/logs", params={"limit": 200})).text,
        caplog.text,
        "".join(capfd.readouterr()),
        repr([e.data for e in events]),
    ]
    for text in seen:
        assert wrong not in text and "TOPSECRET" not in text


async def test_explain_a_failed_backup(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    server = await make_server(admin)
    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "database_name": "no_such_db_ai"}
    )
    assert accepted.status_code == 202, accepted.text
    await api.app.state.ctx.runner.wait(accepted.json()["job_id"], limit_seconds=60)
    backup = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
    assert backup["status"] == "failed"
    team, url = backup["team_id"], f"{BASE}/explain/backup/{backup['id']}"
    body = assert_error(await admin.post(url), 409, "AI_NOT_CONFIGURED")
    assert "fallback-config" in body["detail"]
    with llm_server("anthropic", name="Claude") as claude:
        mid = (await add_model(admin, team, claude, name="explainer"))["id"]
        await set_chain(admin, team, [mid], purpose="backup_explanation")
        r = await admin.post(url)
        assert r.status_code == 200, r.text
        explained: dict[str, Any] = r.json()
        assert explained["model_name"] == "explainer" and explained["model"] == "claude-test"
        assert explained["explanation"] == "Claude says: the answer"
        assert explained["prompt_version"] is None  # the built-in prompt
        sent = claude.requests[0]["body"]
        assert "no_such_db_ai" in sent["messages"][0]["content"]
        assert backup["error_code"] in sent["messages"][0]["content"]
        # the team's own prompt (label production) replaces the built-in one
        await add_prompt(
            admin,
            team,
            name="backup-error-explanation",
            template="Why did {{database}} fail with {{error_code}}?",
        )
        r = await admin.post(url)
        assert r.json()["prompt_version"] == 1
        assert claude.requests[1]["body"]["messages"][0]["content"] == (
            f"Why did no_such_db_ai fail with {backup['error_code']}?"
        )
    viewer = await make_user("viewer", team_ids=[team])
    async with viewer.client(api) as c:
        assert_error(await c.post(url), 403, "FORBIDDEN")
    other = (await admin.post("/api/v1/users/teams", json={"name": f"t-{mid}-x"})).json()
    outsider = await make_user("operator", team_ids=[other["id"]])
    async with outsider.client(api) as c:
        assert_error(await c.post(url), 404, "NOT_FOUND")
    assert_error(await admin.post(f"{BASE}/explain/backup/2147483647"), 404, "NOT_FOUND")
