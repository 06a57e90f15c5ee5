"""Summary, breakdown, credits and budgets against hand-computed figures, in a team of the
test's own; currencies are never summed across each other."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import event

from opscenter.core.events import Event
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, role_user
from tests.finops.helpers import BASE, by_currency, focus_csv, focus_row, imported, own_team

WINDOW = "2026-10-01,2026-10-08"
FIXTURE = [
    focus_row("2026-09-25", "Amazon RDS", "10"),  # the window before
    focus_row("2026-10-02", "Amazon RDS", "20", tags={"team": "db", "env": "prod"}),
    focus_row("2026-10-03", "Amazon S3", "5", effective="4", tags={"team": "web"}),
    focus_row("2026-10-03", "Object Storage", "7", "EUR", provider="Hetzner", tags={"team": "web"}),
    focus_row("2026-10-05", "Amazon RDS", "-2", category="Credit"),
    focus_row("2026-10-08", "Amazon RDS", "100"),  # the day after the window
]


def items(body: dict[str, object]) -> dict[tuple[str, str], float]:
    rows = body["items"]
    assert isinstance(rows, list)
    return {(i["key"], i["currency"]): i["effective_cost"] for i in rows}


async def test_summary_and_breakdowns_against_hand_computed_figures(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        assert (await imported(api, c, focus_csv(FIXTURE)))["rows_imported"] == 6
        summary = (await c.get(f"{BASE}/summary", params={"window": WINDOW, "step": "1d"})).json()
        br = {
            agg: (await c.get(f"{BASE}/breakdown", params={"window": WINDOW, "aggregate": agg}))
            for agg in ("service", "provider", "environment", "team", "tag:team", "category")
        }
    assert summary["window"] == {"start": "2026-10-01", "end": "2026-10-08", "days": 7}
    assert summary["previous_window"]["start"] == "2026-09-24"
    totals = by_currency(summary["totals"])
    assert set(totals) == {"USD", "EUR"}  # two totals, never one across currencies
    usd, eur = totals["USD"], totals["EUR"]
    assert (usd["billed_cost"], usd["effective_cost"]) == (23.0, 22.0)  # 20 + 5 - 2; 20 + 4 - 2
    assert (usd["previous_cost"], usd["change"], usd["change_percent"]) == (10.0, 12.0, 120.0)
    assert (eur["effective_cost"], eur["previous_cost"], eur["change_percent"]) == (7.0, 0.0, None)
    assert usd["backup_storage_cost"] == 0 and usd["credits_applied"] == 0
    daily = {(p["start"], p["currency"]): p["effective_cost"] for p in summary["series"]}
    assert daily == {
        ("2026-10-02", "USD"): 20.0,
        ("2026-10-03", "USD"): 4.0,
        ("2026-10-03", "EUR"): 7.0,
        ("2026-10-05", "USD"): -2.0,
    }
    assert items(br["service"].json()) == {
        ("Amazon RDS", "USD"): 18.0,
        ("Amazon S3", "USD"): 4.0,
        ("Object Storage", "EUR"): 7.0,
    }
    shares = {i["key"]: i["share_percent"] for i in br["service"].json()["items"]}
    assert shares == {"Amazon RDS": 81.82, "Amazon S3": 18.18, "Object Storage": 100.0}
    assert items(br["provider"].json()) == {("AWS", "USD"): 22.0, ("Hetzner", "EUR"): 7.0}
    assert items(br["environment"].json()) == {
        ("prod", "USD"): 20.0,
        ("(none)", "USD"): 2.0,
        ("(none)", "EUR"): 7.0,
    }
    assert list(items(br["team"].json()).values()) == [7.0, 22.0]
    assert items(br["tag:team"].json()) == {
        ("db", "USD"): 20.0,
        ("web", "USD"): 4.0,
        ("(untagged)", "USD"): -2.0,
        ("web", "EUR"): 7.0,
    }
    assert items(br["category"].json()) == {
        ("Usage", "USD"): 24.0,
        ("Credit", "USD"): -2.0,
        ("Usage", "EUR"): 7.0,
    }
    assert br["service"].json()["totals"] == [
        {"currency": "EUR", "amount": 7.0},
        {"currency": "USD", "amount": 22.0},
    ]


async def test_month_forecast_credits_and_budget_thresholds(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    today = datetime.now(UTC).date()
    first = today.replace(day=1)
    days_in_month = calendar.monthrange(today.year, today.month)[1]
    async with team.client as c:
        r = await c.post(
            f"{BASE}/budgets",
            json={
                "name": "db",
                "service": "Amazon RDS",
                "amount": "100",
                "currency": "USD",
                "thresholds": [80, 50, 100],
            },
        )
        assert r.status_code == 201, r.text
        assert (r.json()["state"], r.json()["thresholds"]) == ("ok", [50, 80, 100])
        assert_error(
            await c.post(f"{BASE}/budgets", json={"name": "db", "amount": "1", "currency": "USD"}),
            409,
            "CONFLICT",
        )
        credit = await c.post(
            f"{BASE}/credits",
            json={
                "name": "promo",
                "provider": "AWS",
                "amount": "50",
                "currency": "USD",
                "starts_on": first.isoformat(),
                "expires_on": (today + timedelta(days=10)).isoformat(),
            },
        )
        assert credit.status_code == 201, credit.text
        assert (credit.json()["applied"], credit.json()["remaining"]) == (0.0, 50.0)
        async with api.app.state.ctx.events.subscribe() as queue:
            rows = [focus_row(first.isoformat(), "Amazon RDS", "60")]
            rows.append(focus_row(first.isoformat(), "Amazon RDS", "9", "EUR"))
            await imported(api, c, focus_csv(rows))
            raised = drain(queue, "finops.budget_threshold")
        assert [(e.data["threshold"], e.data["state"]) for e in raised] == [(50, "warning")]
        budget = (await c.get(f"{BASE}/budgets")).json()["items"][0]
        assert (budget["spent"], budget["percent_used"], budget["crossed"]) == (60.0, 60.0, [50])
        summary = (await c.get(f"{BASE}/summary", params={"window": "month"})).json()
        credits = (await c.get(f"{BASE}/credits")).json()["items"]
        # a second look raises nothing new
        async with api.app.state.ctx.events.subscribe() as queue:
            assert (await c.post(f"{BASE}/budgets/evaluate")).status_code == 200
            assert drain(queue, "finops.budget_threshold") == []
            more = [focus_row(first.isoformat(), "Amazon RDS", "45")]
            await imported(api, c, focus_csv(more))
            raised = drain(queue, "finops.budget_threshold")
        assert [(e.data["threshold"], e.data["state"]) for e in raised] == [(100, "exceeded")]
        assert raised[0].data["severity"] == "error"
    usd = by_currency(summary["totals"])["USD"]
    assert usd["effective_cost"] == 60.0 and usd["credits_applied"] == 50.0
    assert usd["net_cost"] == 10.0
    assert usd["month_to_date"] == 10.0
    assert usd["forecast_month"] == round(10.0 / today.day * days_in_month, 6)
    eur = by_currency(summary["totals"])["EUR"]
    assert (eur["effective_cost"], eur["credits_applied"]) == (9.0, 0.0)  # a USD credit
    assert [(x["applied"], x["remaining"], x["status"]) for x in credits] == [
        (50.0, 0.0, "exhausted")
    ]


def drain(queue: object, type_: str) -> list[Event]:
    import asyncio

    assert isinstance(queue, asyncio.Queue)
    found = []
    while not queue.empty():
        event = queue.get_nowait()
        if event.type == type_:
            found.append(event)
    return found


async def test_spending_above_its_trailing_level_is_an_anomaly(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    today = datetime.now(UTC).date()
    steady = [
        focus_row((today - timedelta(days=d)).isoformat(), "Amazon EC2", "10") for d in range(1, 8)
    ]
    async with team.client as c:
        r = await c.post(
            f"{BASE}/budgets",
            json={
                "name": "ec2",
                "service": "Amazon EC2",
                "amount": "100000",
                "currency": "USD",
                "anomaly_percent": 50,
            },
        )
        assert r.status_code == 201
        async with api.app.state.ctx.events.subscribe() as queue:
            await imported(api, c, focus_csv(steady))
            assert drain(queue, "finops.anomaly") == []  # level spending: no anomaly
            await imported(api, c, focus_csv([focus_row(today.isoformat(), "Amazon EC2", "14")]))
            assert drain(queue, "finops.anomaly") == []  # 40 % above: under the 50 % bar
            await imported(api, c, focus_csv([focus_row(today.isoformat(), "Amazon EC2", "2")]))
            [anomaly] = drain(queue, "finops.anomaly")
    assert anomaly.data["day"] == today.isoformat()
    assert (anomaly.data["spent"], anomaly.data["trailing_level"]) == (16.0, 10.0)
    assert anomaly.data["above_percent"] == 60.0


async def test_bad_input_roles_and_other_teams(
    api: Api, admin: httpx.AsyncClient, admin_headers: dict[str, str], make_user: UserFactory
) -> None:
    for params in (
        {"window": "fortnight"},
        {"window": "0d"},
        {"window": "2026-10-08,2026-10-01"},
        {"window": "7d", "step": "0d"},
        {"window": "3000d", "step": "1d"},
    ):
        assert_error(await admin.get(f"{BASE}/summary", params=params), 422, "VALIDATION_ERROR")
    assert_error(
        await admin.get(f"{BASE}/breakdown", params={"aggregate": "colour"}),
        422,
        "VALIDATION_ERROR",
    )
    team = await own_team(api, admin, make_user)
    good = {
        "name": "c",
        "amount": "5",
        "currency": "USD",
        "starts_on": "2026-01-01",
        "expires_on": "2026-12-31",
    }
    async with team.client as c:
        for bad in (
            {**good, "amount": "-5"},
            {**good, "amount": "NaN"},
            {**good, "currency": "usd"},
            {**good, "expires_on": "2025-01-01"},
            {**good, "extra": 1},
            {**good, "team_id": 1},
        ):
            r = await c.post(f"{BASE}/credits", json=bad)
            assert r.status_code in (404, 422), r.text
        assert (await c.get(f"{BASE}/credits")).json()["total"] == 0
        for bad_budget in (
            {"name": "b", "amount": "0", "currency": "USD"},
            {"name": "b", "amount": "10", "currency": "USD", "thresholds": [50, 50]},
            {"name": "", "amount": "10", "currency": "USD"},
        ):
            assert_error(await c.post(f"{BASE}/budgets", json=bad_budget), 422, "VALIDATION_ERROR")
        credit = (await c.post(f"{BASE}/credits", json=good)).json()
        budget = (
            await c.post(f"{BASE}/budgets", json={"name": "b", "amount": "9", "currency": "EUR"})
        ).json()
    viewer = await role_user(api, admin_headers, "viewer")
    async with viewer.client(api) as v:
        assert (await v.get(f"{BASE}/summary")).status_code == 200
        assert_error(await v.post(f"{BASE}/credits", json=good), 403, "FORBIDDEN")
        assert_error(await v.post(f"{BASE}/budgets/evaluate"), 403, "FORBIDDEN")
        assert_error(await v.delete(f"{BASE}/credits/{credit['id']}"), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        assert_error(await anonymous.get(f"{BASE}/credits"), 401, "UNAUTHORIZED")
    outsider = await own_team(api, admin, make_user)
    async with outsider.client as o:
        assert_error(await o.delete(f"{BASE}/credits/{credit['id']}"), 404, "NOT_FOUND")
        assert_error(await o.get(f"{BASE}/budgets/{budget['id']}"), 404, "NOT_FOUND")
        assert_error(await o.delete(f"{BASE}/budgets/{budget['id']}"), 404, "NOT_FOUND")
        assert (await o.get(f"{BASE}/credits")).json()["items"] == []
    async with team.user.client(api) as c:
        assert (await c.delete(f"{BASE}/credits/{credit['id']}")).status_code == 204
        assert (await c.delete(f"{BASE}/budgets/{budget['id']}")).status_code == 204
        assert (await c.get(f"{BASE}/budgets")).json()["total"] == 0


async def test_budget_list_reads_the_month_in_a_bounded_number_of_queries(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    first = datetime.now(UTC).date().replace(day=1).isoformat()
    rows = [
        focus_row(first, "Amazon RDS", "30"),
        focus_row(first, "Amazon S3", "12"),
        focus_row(first, "Amazon RDS", "5", "EUR"),
    ]
    budgets = [
        {"name": "all", "amount": "100", "currency": "USD"},
        {"name": "rds", "service": "Amazon RDS", "amount": "60", "currency": "USD"},
        {"name": "s3", "service": "Amazon S3", "amount": "10", "currency": "USD"},
        {"name": "eur", "amount": "50", "currency": "EUR"},
    ]
    selects: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    engine = api.app.state.ctx.db.engine.sync_engine
    async with team.client as c:
        await imported(api, c, focus_csv(rows))
        for body in budgets:
            assert (await c.post(f"{BASE}/budgets", json=body)).status_code == 201
        event.listen(engine, "before_cursor_execute", count)
        try:
            listed = (await c.get(f"{BASE}/budgets")).json()["items"]
            listing, selects[:] = list(selects), []
            # Evaluating them all: one grouped read (then one for the answer's list).
            async with api.app.state.ctx.events.subscribe() as queue:
                evaluated = await c.post(f"{BASE}/budgets/evaluate")
                raised = drain(queue, "finops.budget_threshold")
        finally:
            event.remove(engine, "before_cursor_execute", count)
    got = {b["name"]: (b["spent"], b["percent_used"], b["state"]) for b in listed}
    assert got == {
        "all": (42.0, 42.0, "ok"),  # 30 + 12, the EUR line apart
        "rds": (30.0, 50.0, "warning"),  # the default thresholds hold 50
        "s3": (12.0, 120.0, "exceeded"),
        "eur": (5.0, 10.0, "ok"),
    }
    # One read of the month's roll-ups and one of the backups for four budgets, not 2 each.
    assert sum("cost_rollups" in s for s in listing) == 1
    assert sum("FROM backups" in s for s in listing) == 1
    assert evaluated.status_code == 200, evaluated.text
    assert evaluated.json()["items"] == listed
    # The budgets came after the import: their crossings are told now, each budget its own.
    assert sorted((e.data["name"], e.data["threshold"]) for e in raised) == [
        ("rds", 50),
        ("s3", 100),
    ]
    assert sum("cost_rollups" in s for s in selects) == 2
    assert sum("FROM backups" in s for s in selects) == 2
