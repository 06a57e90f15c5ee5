"""The remaining pages in a real browser: storage (test, space), retention (deletion
preview), audit (filters, export), users and teams, API tokens (shown once)."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot, wait_backup

pytestmark = pytest.mark.postgres


def test_storage_provider_test_and_space(new_page: PageFactory, live: LiveServer) -> None:
    page = new_page()
    page.goto(f"{live.base}/storage")
    row = page.locator("#providers tbody tr").first
    expect(row).to_contain_text("local")
    row.get_by_role("button", name="Test").click()
    out = page.locator("[id^=storage-out-]").first
    expect(out).to_contain_text("OK:")
    row.get_by_role("button", name="Space").click()
    expect(out).to_contain_text(re.compile(r"Total .+, free .+; backups use"))


def test_retention_policy_with_its_deletion_preview(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    completed_backup: dict[str, Any],
    pg_server: dict[str, Any],
) -> None:
    r = admin_api.post(
        "/api/v1/schedules",
        json={
            "name": f"kept-{uuid.uuid4().hex[:6]}",
            "server_id": pg_server["id"],
            "database_name": completed_backup["database_name"],
            "cron_expression": "0 3 * * *",
        },
    )
    assert r.status_code == 201, r.text
    schedule_id = r.json()["id"]
    runs = []
    for _ in range(2):  # one at a time: a schedule never runs twice at once
        run = admin_api.post(f"/api/v1/schedules/{schedule_id}/run", json={})
        assert run.status_code == 202, run.text
        runs.append(wait_backup(admin_api, run.json()["id"]))
    older, newer = runs
    assert older["status"] == newer["status"] == "completed"
    page = new_page()
    page.goto(f"{live.base}/retention")
    form = page.locator("#retention-form")
    form.get_by_label("Name").fill("keep-one")
    form.get_by_role("button", name="Create policy").click()  # no rule at all
    error = form.locator(".error")
    expect(error).to_contain_text("give at least one rule")  # in words, with the code
    expect(error).to_contain_text("(VALIDATION_ERROR)")
    form.get_by_label("Keep last N").fill("1")
    form.get_by_role("button", name="Create policy").click()
    row = page.locator("tr", has_text="keep-one")
    expect(row).to_contain_text("keep_last_n 1")
    row.locator("select[name=schedule_id]").select_option(str(schedule_id))
    row.get_by_role("button", name="What would be deleted?").click()
    preview = page.locator("[id^=retention-out-]").first
    expect(preview).to_contain_text(f"Would keep: #{newer['id']}")
    expect(preview).to_contain_text(f"Would delete: #{older['id']}")
    assert admin_api.get(f"/api/v1/backups/{older['id']}").json()["status"] == "completed"


def test_audit_log_filters_and_export(new_page: PageFactory, live: LiveServer) -> None:
    page = new_page()
    page.goto(f"{live.base}/audit")
    page.get_by_label("Action").fill("auth.login")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#audit tbody tr")
    expect(rows.first).to_contain_text("auth.login")
    assert all("auth.login" in text for text in rows.all_inner_texts())
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    text = download_info.value.path().read_text()
    header, *lines = text.strip().splitlines()
    assert "action" in header and lines and all("auth.login" in line for line in lines)


def test_users_and_teams(new_page: PageFactory, live: LiveServer, admin_api: httpx.Client) -> None:
    name = f"ui{uuid.uuid4().hex[:8]}"
    page = new_page()
    page.goto(f"{live.base}/users")
    page.get_by_text("Add a user").click()
    form = page.locator("#user-form")
    form.get_by_label("User name").fill(name)
    form.get_by_label("E-mail").fill(f"{name}@example.com")
    form.get_by_label("Password").fill("short")
    form.get_by_role("button", name="Add user").click()
    expect(form.locator(".error")).to_contain_text("password")
    form.get_by_label("Password").fill(f"pw-{uuid.uuid4().hex}")
    form.get_by_label("Role").select_option("operator")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#users tr", has_text=name)).to_contain_text("operator")

    team = f"team-{uuid.uuid4().hex[:6]}"
    page.locator("#team-form").get_by_label("New team").fill(team)
    page.locator("#team-form").get_by_role("button", name="Create team").click()
    expect(page.locator("#teams")).to_contain_text(team)
    teams = admin_api.get("/api/v1/users/teams/list").json()["items"]
    assert team in [t["name"] for t in teams]


def test_api_token_is_shown_once_and_works(new_page: PageFactory, live: LiveServer) -> None:
    page = new_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(f"{live.base}/tokens")
    form = page.locator("#token-form")
    form.get_by_label("Name").fill("ci-pipeline")
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Create token").click()
    key = page.locator("#new-token-key")
    expect(key).not_to_be_empty()
    raw = key.inner_text()
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == raw
    me = httpx.get(f"{live.base}/api/v1/auth/me", headers={"X-API-Key": raw})
    assert me.status_code == 200 and me.json()["username"] == "admin"

    page.reload()
    expect(page.locator("#tokens tr", has_text="ci-pipeline")).to_be_visible()
    expect(page.locator("#new-token")).to_be_hidden()
    assert raw not in page.content()
    screenshot(page, "tokens")


def test_a_missing_object_is_an_error_page_with_its_code(
    new_page: PageFactory, live: LiveServer
) -> None:
    page = new_page()
    response = page.goto(f"{live.base}/backups/999999/restore")
    assert response is not None and response.status == 404
    expect(page.locator("#error-detail")).to_have_text("Backup 999999 not found")
    expect(page.locator("#error-code")).to_have_text("NOT_FOUND")


def test_storage_add_browse_import_edit_and_delete(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    completed_backup: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A second provider over a copy of the default storage: the disaster-recovery path
    (a storage whose artifacts the catalog does not know, adopted from their manifests)."""
    providers = admin_api.get("/api/v1/storage/providers").json()["items"]
    default = next(p for p in providers if p["id"] == completed_backup["storage_id"])
    mirror = tmp_path / "mirror"
    shutil.copytree(default["config"]["path"], mirror)
    name = f"mirror-{uuid.uuid4().hex[:6]}"

    page = new_page()
    page.goto(f"{live.base}/storage")
    page.locator("#add-storage summary").click()
    form = page.locator("#storage-form")
    expect(form.get_by_label("Bucket")).to_be_hidden()  # only the chosen type's fields

    # A relative directory is refused in words with its code, and nothing is kept.
    form.get_by_label("Name").fill(name)
    form.get_by_label("Directory").fill("relative/dir")
    form.get_by_role("button", name="Test and save").click()
    expect(form.locator(".error")).to_contain_text("absolute")
    expect(form.locator(".error")).to_contain_text("(VALIDATION_ERROR)")
    names = [p["name"] for p in admin_api.get("/api/v1/storage/providers").json()["items"]]
    assert name not in names

    form.get_by_label("Directory").fill(str(mirror))
    with page.expect_navigation():
        form.get_by_role("button", name="Test and save").click()
    row = page.locator(f'tr[data-provider="{name}"]')
    expect(row).to_contain_text(str(mirror))
    provider = next(
        p for p in admin_api.get("/api/v1/storage/providers").json()["items"] if p["name"] == name
    )
    out = page.locator(f"#storage-out-{provider['id']}")

    row.get_by_role("button", name="Contents").click()
    artifact = out.locator(f'tr[data-key="{completed_backup["storage_path"]}"]')
    expect(artifact).to_contain_text("not in catalog")
    screenshot(page, "storage")
    out.get_by_role("button", name=re.compile(r"^Import \d+ into the catalog$")).click()
    expect(out).to_contain_text("Imported")
    adopted = admin_api.get(
        "/api/v1/backups", params={"database_name": completed_backup["database_name"]}
    ).json()["items"]
    adopted = [b for b in adopted if b["storage_id"] == provider["id"]]
    assert [(b["storage_path"], b["checksum"]) for b in adopted].count(
        (completed_backup["storage_path"], completed_backup["checksum"])
    ) == 1
    row.get_by_role("button", name="Contents").click()
    expect(artifact).to_contain_text("backup ")
    expect(out).not_to_contain_text("not in catalog")

    # Rename through the row's editor.
    editor = page.locator(f'[data-edit-provider="{name}"]')
    editor.locator("summary").click()
    editor.get_by_label("Name").fill(f"{name}-dr")
    with page.expect_navigation():
        editor.get_by_role("button", name="Save changes").click()
    row = page.locator(f'tr[data-provider="{name}-dr"]')
    expect(row).to_be_visible()

    # Backups live there: deleting is refused with what to do instead.
    page.on("dialog", lambda dialog: dialog.accept())
    settings = page.locator(f'[data-edit-provider="{name}-dr"]')
    settings.locator("summary").click()
    settings.get_by_role("button", name="Delete").click()
    expect(out).to_contain_text("(CONFLICT)")
    expect(out).to_contain_text("is_active")
    for backup in adopted:
        assert admin_api.delete(f"/api/v1/backups/{backup['id']}").status_code == 204
    with page.expect_navigation():
        settings.get_by_role("button", name="Delete").click()
    expect(page.locator(f'tr[data-provider="{name}-dr"]')).to_have_count(0)
    assert admin_api.get(f"/api/v1/storage/providers/{provider['id']}").status_code == 404
    # The default storage's own copy was never touched.
    body = admin_api.get(f"/api/v1/backups/{completed_backup['id']}").json()
    assert body["status"] == "completed"
    assert (Path(default["config"]["path"]) / completed_backup["storage_path"]).is_file()


