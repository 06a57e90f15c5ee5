"""Resource pages in a real browser: collect, add a rule, see it fire live, acknowledge
it with a note, graphs and capacity; and a viewer who sees but cannot acknowledge."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory


def collect(client: httpx.Client) -> None:
    """One collection round through the API's job, waited for."""
    for _ in range(100):
        r = client.post("/api/v1/resources/collect")
        if r.status_code == 202:
            break
        assert r.status_code == 409, r.text  # another round is running
        time.sleep(0.2)
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            assert job["status"] == "succeeded", job
            return
        time.sleep(0.2)
    raise AssertionError("collection did not finish")


def test_collect_rule_fires_live_and_is_acknowledged(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    collect(admin_api)
    page = new_page()
    page.goto(f"{live.base}/resources")
    host = page.locator('[data-source="host"]')
    expect(host).to_contain_text("this host")
    expect(host.locator('meter[data-meter="memory_used_percent"]')).to_have_count(1)

    page.goto(f"{live.base}/resources/graphs?window=1h")
    canvas = page.locator('canvas[data-graph="memory_used_percent"]')
    expect(canvas).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"))

    name = f"memory-{uuid.uuid4().hex[:6]}"
    page.goto(f"{live.base}/resources/alerts")
    form = page.locator("#rule-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Metric").select_option("memory_total_bytes")
    form.get_by_label("Operator").select_option(">")
    form.get_by_label("Threshold").fill("0")
    form.get_by_label("For (seconds").fill("0")
    form.get_by_label("Severity").select_option("critical")
    form.get_by_role("button", name="Add rule").click()
    expect(page.locator(f'tr[data-rule="{name}"]')).to_contain_text("memory_total_bytes > 0.0")

    page.wait_for_function("document.readyState === 'complete'")
    collect(admin_api)  # the page hears the alert fire and shows it without a click
    row = page.locator("#resource-alerts tr[data-alert]", has_text="memory_total_bytes").first
    expect(row).to_contain_text("firing")
    row.get_by_placeholder("Note").fill("adding RAM tonight")
    row.get_by_role("button", name="Acknowledge").click()
    acknowledged = page.locator("#resource-alerts tr[data-alert]", has_text="adding RAM tonight")
    expect(acknowledged).to_contain_text("acknowledged")
    expect(acknowledged).to_contain_text("admin")
    expect(acknowledged.get_by_role("button", name="Unacknowledge")).to_be_visible()

    page.goto(f"{live.base}/resources/capacity")
    expect(page.get_by_role("heading", name="Capacity forecast")).to_be_visible()


def test_a_viewer_sees_alerts_but_cannot_acknowledge(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    r = admin_api.post(
        "/api/v1/resources/rules",
        json={
            "name": f"viewer-{uuid.uuid4().hex[:6]}",
            "metric": "memory_total_bytes",
            "operator": ">",
            "threshold": 1,
        },
    )
    assert r.status_code == 201, r.text
    collect(admin_api)
    alerts = admin_api.get("/api/v1/resources/alerts", params={"status": "firing"}).json()
    alert_id = next(a["id"] for a in alerts["items"] if a["rule_id"] == r.json()["id"])

    name = f"viewer{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=name, password=password)
    page.goto(f"{live.base}/resources/alerts")
    expect(page.locator(f'tr[data-alert="{alert_id}"]')).to_contain_text("firing")
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(page.locator("#rule-form")).to_have_count(0)
    page.goto(f"{live.base}/resources")
    expect(page.locator("#collect-now")).to_have_count(0)

    status = page.evaluate(
        """async (id) => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch(`/api/v1/resources/alerts/${id}/acknowledge`, {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({note: "mine now"}),
            });
            return [r.status, (await r.json()).code];
        }""",
        alert_id,
    )
    assert status == [403, "FORBIDDEN"]
