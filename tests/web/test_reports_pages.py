"""The Reports page in a real browser: an operator generates a PDF, follows its job, and
downloads it; a viewer sees the versions and downloads, but cannot generate."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.reports.helpers import pdf_text
from tests.web.conftest import PageFactory


def last_month() -> str:
    return (datetime.now(UTC).replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


def team_with_storage(
    admin_api: httpx.Client, tmp_path: Path, role: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """A team with a storage of its own, and a user of `role` in it (name and password)."""
    suffix = uuid.uuid4().hex[:6]
    team = admin_api.post("/api/v1/users/teams", json={"name": f"rep-{suffix}"}).json()
    store = tmp_path / f"reports-{suffix}"
    store.mkdir()
    r = admin_api.post(
        "/api/v1/storage/providers",
        json={
            "name": f"rep-{suffix}",
            "type": "local",
            "config": {"path": str(store)},
            "team_id": team["id"],
        },
    )
    assert r.status_code == 201, r.text
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
    return team, user


def test_generate_follow_and_download_a_pdf(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client, tmp_path: Path
) -> None:
    _, operator = team_with_storage(admin_api, tmp_path, "operator")
    page = new_page(username=operator["username"], password=operator["password"])
    page.goto(f"{live.base}/reports")
    form = page.locator("#report-generate")
    form.get_by_label("Kind").select_option(label="Incident summary")
    form.get_by_label("Period").fill(last_month())
    form.get_by_label("Format").select_option("pdf")
    form.get_by_role("button", name="Generate").click()
    # The job is followed in the page, which then shows the new version.
    link = page.locator("#reports a", has_text="v1 PDF")
    expect(link).to_be_visible(timeout=60_000)
    expect(page.locator("#reports")).to_contain_text("incident_summary")
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == f"incident_summary-{last_month()}-v1.pdf"
    content = Path(download.path()).read_bytes()
    text = " ".join(pdf_text(content).split())
    assert "Incident summary" in text and "0 incidents were opened in this period" in text


def test_a_viewer_downloads_but_does_not_generate(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client, tmp_path: Path
) -> None:
    team, viewer = team_with_storage(admin_api, tmp_path, "viewer")
    r = admin_api.post(
        "/api/v1/reports/generate",
        json={"kind": "costs", "period": last_month(), "format": "json", "team_id": team["id"]},
    )
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while admin_api.get(f"/api/v1/jobs/{r.json()['job_id']}").json()["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    page = new_page(username=viewer["username"], password=viewer["password"])
    page.goto(f"{live.base}/reports")
    expect(page.locator("#reports")).to_contain_text("costs")
    expect(page.locator("#reports a", has_text="v1 JSON")).to_be_visible()
    expect(page.locator("#report-generate")).to_have_count(0)
    status = page.evaluate(
        """async (period) => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch("/api/v1/reports/generate", {
                method: "POST",
                headers: {"X-CSRF-Token": csrf, "Content-Type": "application/json"},
                body: JSON.stringify({kind: "costs", period}),
            });
            return [r.status, (await r.json()).code];
        }""",
        last_month(),
    )
    assert status == [403, "FORBIDDEN"]