def test_long_lists_page_with_their_filters(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    created = []
    for _ in range(51):
        r = admin_api.post(
            "/api/v1/servers",
            json={"name": f"paged-{uuid.uuid4().hex[:8]}", "type": "postgresql",
                  "host": "127.0.0.1", "credentials": {"username": "postgres"}},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
    total = admin_api.get("/api/v1/audit/logs", params={"action": "server.create"}).json()["total"]
    assert 51 <= total <= 100
    try:
        page = new_page()
        page.goto(f"{live.base}/audit?action=server.create")
        pager = page.locator("nav.pager")
        expect(pager).to_contain_text(f"1\u201350 of {total}")
        expect(page.locator("#audit tbody tr")).to_have_count(50)
        pager.get_by_role("link", name="Older →").click()
        expect(pager).to_contain_text(f"51\u2013{total} of {total}")
        expect(page.locator("#audit tbody tr")).to_have_count(total - 50)
        assert "action=server.create" in page.url and "page=2" in page.url
        pager.get_by_role("link", name="← Newer").click()
        expect(pager).to_contain_text(f"1\u201350 of {total}")

        # Past the end: an empty page that leads back, not an error.
        page.goto(f"{live.base}/backups?page=999")
        expect(page.locator("#backup-rows")).to_contain_text("No backups match")
        expect(page.locator("nav.pager")).to_contain_text("page 999 of")
        page.goto(f"{live.base}/backups?page=0")
        expect(page.locator("body")).to_contain_text("VALIDATION_ERROR")
    finally:
        for server_id in created:
            admin_api.delete(f"/api/v1/servers/{server_id}")
