"""Models and prompts through the API: keys sealed and never returned, bad input, roles,
team scoping, the outbound address policy, prompt versions with movable labels."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from opscenter.models import AiModel
from tests.ai_models.conftest import BASE, add_model, add_prompt, assert_error, uid
from tests.ai_models.fakes import llm_server
from tests.conftest import Api, UserFactory

KEY = "sk-test-SECRET-4242424242"


async def test_models_keys_roles_and_teams(
    api: Api, admin: httpx.AsyncClient, team: int, make_user: UserFactory, allow_loopback: None
) -> None:
    with llm_server("openai", api_key=KEY) as server:
        model = await add_model(admin, team, server, name="primary")
    assert model["has_api_key"] is True and model["endpoint"] == server.base
    assert model["parameters"] == {"max_tokens": 1024, "timeout_seconds": 5}
    mid = model["id"]
    listed = await admin.get(f"{BASE}/", params={"limit": 1000})
    assert mid in [m["id"] for m in listed.json()["items"]]
    assert (await admin.get(BASE)).status_code == 200  # without the slash too
    new_key = "sk-test-SECRET-other-777777"
    r = await admin.put(
        f"{BASE}/{mid}",
        json={"name": "primary-2", "api_key": new_key, "price_per_input_token": 0.5},
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "primary-2" and r.json()["price_per_input_token"] == 0.5
    assert r.json()["endpoint"] == server.base  # left out: kept
    for text in (listed.text, r.text, (await admin.get(f"{BASE}/{mid}")).text):
        assert KEY not in text and new_key not in text
    async with api.app.state.ctx.db.read_session() as session:
        sealed = await session.scalar(select(AiModel.api_key_encrypted).where(AiModel.id == mid))
    assert sealed and new_key not in sealed
    assert api.app.state.ctx.keyring.decrypt_secret(sealed, context=f"ai_models.api_key:{mid}") == (
        new_key
    )

    # bad input: the right code, nothing written
    before = (await admin.get(f"{BASE}/", params={"limit": 1})).json()["total"]
    good = {"name": uid(), "provider": "openai", "model": "m", "team_id": team}
    for bad in (
        {**good, "provider": "nope"},
        {**good, "endpoint": "ftp://example.com/v1"},
        {**good, "endpoint": "https://user:pw@example.com/v1"},
        {**good, "role": "admin"},
        {**good, "price_per_input_token": -1},
        {**good, "parameters": {"temperature": 9}},
        {**good, "name": ""},
    ):
        assert_error(await admin.post(f"{BASE}/", json=bad), 422, "VALIDATION_ERROR")
    assert_error(
        await admin.post(f"{BASE}/", json={**good, "provider": "local"}), 422, "ENDPOINT_REQUIRED"
    )
    assert_error(await admin.post(f"{BASE}/", json={**good, "name": "PRIMARY-2"}), 409, "CONFLICT")
    assert_error(await admin.put(f"{BASE}/{mid}", json={"model": ""}), 422, "VALIDATION_ERROR")
    assert_error(await admin.put(f"{BASE}/2147483647", json={"model": "x"}), 404, "NOT_FOUND")
    assert (await admin.get(f"{BASE}/", params={"limit": 1})).json()["total"] == before

    viewer = await make_user("viewer", team_ids=[team])
    async with viewer.client(api) as c:
        assert (await c.get(f"{BASE}/{mid}")).status_code == 200
        assert (await c.get(f"{BASE}/{mid}/metrics")).status_code == 200
        assert_error(await c.post(f"{BASE}/", json=good), 403, "FORBIDDEN")
        assert_error(await c.put(f"{BASE}/{mid}", json={"model": "x"}), 403, "FORBIDDEN")
        assert_error(await c.delete(f"{BASE}/{mid}"), 403, "FORBIDDEN")
        assert_error(await c.put(f"{BASE}/fallback-config", json={"chains": []}), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        assert_error(await anonymous.get(f"{BASE}/"), 401, "UNAUTHORIZED")
        assert_error(await anonymous.post(f"{BASE}/", json=good), 401, "UNAUTHORIZED")

    other = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[other["id"]])
    async with outsider.client(api) as c:
        assert_error(await c.get(f"{BASE}/{mid}"), 404, "NOT_FOUND")
        assert_error(await c.put(f"{BASE}/{mid}", json={"model": "x"}), 404, "NOT_FOUND")
        assert_error(await c.get(f"{BASE}/{mid}/metrics"), 404, "NOT_FOUND")
        assert_error(await c.delete(f"{BASE}/{mid}"), 404, "NOT_FOUND")
        assert_error(
            await c.get(f"{BASE}/fallback-config", params={"team_id": team}), 404, "NOT_FOUND"
        )
        mine = await c.get(f"{BASE}/", params={"limit": 1000})
        assert mid not in [m["id"] for m in mine.json()["items"]]
        chain = {"purpose": "default", "model_ids": [mid]}
        assert_error(
            await c.put(f"{BASE}/fallback-config", json={"chains": [chain]}), 422, "UNKNOWN_MODEL"
        )

    r = await admin.delete(f"{BASE}/{mid}")
    assert r.status_code == 204
    assert_error(await admin.get(f"{BASE}/{mid}"), 404, "NOT_FOUND")


async def test_endpoints_pass_the_outbound_policy(admin: httpx.AsyncClient, team: int) -> None:
    body = {"name": uid(), "provider": "local", "model": "llama", "team_id": team}
    for endpoint in ("http://127.0.0.1:11434/v1", "http://localhost:8080/v1", "http://10.1.2.3/v1"):
        r = await admin.post(f"{BASE}/", json={**body, "endpoint": endpoint})
        assert_error(r, 422, "OUTBOUND_BLOCKED")
        assert "OPSCENTER_OUTBOUND_ALLOWLIST" in r.json()["detail"]


async def test_prompt_versions_labels_and_rendering(admin: httpx.AsyncClient, team: int) -> None:
    v1 = await add_prompt(admin, team, system="You help {{team_name}}.")
    assert v1["version"] == 1 and v1["variables"] == ["team_name", "who"]
    v2 = await add_prompt(admin, team, template="Hi {{ who }}!", labels=["staging"])
    v3 = await add_prompt(admin, team, template="Hello, {{who}}", labels=["production"])
    assert (v2["version"], v3["version"]) == (2, 3)
    listed = (await admin.get(f"{BASE}/prompts", params={"name": "greet", "team_id": team})).json()
    mine = [p for p in listed["items"] if p["team_id"] == team]
    assert [(p["version"], p["labels"]) for p in mine] == [
        (3, ["production"]),
        (2, ["staging"]),
        (1, []),  # production moved to v3
    ]

    async def render(**fields: object) -> httpx.Response:
        return await admin.post(
            f"{BASE}/prompts/render", json={"name": "greet", "team_id": team, **fields}
        )

    r = await render(variables={"who": "Ada"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3
    assert r.json()["messages"] == [{"role": "user", "content": "Hello, Ada"}]
    r = await render(label="staging", variables={"who": "Ada"})
    assert r.json()["messages"][0]["content"] == "Hi Ada!"
    r = await render(version=1, variables={"who": "Ada", "team_name": "DBA"})
    assert r.json()["messages"] == [
        {"role": "system", "content": "You help DBA."},
        {"role": "user", "content": "Say hello to Ada"},
    ]
    # a missing variable is a clear error naming it
    body = assert_error(
        await render(version=1, variables={"who": "Ada"}), 422, "PROMPT_VARIABLE_MISSING"
    )
    assert "team_name" in body["detail"] and "variables" in body["detail"]

    # labels move back
    r = await admin.put(f"{BASE}/prompts/{v1['id']}/labels", json={"labels": ["production"]})
    assert r.status_code == 200 and r.json()["labels"] == ["production"]
    r = await render(variables={"who": "Ada", "team_name": "x"})
    assert r.json()["version"] == 1

    assert_error(await render(label="canary"), 404, "NOT_FOUND")
    assert_error(
        await admin.post(
            f"{BASE}/prompts",
            json={"name": "greet", "template": "{{ not-a-var }}", "team_id": team},
        ),
        422,
        "PROMPT_TEMPLATE_INVALID",
    )
    for bad in (
        {"name": "Has Spaces", "template": "x"},
        {"name": "ok", "template": ""},
        {"name": "ok", "template": "x", "labels": ["UPPER"]},
        {"name": "ok", "template": "x", "version": 4},
    ):
        assert_error(
            await admin.post(f"{BASE}/prompts", json={**bad, "team_id": team}),
            422,
            "VALIDATION_ERROR",
        )
    assert_error(
        await admin.put(f"{BASE}/prompts/2147483647/labels", json={"labels": []}), 404, "NOT_FOUND"
    )
    versions = (await admin.get(f"{BASE}/prompts", params={"name": "greet"})).json()["items"]
    assert len([p for p in versions if p["team_id"] == team]) == 3  # nothing half written
