"""Notification channels (create, test against a loopback receiver, failures in words with
their code), the notification center live on the WebSocket, and verification runs started
from the page, in a real browser."""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot, wait_backup

pytestmark = pytest.mark.postgres


class Receiver:
    """A webhook endpoint on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    rx.thread.start()
    yield rx
    rx.server.shutdown()
    rx.server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_webhook_channel_create_test_and_failures(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client, receiver: Receiver
) -> None:
    page = new_page()
    page.goto(f"{live.base}/notifications")
    form = page.locator("#channel-form")
    if not form.is_visible():
        page.get_by_text("Add a channel").click()

    # Only the chosen type's fields are shown (and sent).
    form.get_by_label("Type").select_option("email")
    expect(form.get_by_label("SMTP host")).to_be_visible()
    expect(form.get_by_label("URL", exact=True)).to_be_hidden()
    form.get_by_label("Type").select_option("webhook")
    expect(form.get_by_label("SMTP host")).to_be_hidden()

    # An internal address nobody allow-listed is refused, in words with its code.
    form.get_by_label("Name").fill("ui-blocked")
    form.get_by_label("URL", exact=True).fill("http://10.255.255.1/hook")
    form.get_by_role("button", name="Add channel").click()
    expect(form.locator(".error")).to_contain_text("(OUTBOUND_BLOCKED)")

    form.get_by_label("Name").fill("ui-webhook")
    form.get_by_label("URL", exact=True).fill(receiver.url)
    form.get_by_role("button", name="Add channel").click()
    row = page.locator('tr[data-channel="ui-webhook"]')
    expect(row).to_contain_text("127.0.0.1")
    row.get_by_role("button", name="Test").click()
    expect(page.locator("[id^=channel-out-]").first).to_contain_text("Delivered")
    assert [b["title"] for b in receiver.bodies] == ["opscenter test notification"]
    assert "the channel works" in receiver.bodies[0]["message"]

    # A channel whose receiver is gone: the error in words, with its code.
    r = admin_api.post(
        "/api/v1/notifications/channels",
        json={
            "name": "ui-webhook-down",
            "type": "webhook",
            "config": {"url": f"http://127.0.0.1:{closed_port()}/hook"},
        },
    )
    assert r.status_code == 201, r.text
    page.reload()
    down = page.locator('tr[data-channel="ui-webhook-down"]')
    down.get_by_role("button", name="Test").click()
    out = page.locator(f"#channel-out-{r.json()['id']}")
    expect(out).to_contain_text("Not delivered")
    expect(out).to_have_text(re.compile(r"\(DELIVERY_FAILED\)\s*$"))
    page.reload()
    expect(down).to_contain_text("failed")
    screenshot(page, "notifications")

    # Deleted from the page (after the confirmation), and through the API.
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert admin_api.delete(f"/api/v1/notifications/channels/{r.json()['id']}").status_code == 204


def test_alert_policy_added_switched_off_and_removed_from_the_page(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    name = f"ui-policy-{uuid.uuid4().hex[:6]}"
    page = new_page()
    page.goto(f"{live.base}/notifications")
    page.locator("#add-policy summary").click()
    form = page.locator("#policy-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Events").fill("verification.failed\nbackup.corrupt")
    form.get_by_label("From severity").select_option("error")
    form.get_by_label("On a match, also open an incident").select_option("yes")
    form.get_by_label("Incident severity").select_option("critical")
    form.get_by_label("Squad").fill("dba")
    form.get_by_role("button", name="Add policy").click()

    row = page.locator(f'tr[data-policy="{name}"]')
    expect(row).to_contain_text("verification.failed")
    expect(row).to_contain_text("critical (dba)")
    saved = next(
        p
        for p in admin_api.get("/api/v1/notifications/policies").json()["items"]
        if p["name"] == name
    )
    assert sorted(saved["event_types"]) == ["backup.corrupt", "verification.failed"]
    assert saved["min_severity"] == "error" and saved["is_enabled"] is True
    assert saved["open_incident"] == {
        "severity": "critical",
        "environment": "production",
        "squad": "dba",
    }

    row.get_by_role("button", name="Disable").click()
    expect(page.locator(f'tr[data-policy="{name}"]')).to_contain_text("disabled")
    assert (
        admin_api.get(f"/api/v1/notifications/policies/{saved['id']}").json()["is_enabled"] is False
    )

    # A viewer reads the policies and changes nothing.
    viewer = f"viewer{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": viewer, "email": f"{viewer}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    reader = new_page(username=viewer, password=password)
    reader.goto(f"{live.base}/notifications")
    expect(reader.locator(f'tr[data-policy="{name}"]')).to_contain_text("critical (dba)")
    expect(reader.locator("#policy-form")).to_have_count(0)
    expect(reader.locator(f'tr[data-policy="{name}"] button')).to_have_count(0)

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'tr[data-policy="{name}"]').get_by_role("button", name="Delete").click()
    expect(page.locator(f'tr[data-policy="{name}"]')).to_have_count(0)
    assert admin_api.get(f"/api/v1/notifications/policies/{saved['id']}").status_code == 404


def test_the_notification_center_is_live(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    # A server of its own, so the alert throttle of other tests' failures does not apply.
    r = admin_api.post(
        "/api/v1/servers",
        json={
            "name": f"notify-{uuid.uuid4().hex[:6]}",
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": 5432,
            "credentials": {"username": "postgres"},
        },
    )
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    admin_api.post("/api/v1/notifications/mark-all-read")

    page = new_page()
    page.goto(f"{live.base}/notifications")
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    badge = page.locator("#nav-unread")
    expect(badge).to_be_hidden()

    r = admin_api.post(
        "/api/v1/backups", json={"server_id": server_id, "database_name": "oc_web_no_such_db"}
    )
    assert r.status_code == 202, r.text
    assert wait_backup(admin_api, r.json()["id"])["status"] == "failed"

    # Without a reload: the badge counts it, the list shows it highlighted.
    expect(badge).to_be_visible(timeout=30_000)
    expect(badge).to_have_text(re.compile(r"^\d+ unread$"))
    unread = page.locator("#inbox li.unread")
    expect(unread.first).to_contain_text("oc_web_no_such_db")
    expect(page.locator(".toast.error").first).to_contain_text("oc_web_no_such_db")
    page.evaluate("document.querySelectorAll('.toast').forEach((t) => t.remove())")
    screenshot(page, "notification-center")

    count = unread.count()
    unread.first.get_by_role("button", name="Mark read").click()
    expect(unread).to_have_count(count - 1)
    page.get_by_role("button", name="Mark all read").click()
    expect(unread).to_have_count(0)
    expect(badge).to_be_hidden()
    assert admin_api.get("/api/v1/notifications/unread-count").json() == {"unread": 0}
    assert admin_api.delete(f"/api/v1/servers/{server_id}").status_code == 204


def test_run_a_deep_verification_from_the_page(
    new_page: PageFactory,
    live: LiveServer,
    admin_api: httpx.Client,
    completed_backup: dict[str, Any],
) -> None:
    page = new_page()
    page.goto(f"{live.base}/verification")
    form = page.locator("#verify-form")
    form.get_by_label("Backup").select_option(str(completed_backup["id"]))
    form.get_by_label("Test").select_option("deep")
    form.get_by_role("button", name="Run verification").click()
    progress = page.locator("#verify-progress")
    expect(progress).to_contain_text("Verification succeeded", timeout=60_000)

    runs = admin_api.get(
        "/api/v1/verify", params={"backup_id": completed_backup["id"], "test_type": "deep"}
    ).json()["items"]
    assert runs[0]["status"] == "passed"

    # A restore test compares the row counts per table, shown on the run's page.
    form.get_by_label("Test").select_option("restore")
    form.get_by_role("button", name="Run verification").click()
    link = progress.get_by_role("link")
    expect(link).to_have_text(re.compile(rf"^see run (?!{runs[0]['id']}$)\d+$"), timeout=90_000)
    expect(progress).to_contain_text("Verification succeeded")
    link.click()
    expect(page.locator("#run-status")).to_have_text("passed")
    expect(page.locator('tr[data-table="public.customers"]')).to_contain_text("ok")
    screenshot(page, "verification-run")

    page.goto(f"{live.base}/verification?test_type=deep&status=passed")
    table = page.locator("#verification-runs")
    expect(table.locator(f'tr[data-run="{runs[0]["id"]}"]')).to_contain_text("passed")
    expect(table).not_to_contain_text("restore")
    screenshot(page, "verification")
