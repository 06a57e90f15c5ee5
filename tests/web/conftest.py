"""Browser tests: a real `opscenter serve` process (tests/live.py), Debian's Chromium driven
by Playwright, and a real PostgreSQL database to back up and restore."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ADMIN_PASSWORD
from tests.helpers import psql
from tests.live import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
SOURCE_ROWS = 50


@dataclass
class Databases:
    """PostgreSQL databases made for this run; every one of them is dropped at the end."""

    source: str
    names: list[str]

    def new_name(self, prefix: str) -> str:
        name = f"oc_web_{prefix}_{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    source = f"oc_web_src_{uuid.uuid4().hex[:8]}"
    dbs = Databases(source, [source])
    psql(f'CREATE DATABASE "{source}"')
    psql(
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL);"
        f"INSERT INTO customers (name, email) SELECT 'customer ' || i, 'c' || i || '@example.com'"
        f" FROM generate_series(1, {SOURCE_ROWS}) AS i;",
        source,
    )
    yield dbs
    for name in dbs.names:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("web-data"),
        OPSCENTER_SCHEDULER_INTERVAL="0",
        # The notification tests' webhook receiver listens on loopback.
        OPSCENTER_OUTBOUND_ALLOWLIST="127.0.0.1",
        # `admin_api` logs in once per session, and the browser tests of one worker can
        # span more than the default 15 minutes of a token when the suite is long.
        OPSCENTER_ACCESS_TOKEN_MINUTES="240",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_api(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


@pytest.fixture(scope="session")
def pg_server(admin_api: httpx.Client) -> dict[str, Any]:
    """The loopback PostgreSQL as a server, made through the API for the tests that are
    not about adding servers."""
    r = admin_api.post(
        "/api/v1/servers",
        json={
            "name": "pg-loopback",
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": 5432,
            "credentials": {"username": "postgres"},
        },
    )
    assert r.status_code == 201, r.text
    server: dict[str, Any] = r.json()
    return server


def wait_backup(client: httpx.Client, backup_id: int, timeout: float = 90) -> dict[str, Any]:
    """The backup once it and its job have ended: a backup shows `completed` a moment
    before its job has finished, and its schedule takes no other run until then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backup: dict[str, Any] = client.get(f"/api/v1/backups/{backup_id}").json()
        job_id = backup["job_id"]
        job = client.get(f"/api/v1/jobs/{job_id}").json() if job_id else {"status": "none"}
        if backup["status"] not in ("pending", "running") and job["status"] not in (
            "queued",
            "running",
        ):
            return backup
        time.sleep(0.3)
    raise AssertionError(f"backup {backup_id} did not finish")


@pytest.fixture(scope="session")
def completed_backup(
    admin_api: httpx.Client, pg_server: dict[str, Any], databases: Databases
) -> dict[str, Any]:
    r = admin_api.post(
        "/api/v1/backups", json={"server_id": pg_server["id"], "database_name": databases.source}
    )
    assert r.status_code == 202, r.text
    backup = wait_backup(admin_api, r.json()["id"])
    assert backup["status"] == "completed", backup
    return backup


# Package scope: the sync API keeps an event loop running in this thread until it
# stops, which would break every asyncio test collected after tests/web.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def log_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name or e-mail").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")
    expect(page.locator("#current-user")).to_have_text(username)


PageFactory = Callable[..., Page]

# Assertions wait as long as actions: under two xdist workers and a browser on two
# cores, a save-and-reload can take longer than Playwright's 5 s default.
expect.set_options(timeout=15_000)


@pytest.fixture
def new_page(browser: Browser, live: LiveServer) -> Iterator[PageFactory]:
    """Pages in their own browser contexts (own cookies), logged in as asked."""
    contexts = []

    def factory(
        username: str | None = "admin",
        password: str = ADMIN_PASSWORD,
        viewport: dict[str, int] | None = None,
    ) -> Page:
        context = browser.new_context(viewport=viewport or DESKTOP, accept_downloads=True)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        if username:
            log_in(page, live.base, username, password)
        return page

    yield factory
    for context in contexts:
        context.close()


def screenshot(page: Page, name: str) -> None:
    """The README's pictures: written by the tests, 1280 px wide."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
