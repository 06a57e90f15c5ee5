"""The security pages in a real browser: a report imported from a file, filtered, a risk
accepted by one person and approved by another, the assets and the trend chart; and a
viewer's limits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.security.helpers import Vuln, trivy
from tests.web.conftest import PageFactory, screenshot

REPORT = [
    Vuln(
        "CVE-2024-45491",
        "libexpat1",
        "2.5.0-1",
        "CRITICAL",
        "2.5.0-1+deb12u1",
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
    ),
    Vuln("CVE-2023-50495", "ncurses-base", "6.4-4", "LOW"),
]


def team_with_asset(admin_api: httpx.Client, role: str) -> tuple[dict[str, str], str]:
    """A team, an asset of it, and a user of `role` in it (name and password)."""
    suffix = uuid.uuid4().hex[:6]
    team = admin_api.post("/api/v1/users/teams", json={"name": f"sec-{suffix}"}).json()
    asset = admin_api.post(
        "/api/v1/secops/assets",
        json={"name": f"shop-{suffix}", "kind": "service", "team_id": team["id"]},
    )
    assert asset.status_code == 201, asset.text
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
    return user, asset.json()["name"]


def test_import_filter_accept_approve_assets_and_trend(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client, tmp_path: Path
) -> None:
    approver, asset_name = team_with_asset(admin_api, "operator")
    report = tmp_path / "trivy.json"
    report.write_bytes(trivy(REPORT))

    page = new_page()
    page.goto(f"{live.base}/security")
    form = page.locator("#security-import")
    form.get_by_label("Asset").select_option(label=asset_name)
    form.get_by_label("Report").set_input_files(str(report))
    form.get_by_role("button", name="Import").click()
    row = page.locator("#findings tr", has_text="CVE-2024-45491")
    expect(row).to_contain_text("critical")
    expect(row).to_contain_text("9.8")
    expect(row.locator(".sla")).to_have_text("within")

    page.get_by_label("Severity").select_option("low")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**severity=low**")
    expect(page.locator("#findings")).not_to_contain_text("CVE-2024-45491")
    expect(page.locator("#findings")).to_contain_text("CVE-2023-50495")

    page.goto(f"{live.base}/security?severity=critical")
    row = page.locator("#findings tr", has_text="CVE-2024-45491").first
    row.locator("summary", has_text="Accept risk").click()
    row.get_by_label("Reason").fill("compensating WAF rule until the base image update")
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    row.get_by_label("Until").fill(until)
    row.get_by_role("button", name="Ask for approval").click()
    row = page.locator("#findings tr", has_text="CVE-2024-45491").first
    expect(row).to_contain_text("waiting for another approver")
    screenshot(page, "security")

    other = new_page(username=approver["username"], password=approver["password"])
    other.goto(f"{live.base}/security?severity=critical")
    theirs = other.locator("#findings tr", has_text="CVE-2024-45491").first
    theirs.get_by_role("button", name=f"Approve acceptance until {until}").click()
    theirs = other.locator("#findings tr", has_text="CVE-2024-45491").first
    expect(theirs.locator(".status")).to_have_text("risk_accepted")
    expect(theirs.locator(".sla")).to_have_text("paused")

    other.goto(f"{live.base}/security/assets")
    expect(other.locator("#assets")).to_contain_text(asset_name)
    other.goto(f"{live.base}/security/metrics")
    expect(other.locator("#security-trend")).to_be_visible()
    expect(other.locator("#security-figures")).to_contain_text("Risk accepted")
    screenshot(other, "security_metrics")


def test_a_viewer_reads_findings_but_changes_nothing(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    viewer, asset_name = team_with_asset(admin_api, "viewer")
    [asset] = [
        a
        for a in admin_api.get("/api/v1/secops/assets", params={"limit": 500}).json()["items"]
        if a["name"] == asset_name
    ]
    r = admin_api.post(
        "/api/v1/security/imports",
        data={"asset_id": str(asset["id"])},
        files={"file": ("r.json", trivy(REPORT), "application/json")},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=viewer["username"], password=viewer["password"])
    page.goto(f"{live.base}/security")
    expect(page.locator("#findings")).to_contain_text("CVE-2024-45491")
    expect(page.locator("#security-import")).to_have_count(0)
    expect(page.locator(".accept-risk")).to_have_count(0)
    page.goto(f"{live.base}/security/assets")
    expect(page.locator("#asset-form")).to_have_count(0)
    expect(page.locator("[data-delete-asset]")).to_have_count(0)
    status = page.evaluate(
        """async (id) => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch(`/api/v1/secops/assets/${id}`, {
                method: "DELETE",
                headers: {"X-CSRF-Token": csrf},
            });
            return [r.status, (await r.json()).code];
        }""",
        asset["id"],
    )
    assert status == [403, "FORBIDDEN"]
    assert admin_api.get(f"/api/v1/secops/assets/{asset['id']}").status_code == 200
