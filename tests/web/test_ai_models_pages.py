"""The AI models page in a real browser: a model, a chain with a budget, a prompt version
and a call through the registry against a loopback server speaking OpenAI's protocol, the
calls table live, a failed backup explained and an incident's timeline summarized, each
with the model named; and a viewer's limits."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.ai_models.fakes import llm_server
from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot, wait_backup

pytestmark = pytest.mark.postgres
KEY = "sk-web-SECRET-9f8e7d6c5b4a"


def test_register_chain_prompt_run_and_explain(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client, pg_server: dict[str, Any]
) -> None:
    with llm_server("openai", api_key=KEY, name="web") as fake:
        page = new_page()
        page.goto(f"{live.base}/ai-models")
        form = page.locator("#model-form")
        form.get_by_label("Name").fill("web-gpt")
        form.get_by_label("Provider").select_option("openai")
        form.get_by_label("Model").fill("gpt-test")
        form.get_by_label("Endpoint").fill(fake.base)
        form.get_by_label("API key").fill(KEY)
        form.get_by_label("USD per input token").fill("0.000001")
        form.get_by_role("button", name="Add the model").click()
        row = page.locator('#ai-models tr[data-model="web-gpt"]')
        expect(row).to_contain_text("key set")
        assert KEY not in page.content()

        chains = page.locator("#chain-form")
        chains.locator(".chain-row").first.locator(".chain-purpose").fill("default")
        chains.locator(".chain-row").first.get_by_label("model 1").select_option(label="web-gpt")
        chains.get_by_label("Budget").fill("1")
        chains.get_by_role("button", name="Save chains and budget").click()
        expect(page.locator("#ai-budget")).to_contain_text("of 1 USD spent this month")

        page.get_by_text("New prompt version").click()
        prompt = page.locator("#prompt-form")
        prompt.get_by_label("Name").fill("greet-web")
        prompt.get_by_label("Labels").fill("production")
        prompt.get_by_label("Template").fill("Say hello to {{who}}")
        prompt.get_by_role("button", name="Save as a new version").click()
        expect(page.locator('#prompts tr[data-prompt="greet-web"] .prompt-labels')).to_have_text(
            "production"
        )

        run = page.locator("#run-form")
        run.get_by_label("Prompt").fill("greet-web")
        run.get_by_role("button", name="Run").click()
        expect(run.locator(".error")).to_contain_text("who")
        expect(run.locator(".error")).to_contain_text("PROMPT_VARIABLE_MISSING")
        run.get_by_label("Variables").fill("who=web")
        run.get_by_role("button", name="Run").click()
        expect(page.locator("#run-result")).to_contain_text("Answered by web-gpt")
        expect(page.locator("#run-result")).to_contain_text("web says: the answer")
        # the calls table and the model's numbers follow live, without a reload
        expect(page.locator("#ai-calls tr[data-call]")).to_have_count(1)
        expect(page.locator("[data-model-metrics]", has_text="1 calls")).to_have_count(1)
        expect(page.locator("canvas[data-ai-chart]")).to_have_count(1)
        assert fake.requests[-1]["body"]["messages"] == [
            {"role": "user", "content": "Say hello to web"}
        ]
        screenshot(page, "ai_models")

        # the one real use: a failed backup's error explained, with the model named
        r = admin_api.post(
            "/api/v1/backups",
            json={"server_id": pg_server["id"], "database_name": "no_such_db_web_ai"},
        )
        assert r.status_code == 202, r.text
        backup = wait_backup(admin_api, r.json()["id"])
        assert backup["status"] == "failed"
        page.goto(f"{live.base}/backups")
        backup_row = page.locator(f'tr[data-backup="{backup["id"]}"]')
        backup_row.get_by_role("button", name="Explain with AI").click()
        expect(backup_row.locator(".ai-answer")).to_contain_text("Explained by web-gpt")
        assert "no_such_db_web_ai" in fake.requests[-1]["body"]["messages"][-1]["content"]

        # and an incident's timeline summarized, with the model named
        models = admin_api.get("/api/v1/ai-models/", params={"limit": 500}).json()["items"]
        team = next(m["team_id"] for m in models if m["name"] == "web-gpt")
        r = admin_api.post(
            "/api/v1/infra/incidents",
            json={
                "title": "Replica lag on the web tier",
                "description": "Reads are minutes behind",
                "severity": "high",
                "environment": "production",
                "squad": "web-ai",
                "team_id": team,
            },
        )
        assert r.status_code == 201, r.text
        incident = r.json()
        page.goto(f"{live.base}/incidents/{incident['id']}")
        page.get_by_role("button", name="Summarize with AI").click()
        expect(page.locator("#ai-summary .ai-answer")).to_contain_text("Summarized by web-gpt")
        expect(page.locator("#ai-summary .ai-text")).to_have_text("web says: the answer")
        assert "Replica lag on the web tier" in fake.requests[-1]["body"]["messages"][-1]["content"]


def test_a_viewer_reads_but_cannot_change_or_call(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    r = admin_api.post(
        "/api/v1/ai-models/",
        json={
            "name": f"viewer-sees-{uuid.uuid4().hex[:6]}",
            "provider": "local",
            "model": "llama3.1",
            "endpoint": "http://127.0.0.1:9/v1",
        },
    )
    assert r.status_code == 201, r.text
    name = f"viewer{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=name, password=password)
    page.get_by_role("link", name="AI models").click()
    expect(page.locator("h1")).to_have_text("AI models")
    expect(page.locator('#ai-models tr[data-model^="viewer-sees-"]').first).to_be_visible()
    for hidden in ("#model-form", "#chain-form", "#prompt-form", "#run-form", ".edit-model"):
        expect(page.locator(hidden)).to_have_count(0)
    status = page.evaluate(
        """async () => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch("/api/v1/ai-models/fallback-config", {
                method: "PUT",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({chains: []}),
            });
            return [r.status, (await r.json()).code];
        }"""
    )
    assert status == [403, "FORBIDDEN"]
    # an incident's page offers the viewer no AI summary (it is a call, paid for)
    r = admin_api.post(
        "/api/v1/infra/incidents",
        json={
            "title": "Seen by a viewer",
            "description": "Read only, by a viewer",
            "severity": "low",
            "environment": "staging",
            "squad": "viewers",
        },
    )
    assert r.status_code == 201, r.text
    page.goto(f"{live.base}/incidents/{r.json()['id']}")
    expect(page.locator("#timeline")).to_be_visible()
    expect(page.get_by_role("button", name="Summarize with AI")).to_have_count(0)
