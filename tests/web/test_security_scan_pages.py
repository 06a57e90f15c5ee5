"""The Scans and Policies pages in a real browser: an admin edits a policy, starts a
posture scan and follows it to its findings; a viewer reads both pages and may change
nothing."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot


def test_admin_edits_a_policy_and_runs_a_posture_scan(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    # An API key without expiry: the posture scan must report it.
    name = f"scan-ui-{uuid.uuid4().hex[:6]}"
    assert admin_api.post("/api/v1/admin/tokens", json={"name": name}).status_code == 201

    page = new_page()
    page.goto(f"{live.base}/security/policies")
    row = page.locator("#policy-posture\\.inactive-users")
    expect(row).to_contain_text("iso27001:2022 A.5.18")
    row.locator("summary", has_text="Edit").click()
    row.get_by_label("Severity").select_option("high")
    row.get_by_role("button", name="Save").click()
    row = page.locator("#policy-posture\\.inactive-users")
    expect(row.locator(".badge")).to_have_text("high")
    row.get_by_role("button", name="Disable").click()
    expect(page.locator("#policy-posture\\.inactive-users .enabled")).to_have_text("no")
    page.locator("#policy-posture\\.inactive-users").get_by_role("button", name="Enable").click()
    expect(page.locator("#policy-posture\\.inactive-users .enabled")).to_have_text("yes")

    page.goto(f"{live.base}/security/scans")
    form = page.locator("#scan-form")
    form.get_by_label("Scope").select_option("posture")
    form.get_by_role("button", name="Scan").click()
    # The page refreshes itself while the scan runs.
    first = page.locator("#scans tbody tr").first
    expect(first.locator(".status")).to_contain_text("succeeded", timeout=60_000)
    page.locator("#scans summary").first.click()
    link = page.locator(".scan-results a", has_text=f"API key '{name}' never expires")
    expect(link).to_be_visible()
    screenshot(page, "security_scans")
    link.click()
    page.wait_for_url("**/security?asset=*")
    expect(page.locator("#findings")).to_contain_text(f"API key '{name}' never expires")


def test_a_viewer_reads_scans_and_policies_but_changes_nothing(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    user = {"username": f"vsc{uuid.uuid4().hex[:6]}", "password": f"pw-{uuid.uuid4().hex}"}
    r = admin_api.post(
        "/api/v1/users",
        json={**user, "email": f"{user['username']}@example.com", "role": "viewer"},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=user["username"], password=user["password"])
    page.goto(f"{live.base}/security/policies")
    expect(page.locator("#policies")).to_contain_text("TLS certificates are renewed in time")
    expect(page.get_by_role("button", name="Disable")).to_have_count(0)
    expect(page.locator("form.policy-edit")).to_have_count(0)
    page.goto(f"{live.base}/security/scans")
    expect(page.get_by_role("heading", name="Scans")).to_be_visible()
    expect(page.locator("#scan-form")).to_have_count(0)
    expect(page.locator("#allow-form")).to_have_count(0)
    expect(page.get_by_role("link", name="Policies", exact=True)).to_be_visible()
    # The API refuses what the page does not offer.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    api = page.request.post(
        f"{live.base}/api/v1/security/scan",
        data={"scope": "posture"},
        headers={"X-CSRF-Token": cookies.get("csrf_token", "")},
    )
    assert api.status == 403
