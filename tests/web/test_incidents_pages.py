"""The incident pages in a real browser: the board (live), an incident's lifecycle,
evidence upload with its custody log, a task, the SLA chart; and a viewer's limits."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot


def test_board_incident_lifecycle_evidence_tasks_and_sla(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client, tmp_path: Path
) -> None:
    squad = f"web-{uuid.uuid4().hex[:6]}"
    page = new_page()
    page.goto(f"{live.base}/incidents?squad={squad}")
    form = page.locator("#incident-form")
    form.get_by_label("Title").fill("Checkout latency above SLO")
    form.get_by_label("Squad").fill(squad)
    form.get_by_label("Severity").select_option("high")
    form.get_by_label("Description").fill("p99 of /checkout is 4 s since the last deploy")
    form.get_by_role("button", name="Open incident").click()
    card = page.locator('.board-column[data-status="open"] .incident-card').first
    expect(card).to_contain_text("Checkout latency above SLO")

    # live: an incident opened elsewhere shows up without a reload
    r = admin_api.post(
        "/api/v1/infra/incidents",
        json={
            "title": "Replica lag on db-2",
            "description": "replication lag above 5 minutes",
            "severity": "medium",
            "environment": "staging",
            "squad": squad,
        },
    )
    assert r.status_code == 201, r.text
    expect(page.locator('.board-column[data-status="open"]')).to_contain_text("Replica lag on db-2")
    screenshot(page, "incidents")

    page.get_by_role("link", name="Checkout latency above SLO").click()
    expect(page.locator("#incident-status")).to_have_text("open")
    actions = page.locator("#status-actions")
    expect(actions.get_by_role("button")).to_have_text(
        ["Move to investigating", "Move to mitigated", "Move to resolved"]
    )
    actions.get_by_role("button", name="Move to investigating").click()
    expect(page.locator("#incident-status")).to_have_text("investigating")
    expect(
        page.locator("#status-actions").get_by_role("button", name="Move to closed")
    ).to_have_count(0)
    expect(page.locator("#timeline")).to_contain_text("investigating")

    log = tmp_path / "checkout.log"
    log.write_bytes(b"GET /checkout 4012ms\n" * 2000)
    evidence = page.locator("#evidence-form")
    evidence.get_by_label("Title").fill("Access log excerpt")
    evidence.get_by_label("Type").select_option("log")
    evidence.get_by_label("File (images").set_input_files(str(log))
    evidence.get_by_role("button", name="Add evidence").click()
    row = page.locator("#evidence tbody tr").first
    expect(row).to_contain_text("Access log excerpt")
    expect(row.locator("code")).to_have_attribute(
        "title", hashlib.sha256(log.read_bytes()).hexdigest()
    )
    row.locator("summary", has_text="Custody").click()
    expect(row.locator(".custody-log")).to_contain_text("admin uploaded")

    task_form = page.locator("#task-form")
    task_form.get_by_label("Task").fill("Roll back the deploy")
    task_form.get_by_label("Estimated hours").fill("2")
    task_form.get_by_role("button", name="Add task").click()
    expect(page.locator("#incident-tasks")).to_contain_text("Roll back the deploy")
    page.locator("#incident-tasks select").first.select_option("done")
    expect(page.locator("#toasts")).to_contain_text("is done")
    screenshot(page, "incident")

    page.goto(f"{live.base}/sla?squad={squad}")
    expect(page.locator("#sla-chart")).to_be_visible()
    first_week = page.locator("#sla-weeks tbody tr").first
    expect(first_week).to_contain_text("2.0")  # requested this week: the task's 2 h
    expect(page.locator("#sla-weeks")).to_contain_text("(forecast)")


def test_a_viewer_reads_incidents_but_changes_nothing(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    incident = admin_api.post(
        "/api/v1/infra/incidents",
        json={
            "title": "Disk 91% full on backup host",
            "description": "the local storage volume is filling up",
            "severity": "low",
            "environment": "production",
            "squad": "storage",
        },
    ).json()
    name = f"viewer{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=name, password=password)
    page.goto(f"{live.base}/incidents")
    expect(page.get_by_role("link", name="Disk 91% full on backup host")).to_be_visible()
    expect(page.locator("#incident-form")).to_have_count(0)
    page.goto(f"{live.base}/incidents/{incident['id']}")
    expect(page.locator("#incident-key")).to_have_text(incident["jira_id"])
    expect(page.locator("#status-actions")).to_have_count(0)
    expect(page.locator("#evidence-form")).to_have_count(0)
    expect(page.locator("#task-form")).to_have_count(0)
    status = page.evaluate(
        """async (id) => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch(`/api/v1/infra/incidents/${id}`, {
                method: "PATCH",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({status: "resolved"}),
            });
            return [r.status, (await r.json()).code];
        }""",
        incident["id"],
    )
    assert status == [403, "FORBIDDEN"]
    assert admin_api.get(f"/api/v1/infra/incidents/{incident['id']}").json()["status"] == "open"
