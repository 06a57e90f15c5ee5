"""The web UI in a real browser against a real server: log in, add a PostgreSQL server,
run a backup and watch it finish live, restore it with a masking rule, plan a schedule,
read a failure, and a viewer who neither sees nor may force a restore (nor download)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ADMIN_PASSWORD
from tests.helpers import psql
from tests.live import LiveServer
from tests.web.conftest import SOURCE_ROWS, Databases, PageFactory, screenshot, wait_backup

pytestmark = pytest.mark.postgres
JOB_TIMEOUT = 90_000


def test_login_shows_the_user_and_logout_ends_the_session(
    new_page: PageFactory, live: LiveServer
) -> None:
    page = new_page(username=None)
    page.goto(f"{live.base}/backups")
    expect(page).to_have_url(re.compile(r"/login\?next=/backups$"))
    screenshot(page, "login")

    page.get_by_label("User name or e-mail").fill("admin")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-form .error")).to_contain_text("(UNAUTHORIZED)")

    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live.base}/backups")  # back where the login was asked for
    expect(page.locator("#current-user")).to_have_text("admin")
    expect(page.locator("#current-role")).to_have_text("admin")

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(f"{live.base}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))


def test_add_a_postgresql_server_after_a_connection_test(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client, databases: Databases
) -> None:
    page = new_page()
    calls: list[str] = []
    page.on("request", lambda r: calls.append(f"{r.method} {r.url.removeprefix(live.base)}"))
    page.goto(f"{live.base}/servers")
    form = page.locator("#server-form")
    if not form.is_visible():
        page.get_by_text("Add a server").click()

    # A server that does not answer is tested unsaved and never created; the reason is
    # shown with its code.
    form.get_by_label("Name").fill("nobody-home")
    form.get_by_label("Type").select_option("postgresql")
    form.get_by_label("Host").fill("127.0.0.1")
    form.get_by_label("Port", exact=True).fill("1")
    form.get_by_label("User", exact=True).fill("postgres")
    form.get_by_role("button", name="Test and save").click()
    expect(form.locator(".error")).to_contain_text("not kept", timeout=30_000)
    # The message ends with its code, then the link to the code's knowledge-base article.
    expect(form.locator(".error")).to_have_text(
        re.compile(r"\(unreachable\)\s*What does unreachable mean\?\s*$")
    )
    assert "POST /api/v1/servers/test-connection" in calls
    assert "POST /api/v1/servers" not in calls and not any(c.startswith("DELETE") for c in calls)
    names = [s["name"] for s in admin_api.get("/api/v1/servers").json()["items"]]
    assert "nobody-home" not in names

    # Asked to keep it anyway: saved, and its badge says what the test found.
    form.get_by_label("Name").fill("kept-anyway")
    form.get_by_label("Keep the server even if the connection test fails").check()
    form.get_by_role("button", name="Test and save").click()
    kept = page.locator('tr[data-server="kept-anyway"]')
    expect(kept).to_be_visible(timeout=30_000)
    expect(kept.locator("[data-server-health]")).to_have_text("unhealthy")
    kept_id = next(
        s["id"]
        for s in admin_api.get("/api/v1/servers").json()["items"]
        if s["name"] == "kept-anyway"
    )
    assert admin_api.delete(f"/api/v1/servers/{kept_id}").status_code == 204

    page.goto(f"{live.base}/servers")
    if not form.is_visible():
        page.get_by_text("Add a server").click()
    form.get_by_label("Name").fill("ui-postgres")
    form.get_by_label("Type").select_option("postgresql")
    form.get_by_label("Host").fill("127.0.0.1")
    form.get_by_label("Port", exact=True).fill("5432")
    form.get_by_label("User", exact=True).fill("postgres")
    form.get_by_role("button", name="Test and save").click()
    row = page.locator('tr[data-server="ui-postgres"]')
    expect(row).to_be_visible(timeout=30_000)
    expect(row.locator("[data-server-health]")).to_have_text("healthy")

    row.get_by_role("button", name="Databases").click()
    expect(page.locator("table.databases")).to_contain_text(databases.source, timeout=30_000)
    screenshot(page, "servers")


def test_a_servers_health_badge_follows_its_connection_tests_live(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    r = admin_api.post(
        "/api/v1/servers",
        json={
            "name": "flapping",
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": 1,
            "credentials": {"username": "postgres"},
        },
    )
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    page = new_page()
    page.goto(f"{live.base}/servers")
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    page.evaluate("window.notReloaded = true")
    badge = page.locator(f'[data-server-health="{server_id}"]')
    expect(badge).to_have_text("unknown")

    # Tested elsewhere (here: through the API), seen here over the WebSocket.
    assert admin_api.post(f"/api/v1/servers/{server_id}/test-connection").json()["success"] is False
    expect(badge).to_have_text("unhealthy", timeout=30_000)
    expect(badge).to_have_class(re.compile(r"health-unhealthy"))
    assert admin_api.put(f"/api/v1/servers/{server_id}", json={"port": 5432}).status_code == 200
    assert admin_api.post(f"/api/v1/servers/{server_id}/test-connection").json()["success"] is True
    expect(badge).to_have_text("healthy", timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    assert admin_api.delete(f"/api/v1/servers/{server_id}").status_code == 204


def test_run_a_backup_and_watch_it_finish_live_then_download_it(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    pg_server: dict[str, Any],
    databases: Databases,
) -> None:
    page = new_page()
    page.goto(f"{live.base}/backups")
    expect(page.locator("body")).to_have_attribute("data-live", "on")  # WebSocket subscribed
    form = page.locator("#run-backup")
    form.get_by_label("Server").select_option(str(pg_server["id"]))
    form.get_by_label("Database").fill(databases.source)
    form.get_by_role("button", name="Run backup").click()

    # The new row appears and turns completed with no reload: only the WebSocket tells it.
    done = page.locator(f'tr[data-status="completed"]:has-text("{databases.source}")')
    expect(done.first).to_be_visible(timeout=JOB_TIMEOUT)
    backup_id = int(done.first.get_attribute("data-backup") or 0)
    backup = admin_api.get(f"/api/v1/backups/{backup_id}").json()
    assert backup["status"] == "completed" and backup["size_bytes"] > 0
    screenshot(page, "backups")

    with page.expect_download() as download_info:
        done.first.get_by_role("button", name="Download").click()
    path = download_info.value.path()
    assert path.stat().st_size == backup["size_bytes"]

    # Verification (the colleagues' API): a checksum run, and the row shows its result.
    done.first.get_by_role("button", name="Verify").click()
    row = page.locator(f'tr[data-backup="{backup_id}"]')
    expect(row.locator(".badge[class*=verify-]")).not_to_have_text(
        "unverified", timeout=JOB_TIMEOUT
    )
    expect(row.locator(".badge[class*=verify-]")).to_have_text("checksum_ok")
    assert admin_api.get(f"/api/v1/backups/{backup_id}").json()["verification_status"] == (
        "checksum_ok"
    )


def test_restore_into_a_new_database_with_a_masking_rule(
    new_page: PageFactory,
    live: LiveServer,
    completed_backup: dict[str, Any],
    databases: Databases,
) -> None:
    target = databases.new_name("restored")
    page = new_page()
    page.goto(f"{live.base}/backups")
    page.locator(f'[data-restore="{completed_backup["id"]}"]').click()
    page.wait_for_url(f"{live.base}/backups/{completed_backup['id']}/restore")
    expect(page.locator("#confirm-label")).to_be_hidden()  # not a production server

    page.get_by_label("Target database", exact=True).fill(target)
    page.get_by_role("button", name="Add a masking rule").click()
    page.get_by_label("Column to mask").fill("customers.email")
    page.get_by_label("Masking rule", exact=True).select_option("hash")
    screenshot(page, "restore")
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.locator("[data-job-status]")).to_have_text("succeeded", timeout=JOB_TIMEOUT)

    assert psql("SELECT count(*) FROM customers", target) == str(SOURCE_ROWS)
    assert psql("SELECT count(*) FROM customers WHERE email LIKE '%@example.com'", target) == "0"
    assert psql("SELECT count(DISTINCT email) FROM customers", target) == str(SOURCE_ROWS)
    assert psql("SELECT name FROM customers WHERE id = 7", target) == "customer 7"

    # Restoring over the now non-empty database is refused until replacing is confirmed.
    page.get_by_role("button", name="Restore", exact=True).click()
    error = page.locator("#restore-form .error")
    expect(error).to_contain_text("not empty")
    expect(error).to_contain_text("(CONFLICT)")


def test_a_production_target_needs_the_typed_confirmation(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    completed_backup: dict[str, Any],
    databases: Databases,
) -> None:
    r = admin_api.post(
        "/api/v1/servers",
        json={
            "name": f"prod-{uuid.uuid4().hex[:6]}",
            "type": "postgresql",
            "environment": "production",
            "host": "127.0.0.1",
            "credentials": {"username": "postgres"},
        },
    )
    assert r.status_code == 201, r.text
    target = databases.new_name("prod")
    page = new_page()
    page.goto(f"{live.base}/backups/{completed_backup['id']}/restore")
    page.locator("#restore-server").select_option(str(r.json()["id"]))
    expect(page.locator("#confirm-label")).to_be_visible()
    page.get_by_label("Target database", exact=True).fill(target)
    page.locator("#restore-confirm").fill("not the name")
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.locator("#restore-form .error")).to_contain_text("CONFIRMATION_REQUIRED")
    page.locator("#restore-confirm").fill(target)
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.locator("[data-job-status]")).to_have_text("succeeded", timeout=JOB_TIMEOUT)
    assert psql("SELECT count(*) FROM customers", target) == str(SOURCE_ROWS)


def test_create_a_schedule_and_see_its_next_runs(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    pg_server: dict[str, Any],
    databases: Databases,
) -> None:
    page = new_page()
    page.goto(f"{live.base}/schedules")
    form = page.locator("#schedule-form")
    form.get_by_label("Cron expression").fill("61 2 * * *")
    expect(page.locator("#cron-error")).to_contain_text("VALIDATION_ERROR")

    form.get_by_label("Name").fill("nightly-ui")
    form.get_by_label("Server").select_option(str(pg_server["id"]))
    form.get_by_label("Database").fill(databases.source)
    form.get_by_label("Cron expression").fill("30 2 * * 1-5")
    form.get_by_label("Timezone").fill("Europe/Berlin")
    expect(page.locator("#cron-description")).to_contain_text("02:30")
    expect(page.locator("#cron-description")).to_contain_text("Monday through Friday")
    expect(page.locator("#cron-description")).to_contain_text("Europe/Berlin")
    expect(page.locator("#next-runs li")).to_have_count(5)
    # Shown as wall-clock times of the chosen zone (with UTC beside them), weekdays only.
    for run in page.locator("#next-runs li").all_inner_texts():
        assert re.match(r"^(Mon|Tue|Wed|Thu|Fri) \d{4}-\d\d-\d\d (02:30|03:00) CES?T ", run), run
    screenshot(page, "schedules")
    form.get_by_role("button", name="Create schedule").click()

    row = page.locator('tr[data-schedule="nightly-ui"]')
    expect(row).to_contain_text("30 2 * * 1-5")
    expect(row).to_contain_text(re.compile(r"in \d+ (h|d|min)"))
    created = [s for s in admin_api.get("/api/v1/schedules").json()["items"]]
    assert any(s["name"] == "nightly-ui" and s["next_run"] for s in created)


def test_edit_a_schedule(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    pg_server: dict[str, Any],
    databases: Databases,
) -> None:
    r = admin_api.post(
        "/api/v1/schedules",
        json={
            "name": "edit-me",
            "server_id": pg_server["id"],
            "database_name": databases.source,
            "cron_expression": "0 3 * * *",
        },
    )
    assert r.status_code == 201, r.text
    schedule_id = r.json()["id"]
    page = new_page()
    page.goto(f"{live.base}/schedules")
    editor = page.locator('[data-edit-schedule="edit-me"]')
    editor.locator("summary").click()
    form = editor.locator("form")

    # A bad expression is refused in words with its code, and nothing changes.
    form.get_by_label("Cron expression").fill("0 25 * * *")
    form.get_by_role("button", name="Save changes").click()
    expect(form.locator(".error")).to_contain_text("(VALIDATION_ERROR)")
    assert (
        admin_api.get(f"/api/v1/schedules/{schedule_id}").json()["cron_expression"] == "0 3 * * *"
    )

    form.get_by_label("Name").fill("edited")
    form.get_by_label("Cron expression").fill("15 4 * * 0")
    form.get_by_label("Timezone").fill("Europe/Berlin")
    form.get_by_label("Verify after each backup").select_option("deep")
    form.get_by_label("Enabled").uncheck()
    form.get_by_role("button", name="Save changes").click()
    row = page.locator('tr[data-schedule="edited"]')
    expect(row).to_contain_text("15 4 * * 0")
    expect(row).to_contain_text("Europe/Berlin")
    expect(row).to_contain_text("paused")
    saved = admin_api.get(f"/api/v1/schedules/{schedule_id}").json()
    assert (saved["name"], saved["verify_after"], saved["enabled"]) == ("edited", "deep", False)

    # restore tests on a sandbox server, then back on the source
    sandbox = admin_api.post(
        "/api/v1/servers",
        json={"name": f"sandbox-{uuid.uuid4().hex[:6]}", "type": "postgresql",
              "host": "127.0.0.1", "credentials": {"username": "postgres"}},
    ).json()  # fmt: skip
    page.reload()
    for choice, expected in ((str(sandbox["id"]), sandbox["id"]), ("", None)):
        editor = page.locator('[data-edit-schedule="edited"]')
        editor.locator("summary").click()
        editor.get_by_label("Restore tests on").select_option(choice)
        # saving reloads the page itself: wait for that reload, never start another
        with page.expect_navigation():
            editor.get_by_role("button", name="Save changes").click()
        saved = admin_api.get(f"/api/v1/schedules/{schedule_id}").json()
        assert saved["restore_test_server_id"] == expected
        editor = page.locator('[data-edit-schedule="edited"]')
        expect(editor.get_by_label("Restore tests on")).to_have_value(choice)
    assert admin_api.delete(f"/api/v1/schedules/{schedule_id}").status_code == 204
    assert admin_api.delete(f"/api/v1/servers/{sandbox['id']}").status_code == 204


def test_a_failed_backup_shows_its_error(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client, pg_server: dict[str, Any]
) -> None:
    missing = f"no_such_db_{uuid.uuid4().hex[:6]}"
    page = new_page()
    page.goto(f"{live.base}/backups")
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    form = page.locator("#run-backup")
    form.get_by_label("Server").select_option(str(pg_server["id"]))
    form.get_by_label("Database").fill(missing)
    form.get_by_role("button", name="Run backup").click()

    failed = page.locator(f'tr[data-status="failed"]:has-text("{missing}")')
    expect(failed).to_be_visible(timeout=JOB_TIMEOUT)
    expect(failed.locator("[data-backup-error]")).to_contain_text(missing)
    expect(failed.locator("[data-backup-error] code")).to_have_text("database_missing")
    expect(page.locator(".toast.error").first).to_contain_text("failed")
    # The in-app notification about it arrives too, without a second toast (error toasts
    # stay 15 s, longer than this takes).
    backup_id = int(failed.get_attribute("data-backup") or 0)

    def noted() -> bool:
        items = admin_api.get("/api/v1/notifications/").json()["items"]
        return any(n["details"].get("backup_id") == backup_id for n in items)

    deadline = time.monotonic() + 10
    while not noted():
        assert time.monotonic() < deadline, "no in-app notification for the failed backup"
        page.wait_for_timeout(100)
    page.wait_for_timeout(500)  # its live message has reached the page by now
    expect(page.locator(".toast.error")).to_have_count(1)


def test_a_viewer_sees_no_restore_and_is_refused_when_forcing_it(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    completed_backup: dict[str, Any],
) -> None:
    name = f"viewer{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=name, password=password)
    expect(page.locator("#current-role")).to_have_text("viewer")
    page.goto(f"{live.base}/backups")
    row = page.locator(f'tr[data-backup="{completed_backup["id"]}"]')
    expect(row).to_be_visible()
    expect(row.get_by_role("button", name="Download")).to_have_count(0)  # download:backups
    expect(page.locator("[data-restore]")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    expect(page.locator("#run-backup")).to_have_count(0)
    expect(page.get_by_role("link", name="Users and teams")).to_have_count(0)

    response = page.goto(f"{live.base}/backups/{completed_backup['id']}/restore")
    assert response is not None and response.status == 403
    expect(page.locator("#error-code")).to_have_text("FORBIDDEN")

    status = page.evaluate(
        """async (id) => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch(`/api/v1/backups/${id}/restore`, {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({target_database: "viewer_was_here"}),
            });
            return [r.status, (await r.json()).code];
        }""",
        completed_backup["id"],
    )
    assert status == [403, "FORBIDDEN"]


def test_dashboard_lights_failures_storage_and_charts(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    pg_server: dict[str, Any],
    completed_backup: dict[str, Any],
    databases: Databases,
) -> None:
    # A second backup of the same target, so its chart has a line.
    r = admin_api.post(
        "/api/v1/backups", json={"server_id": pg_server["id"], "database_name": databases.source}
    )
    assert wait_backup(admin_api, r.json()["id"])["status"] == "completed"
    page = new_page()
    page.goto(f"{live.base}/")
    row = page.locator(f'tr[data-target="pg-loopback/{databases.source}"]')
    expect(row).to_be_visible()
    expect(row.locator(".light")).to_have_count(1)
    expect(page.locator("#storage-h")).to_be_visible()
    canvas = page.locator("canvas[data-chart]").first
    expect(canvas).to_be_visible()
    # Chart.js drew into the canvas: it is no longer blank.
    assert page.evaluate(
        """() => {
            const c = document.querySelector("canvas[data-chart]");
            const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            return px.some((v, i) => i % 4 === 3 && v !== 0);
        }"""
    )
    screenshot(page, "dashboard")


def test_the_main_pages_fit_a_phone(new_page: PageFactory, live: LiveServer) -> None:
    page: Page = new_page(viewport={"width": 390, "height": 844})
    for path in ("/", "/servers", "/backups", "/schedules", "/notifications", "/verification"):
        page.goto(f"{live.base}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a phone"
