"""The shell: a sidebar grouped by area, built from the links the domains register, that
holds every link in one column at 1280 px, hides behind a keyboard-operable menu button at
phone width, marks the current page, and shows each user only the links they may open."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import Page, expect

from opscenter.web import nav
from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot

PHONE = {"width": 390, "height": 844}


def sidebar_links(page: Page) -> list[str]:
    return page.locator("#sidebar a").all_inner_texts()


def test_the_sidebar_holds_every_area_in_one_column(
    new_page: PageFactory, live: LiveServer
) -> None:
    page = new_page()
    page.goto(f"{live.base}/backups")
    sidebar = page.get_by_role("navigation", name="Main")
    groups = sidebar.locator(".nav-group").all_inner_texts()
    assert [g.lower() for g in groups] == [
        "backups",
        "operations",
        "security and compliance",
        "administration",
    ]
    links = sidebar.get_by_role("link")
    expect(links).to_have_count(sum(len(group.links) for group in nav.sidebar()))
    lefts = set()
    for link in links.all():
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None
        lefts.add(round(box["x"]))
    assert len(lefts) == 1, f"the links are not in one column: {lefts}"
    expect(page.locator("#menu-toggle")).to_be_hidden()

    current = sidebar.locator('[aria-current="page"]')
    expect(current).to_have_count(1)
    expect(current).to_have_text("Backups")
    page.goto(f"{live.base}/audit")
    expect(sidebar.locator('[aria-current="page"]')).to_have_text("Audit log")
    screenshot(page, "navigation")


def test_at_phone_width_the_menu_button_opens_the_sidebar_by_keyboard(
    new_page: PageFactory, live: LiveServer
) -> None:
    page = new_page(viewport=PHONE)
    page.goto(f"{live.base}/schedules")
    sidebar = page.locator("#sidebar")
    toggle = page.get_by_role("button", name="Menu")
    expect(sidebar).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")
    expect(toggle).to_be_focused()
    outline = toggle.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none", "the focused menu button shows no focus ring"
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(sidebar).to_be_visible()
    expect(sidebar.get_by_role("link", name="Dashboard")).to_be_focused()
    expect(sidebar.locator('[aria-current="page"]')).to_have_text("Schedules")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the open menu is {width} px wide on a phone"
    screenshot(page, "navigation-phone")

    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(toggle).to_be_focused()


def test_a_viewer_sees_no_admin_links(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    name = f"viewer{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=name, password=password)
    expect(page.locator("#current-role")).to_have_text("viewer")
    links = sidebar_links(page)
    assert "Backups" in links and "Servers" in links
    for admin_only in ("Users and teams", "API tokens", "Audit log"):
        assert admin_only not in links
    groups = [g.lower() for g in page.locator("#sidebar .nav-group").all_inner_texts()]
    assert "backups" in groups and "administration" not in groups
