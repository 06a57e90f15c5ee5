"""The compliance pages in a real browser: evidence added from the overview turns a
requirement `met` on its framework's page, a report generated for the shown period is
listed with its downloads; and a viewer's limits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot


def team_user(admin_api: httpx.Client, role: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    team = admin_api.post("/api/v1/users/teams", json={"name": f"cmp-{suffix}"}).json()
    user = {"username": f"{role[:3]}{suffix}", "password": f"pw-{uuid.uuid4().hex}"}
    r = admin_api.post(
        "/api/v1/users",
        json={
            **user,
            "email": f"{user['username']}@example.com",
            "role": role,
            "team_ids": [team["id"]],
        },
    )
    assert r.status_code == 201, r.text
    return user


def test_evidence_turns_a_requirement_met_and_a_report_is_kept(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    operator = team_user(admin_api, "operator")
    page = new_page(username=operator["username"], password=operator["password"])
    page.goto(f"{live.base}/compliance")
    expect(page.locator("#compliance-frameworks tbody tr")).to_have_count(3)

    today = datetime.now(UTC).date()
    page.locator("summary", has_text="Add evidence").click()
    form = page.locator("#evidence-form")
    form.get_by_label("Title").fill("Information security policy v4")
    form.get_by_label("Controls").select_option(["security-policy"])
    form.get_by_label("Effective from").fill((today - timedelta(days=365)).isoformat())
    form.get_by_label("Effective to").fill((today + timedelta(days=365)).isoformat())
    form.get_by_label("Link").fill("https://docs.example.com/isp-v4.pdf")
    form.get_by_role("button", name="Add").click()
    expect(page.locator("#compliance-evidence")).to_contain_text("Information security policy v4")

    page.locator("#compliance-frameworks a", has_text="ISO/IEC 27001:2022").click()
    row = page.locator('#compliance-requirements tr[data-requirement="A.5.1"]')
    expect(row.locator("td").nth(1)).to_have_text("met")
    row.locator("summary", has_text="information security policy").click()
    expect(row).to_contain_text("Information security policy v4")
    backup = page.locator('#compliance-requirements tr[data-requirement="A.8.13"]')
    expect(backup.locator("td").nth(1)).not_to_have_text("not assessed")

    page.get_by_role("button", name="Generate report for this period").click()
    report = page.locator("#compliance-reports tbody tr").first
    expect(report).to_contain_text("iso27001")
    expect(report).to_contain_text(operator["username"])
    expect(report.get_by_role("link", name="CSV")).to_be_visible()
    page.goto(f"{live.base}/compliance")
    expect(page.locator("#compliance-reports")).to_contain_text("iso27001")
    screenshot(page, "compliance")


def test_a_viewer_reads_compliance_but_generates_and_uploads_nothing(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    viewer = team_user(admin_api, "viewer")
    page = new_page(username=viewer["username"], password=viewer["password"])
    page.goto(f"{live.base}/compliance")
    expect(page.locator("#compliance-frameworks tbody tr")).to_have_count(3)
    expect(page.locator("#evidence-form")).to_have_count(0)
    expect(page.locator("[data-delete-evidence]")).to_have_count(0)
    page.goto(f"{live.base}/compliance/soc2")
    expect(page.locator("#compliance-requirements tbody tr")).to_have_count(36)
    expect(page.locator("#report-form")).to_have_count(0)
    status = page.evaluate(
        """async () => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch("/api/v1/audit/reports/generate", {
                method: "POST",
                headers: {"X-CSRF-Token": csrf, "Content-Type": "application/json"},
                body: JSON.stringify({
                    framework: "soc2",
                    period_start: "2026-01-01T00:00:00Z",
                    period_end: "2026-02-01T00:00:00Z",
                }),
            });
            return [r.status, (await r.json()).code];
        }"""
    )
    assert status == [403, "FORBIDDEN"]
