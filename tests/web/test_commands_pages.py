"""Commands and runbooks in a real browser: write a command, run it on this host with a
target preview and see its output; start a runbook and tick its manual step. And what a
viewer sees: the records, no way to run or change anything."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot

pytestmark = pytest.mark.postgres


def test_write_run_a_command_and_a_runbook(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    name = f"greet-{uuid.uuid4().hex[:6]}"
    page = new_page()
    page.goto(f"{live.base}/commands")
    form = page.locator("#command-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Template").fill("echo hello {{who}}; echo done; echo careful >&2")
    form.get_by_label("Tags").fill("demo,greeting")
    form.get_by_role("button", name="Create command").click()
    row = page.locator(f"tr[data-command='{name}']")
    expect(row).to_contain_text("echo hello {{who}}")
    expect(row).to_contain_text("greeting")

    run = page.locator(f"[data-run-command='{name}']")
    run.locator("summary").click()
    run.get_by_label("Servers").select_option(label="this host (local, development)")
    run.get_by_label("who").fill("world; id")  # refused: one plain word only
    run.get_by_role("button", name="Run").click()
    expect(run.locator(".error")).to_contain_text("who: only letters")
    expect(run.locator(".target-preview")).to_contain_text("1 server(s): this host")
    run.get_by_label("who").fill("world")
    run.get_by_role("button", name="Run").click()
    page.wait_for_url("**/commands/executions/*")
    expect(page.locator("#execution-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("pre.output").first).to_have_text("hello world\ndone\n")
    expect(page.locator("pre.stderr").first).to_have_text("careful\n")
    screenshot(page, "command_execution")

    command_id = admin_api.get("/api/v1/commands", params={"q": name}).json()["items"][0]["id"]
    r = admin_api.post(
        "/api/v1/sops",
        json={
            "name": f"sop-{name}",
            "steps": [
                {"name": "Tell the team", "type": "manual"},
                {
                    "name": "Greet",
                    "type": "command",
                    "command_id": command_id,
                    "variables": {"who": "team"},
                    "server_ids": [
                        s["id"]
                        for s in admin_api.get("/api/v1/servers").json()["items"]
                        if s["name"] == "this host"
                    ],
                },
            ],
        },
    )
    assert r.status_code == 201, r.text
    page.goto(f"{live.base}/sops")
    page.locator(f"tr[data-sop='sop-{name}']").get_by_role("button", name="Run").click()
    page.locator("#sop-runs tbody tr").first.get_by_role("link").click()
    step = page.locator("[data-step='0']")
    expect(step).to_contain_text("waiting")
    step.get_by_label("Note").fill("posted in #ops")
    step.get_by_role("button", name="Done").click()
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("[data-step='0']")).to_contain_text("posted in #ops")
    page.locator("[data-step='1']").get_by_role("link", name="output").click()
    expect(page.locator("pre.output").first).to_have_text("hello team\ndone\n")
    page.goto(f"{live.base}/commands")
    screenshot(page, "commands")


def test_a_viewer_reads_but_cannot_run(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    name = f"cmd-{uuid.uuid4().hex[:6]}"
    r = admin_api.post("/api/v1/commands", json={"name": name, "command_template": "uptime"})
    assert r.status_code == 201, r.text
    sop = admin_api.post(
        "/api/v1/sops",
        json={"name": f"sop-{name}", "steps": [{"name": "Check", "type": "manual"}]},
    ).json()
    run = admin_api.post(f"/api/v1/sops/{sop['id']}/execute", json={}).json()
    viewer = f"viewer{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": viewer, "email": f"{viewer}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=viewer, password=password)
    page.goto(f"{live.base}/commands")
    row = page.locator(f"tr[data-command='{name}']")
    expect(row).to_contain_text("uptime")
    expect(page.locator(f"[data-run-command='{name}']")).to_have_count(0)
    expect(row.get_by_role("button", name="Delete")).to_have_count(0)
    expect(page.locator("#command-form")).to_have_count(0)
    page.goto(f"{live.base}/sops/executions/{run['id']}")
    expect(page.locator("[data-step='0']")).to_contain_text("Check")
    expect(page.get_by_role("button", name="Done")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    page.goto(f"{live.base}/sops")
    expect(page.locator(f"tr[data-sop='sop-{name}']").get_by_role("button")).to_have_count(0)
    # The API says no too, whatever the page shows.
    status = page.evaluate(
        """async (id) => (await fetch(`/api/v1/commands/${id}/execute`, {
            method: "POST", headers: {"content-type": "application/json"},
            body: JSON.stringify({server_id: 1})})).status""",
        r.json()["id"],
    )
    assert status == 403
