"""The analytics page and dashboard panel in a real browser: a report built in the form,
generated into a version and downloaded as CSV; and a viewer's limits."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot


def team_user(admin_api: httpx.Client, role: str, team_id: int | None = None) -> dict[str, str]:
    """A user of `role` in the team (a new one unless given); `team_id` in the answer."""
    suffix = uuid.uuid4().hex[:6]
    if team_id is None:
        team_id = admin_api.post("/api/v1/users/teams", json={"name": f"an-{suffix}"}).json()["id"]
    user = {"username": f"{role[:3]}{suffix}", "password": f"pw-{uuid.uuid4().hex}"}
    r = admin_api.post(
        "/api/v1/users",
        json={
            **user,
            "email": f"{user['username']}@example.com",
            "role": role,
            "team_ids": [team_id],
        },
    )
    assert r.status_code == 201, r.text
    return {**user, "team_id": str(team_id)}


def test_build_generate_and_download_a_report(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    user = team_user(admin_api, "operator")
    page = new_page(username=user["username"], password=user["password"])
    page.goto(f"{live.base}/")
    panel = page.locator("#analytics-widget")
    expect(panel).to_contain_text("Backup success rate")
    expect(panel.locator("#analytics-daily")).to_be_visible()

    page.goto(f"{live.base}/analytics")
    expect(page.locator("#analytics-figures")).to_contain_text("RPO compliance")
    form = page.locator("#report-form")
    form.get_by_label("Name").fill("backups by day")
    form.get_by_label("Group by").select_option("day")
    form.get_by_label("mean_size_bytes").check()
    form.get_by_role("button", name="Save report").click()
    row = page.locator("#reports tr", has_text="backups by day")
    expect(row).to_contain_text("none yet")
    row.get_by_role("button", name="Generate").click()
    row = page.locator("#reports tr", has_text="backups by day")
    expect(row).to_contain_text("v1 (")
    link = row.get_by_role("link", name="CSV")
    download = page.request.get(f"{live.base}{link.get_attribute('href')}")
    assert download.status == 200
    assert download.text().splitlines()[0] == "day,backups,completed,failed,mean_size_bytes"
    screenshot(page, "analytics")


def test_a_viewer_reads_analytics_but_generates_nothing(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    operator = team_user(admin_api, "operator")
    with httpx.Client(base_url=live.base) as c:
        login = {"username": operator["username"], "password": operator["password"]}
        token = c.post("/api/v1/auth/login", json=login).json()["access_token"]
        c.headers["Authorization"] = f"Bearer {token}"
        report = c.post(
            "/api/v1/analytics/reports",
            json={"name": "mine", "metrics": ["backups"], "group_by": "none"},
        ).json()
    viewer = team_user(admin_api, "viewer", int(operator["team_id"]))
    page = new_page(username=viewer["username"], password=viewer["password"])
    page.goto(f"{live.base}/")
    expect(page.locator("#analytics-widget")).to_contain_text("Backup success rate")
    page.goto(f"{live.base}/analytics")
    expect(page.locator("#analytics-figures")).to_be_visible()
    expect(page.locator("#reports")).to_contain_text("mine")
    expect(page.locator("#report-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Generate")).to_have_count(0)
    status = page.evaluate(
        """async (id) => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch(`/api/v1/analytics/reports/${id}/generate`, {
                method: "POST",
                headers: {"X-CSRF-Token": csrf},
            });
            return [r.status, (await r.json()).code];
        }""",
        report["id"],
    )
    assert status == [403, "FORBIDDEN"]
