"""The costs page in a real browser: import a FOCUS file and read its rejected-row report,
the summary with the month's forecast, the breakdown by another aggregate, a budget, a
credit and a recommendation dismissed; and a viewer who reads but cannot change."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.web.conftest import PageFactory, screenshot

HEADER = (
    "BillingPeriodStart,ChargePeriodStart,ChargePeriodEnd,ServiceProviderName,ServiceName,"
    "BilledCost,EffectiveCost,BillingCurrency,Tags"
)


def focus_file(service: str) -> bytes:
    day = datetime.now(UTC).date()
    month = day.replace(day=1).isoformat()
    tags = json.dumps({"team": "web"}).replace('"', '""')
    rows = [
        f'{month},{day}T00:00:00Z,{day}T23:00:00Z,AWS,{service},12.50,12.50,USD,"{tags}"',
        f"{month},{day}T00:00:00Z,{day}T23:00:00Z,AWS,{service},7.25,7.00,EUR,{{}}",
        f"{month},{day}T00:00:00Z,{day}T23:00:00Z,AWS,{service},lots,1,USD,{{}}",
    ]
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def test_import_summary_breakdown_budget_credit_and_recommendation(
    new_page: PageFactory, live: LiveServer
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    page = new_page()
    page.goto(f"{live.base}/finops")
    expect(page.get_by_role("heading", name="Costs", exact=True)).to_be_visible()
    expect(page.locator("body[data-finops-live=on]")).to_have_count(1)

    form = page.locator("#import-form")
    form.get_by_label("Cost file (CSV, UTF-8)").set_input_files(
        {"name": "bill.csv", "mimeType": "text/csv", "buffer": focus_file(service)}
    )
    form.get_by_role("button", name="Import").click()
    # The job's end arrives over the WebSocket and the page shows the report.
    row = page.locator("#imports tbody tr").first
    expect(row).to_contain_text("bill.csv")
    expect(row).to_contain_text("completed")
    row.get_by_text("1 rejected").click()
    expect(row.locator("table.rejected")).to_contain_text("BilledCost")

    usd = page.locator('#summary tr[data-currency="USD"]')
    expect(usd).to_contain_text("12.50")
    expect(usd.locator("td.forecast")).not_to_have_text("")
    expect(page.locator('#summary tr[data-currency="EUR"]')).to_contain_text("7.00")
    expect(page.locator("#finops-series")).to_be_visible()
    expect(page.locator("#breakdown")).to_contain_text(service)

    page.locator("#finops-filter").get_by_label("Break down by").select_option("provider")
    page.locator("#finops-filter").get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Breakdown by provider")).to_be_visible()
    expect(page.locator("#breakdown")).to_contain_text("AWS")
    page.locator("#finops-filter").get_by_label("or by tag").fill("team")
    page.locator("#finops-filter").get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Breakdown by tag:team")).to_be_visible()
    expect(page.locator("#breakdown")).to_contain_text("web")

    page.get_by_text("New budget").click()
    budget = page.locator("#budget-form")
    name = f"b-{uuid.uuid4().hex[:6]}"
    budget.get_by_label("Name").fill(name)
    budget.get_by_label("Service (empty: the whole team)").fill(service)
    budget.get_by_label("Amount per month").fill("20")
    budget.get_by_role("button", name="Create budget").click()
    row = page.locator(f'#budgets tr[data-budget="{name}"]')
    expect(row).to_contain_text("warning")  # 12.50 of 20: past the 50 % threshold

    page.get_by_text("New credit").click()
    credit = page.locator("#credit-form")
    cname = f"c-{uuid.uuid4().hex[:6]}"
    today = datetime.now(UTC).date()
    credit.get_by_label("Name").fill(cname)
    # A provider nothing here spends on: the credit stays unused, and it expires within the
    # warning window (not on its boundary, whatever the hour), so "Check now" flags it.
    credit.get_by_label("Provider (empty: any)").fill(f"unused-{cname}")
    credit.get_by_label("Amount").fill("5")
    credit.get_by_label("Starts on").fill(today.replace(day=1).isoformat())
    credit.get_by_label("Expires on").fill((today + timedelta(days=7)).isoformat())
    credit.get_by_role("button", name="Add credit").click()
    added = page.locator(f'#credits tr[data-credit="{cname}"]')
    expect(added).to_contain_text("5.00 USD")
    expect(added).to_contain_text("active")

    page.get_by_role("button", name="Check now").click()
    first = page.locator("#recommendations tbody tr", has_text=cname).first
    expect(first).to_be_visible()
    first.get_by_role("button", name="Dismiss").click()
    expect(page.locator("#recommendations .badge", has_text="dismissed").first).to_be_visible()
    screenshot(page, "finops")


def test_a_viewer_reads_costs_but_cannot_change_them(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    name = f"viewer{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin_api.post(
        "/api/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    page = new_page(username=name, password=password)
    expect(page.get_by_role("link", name="Costs")).to_be_visible()
    page.goto(f"{live.base}/finops")
    expect(page.get_by_role("heading", name="Costs", exact=True)).to_be_visible()
    expect(page.locator("#import-form")).to_have_count(0)
    expect(page.locator("#budget-form")).to_have_count(0)
    expect(page.locator("#credit-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Check now")).to_have_count(0)
    expect(page.get_by_role("button", name="Dismiss")).to_have_count(0)
    expect(page.locator("#storage-prices form")).to_have_count(0)
    status = page.evaluate(
        """async () => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch("/api/v1/finops/imports", {
                method: "POST",
                headers: {"Content-Type": "text/csv", "X-CSRF-Token": csrf},
                body: "date,service,cost,currency\\n2026-10-01,x,1,USD\\n",
            });
            return [r.status, (await r.json()).code];
        }"""
    )
    assert status == [403, "FORBIDDEN"]
