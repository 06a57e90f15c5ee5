"""The knowledge base in a real browser: search as you type with highlights, writing an
article with live preview, its history and diff; and what a viewer may do there."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot


def test_search_write_preview_and_history(new_page: PageFactory, live: LiveServer) -> None:
    page = new_page()
    # Help on every page: the backups page's link leads to the articles for it.
    page.goto(f"{live.base}/backups")
    page.locator("#page-help").click()
    expect(page.locator("#kb-help")).to_contain_text("How backups work")

    page.goto(f"{live.base}/knowledge")
    expect(page.locator(".kb-bars")).to_contain_text("Error codes")
    page.locator("#kb-q").press_sequentially("verificat", delay=30)  # still typing
    first = page.locator("#kb-hits li").first
    expect(first).to_contain_text("verif")
    expect(first.locator("mark").first).to_be_visible()

    word = f"zq{uuid.uuid4().hex[:8]}"
    page.locator("#kb-new").click()
    page.get_by_label("Title").fill(f"Failover drill {word}")
    page.get_by_label("Category").fill("Runbooks")
    page.get_by_label("Status").select_option("published")
    page.get_by_label("Tags").fill("drill, postgres")
    content = page.get_by_label("Content (Markdown)")
    content.fill(f"## Steps\n\n1. Promote the **{word}** standby\n\n<script>alert(1)</script>")
    expect(page.locator("#kb-preview strong")).to_have_text(word)
    expect(page.locator("#kb-preview")).to_contain_text("<script>alert(1)</script>")
    expect(page.locator("#kb-preview script")).to_have_count(0)
    screenshot(page, "knowledge-editor")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#kb-article h1")).to_have_text(f"Failover drill {word}")
    expect(page.locator("#kb-content h2")).to_have_text("Steps")

    page.locator("#kb-edit").click()
    page.get_by_label("Content (Markdown)").fill(f"## Steps\n\n1. Promote the **{word}** replica\n")
    page.get_by_label("What changed").fill("replica, not standby")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#kb-article")).to_contain_text("version 2")
    page.get_by_role("button", name="History").click()
    expect(page.locator("#kb-versions tbody tr")).to_have_count(2)
    expect(page.locator("#kb-versions")).to_contain_text("replica, not standby")
    expect(page.locator("#kb-diff .del").first).to_contain_text("standby")
    expect(page.locator("#kb-diff .add").first).to_contain_text("replica")

    page.goto(f"{live.base}/knowledge")
    page.locator("#kb-q").fill(word)
    expect(page.locator("#kb-hits li")).to_have_count(1)
    expect(page.locator("#kb-hits li mark").first).to_have_text(re.compile(word, re.I))
    screenshot(page, "knowledge")


def test_a_viewer_reads_and_votes_but_cannot_edit(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    name = f"viewer{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    article = admin_api.get(
        "/api/v1/knowledge-base/articles", params={"category": "Backups", "limit": 1}
    ).json()["items"][0]
    page = new_page(username=name, password=password)
    page.goto(f"{live.base}/knowledge")
    expect(page.locator("#kb-new")).to_have_count(0)
    page.goto(f"{live.base}/knowledge/{article['id']}")
    expect(page.locator("#kb-edit")).to_have_count(0)
    yes = page.locator('[data-kb-vote="true"]')
    before = int(page.locator("#kb-yes").inner_text())
    yes.click()
    expect(page.locator("#kb-yes")).to_have_text(str(before + 1))
    expect(yes).to_have_attribute("aria-pressed", "true")
    # The editor is refused, and the error page links the article for its code.
    page.goto(f"{live.base}/knowledge/{article['id']}/edit")
    expect(page.locator("#error-code")).to_have_text("FORBIDDEN")
    page.get_by_role("link", name="What does it mean?").click()
    expect(page.locator("#kb-help")).to_contain_text("FORBIDDEN")
