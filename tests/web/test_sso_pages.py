"""Single sign-on in Chromium: an admin adds a provider on the page, a person logs in
through the real OpenID provider on loopback (its own login form), lands in opscenter
with the mapped role, and logs out of both; a viewer neither sees nor may change it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.sso.provider import OpenIdProvider
from tests.web.conftest import PageFactory, screenshot

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def idp() -> Iterator[OpenIdProvider]:
    provider = OpenIdProvider()
    yield provider
    provider.stop()


def test_admin_adds_a_provider_and_a_person_logs_in_through_it(
    new_page: PageFactory, live: LiveServer, idp: OpenIdProvider
) -> None:
    slug = f"corp-{uuid.uuid4().hex[:6]}"
    client_id, secret = f"opscenter-{slug}", uuid.uuid4().hex
    idp.add_client(client_id, secret, f"{live.base}/sso/{slug}/callback")
    person = f"dana{uuid.uuid4().hex[:6]}"
    idp.add_account(person, password="idp-password-1", groups=["dba"])

    admin = new_page()
    admin.goto(f"{live.base}/sso")
    admin.get_by_text("Add a provider").click()
    form = admin.locator("#sso-form")
    form.get_by_label("Name").fill("Corp login")
    form.get_by_label("Slug (in URLs)").fill(slug)
    form.get_by_label("Issuer URL").fill(idp.issuer)
    form.get_by_label("Client id").fill(client_id)
    form.get_by_label("Client secret").fill(secret)
    form.get_by_label("Mapping rules (JSON, checked in order)").fill(
        json.dumps([{"value": "dba", "role": "operator"}])
    )
    form.get_by_role("button", name="Add provider").click()
    card = admin.locator(f"[data-provider='{slug}']")
    expect(card).to_contain_text("Corp login")
    expect(card.locator(".callback")).to_have_text(f"{live.base}/sso/{slug}/callback")
    expect(card.locator("table.rules")).to_contain_text("operator")
    expect(card).not_to_contain_text(secret)
    screenshot(admin, "sso")

    page = new_page(None)  # a fresh browser: nobody logged in
    page.goto(f"{live.base}/login?next=/schedules")
    page.get_by_role("button", name="Continue with Corp login").click()
    page.wait_for_url(f"{idp.issuer}/authorize?*")
    page.locator("#idp-user").fill(person)
    page.locator("#idp-password").fill("idp-password-1")
    page.locator("#idp-submit").click()
    page.wait_for_url(f"{live.base}/schedules")
    expect(page.locator("#current-user")).to_have_text(person)
    expect(page.locator("#current-role")).to_have_text("operator")

    page.locator("#logout").click()  # here, then at the provider, then back to /login
    page.wait_for_url(f"{live.base}/login")
    assert idp.logouts and idp.logouts[-1]["client_id"] == client_id
    page.goto(f"{live.base}/schedules")
    page.wait_for_url(f"{live.base}/login?next=/schedules")


def test_a_viewer_neither_sees_nor_changes_single_sign_on(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    name, password = f"viewer{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    r = admin_api.post(
        "/api/v1/users",
        json={
            "username": name,
            "email": f"{name}@example.com",
            "password": password,
            "role": "viewer",
        },
    )
    assert r.status_code == 201, r.text
    page = new_page(name, password)
    expect(page.get_by_role("link", name="Single sign-on")).to_have_count(0)
    page.goto(f"{live.base}/sso")
    expect(page.locator("#error-code")).to_have_text("FORBIDDEN")
    status = page.evaluate(
        """async () => {
            const csrf = decodeURIComponent(document.cookie.match(/csrf_token=([^;]*)/)[1]);
            const r = await fetch("/api/v1/sso/providers", {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({slug: "mine", name: "Mine", issuer: "https://idp.example.com",
                                      client_id: "c"}),
            });
            return r.status;
        }"""
    )
    assert status == 403
