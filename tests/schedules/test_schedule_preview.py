"""`POST /schedules/preview`: the next runs of a cron expression in a timezone, in words."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from opscenter.core.clock import utcnow
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error


def parse(ts: str) -> datetime:
    assert ts.endswith("Z")
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_next_runs_in_the_timezone_with_a_description(admin: httpx.AsyncClient) -> None:
    r = await admin.post(
        "/api/v1/schedules/preview",
        json={"cron_expression": "30  2 * * 1-5", "timezone": "Europe/Berlin", "count": 7},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cron_expression"] == "30 2 * * 1-5"
    assert "02:30" in body["description"] and "Monday through Friday" in body["description"]
    runs = [parse(ts) for ts in body["next_runs"]]
    assert len(runs) == 7 and runs == sorted(runs) and runs[0] > utcnow()
    for run in runs:
        local = run.astimezone(ZoneInfo("Europe/Berlin"))
        # 02:30 local, or 03:00 on a spring-forward date (the documented DST rule)
        assert (local.hour, local.minute) in {(2, 30), (3, 0)}
        assert local.weekday() < 5
    assert runs[-1] - runs[0] < timedelta(days=12)


async def test_defaults_to_five_runs_in_utc(admin: httpx.AsyncClient) -> None:
    r = await admin.post("/api/v1/schedules/preview", json={"cron_expression": "0 * * * *"})
    assert r.status_code == 200, r.text
    runs = [parse(ts) for ts in r.json()["next_runs"]]
    assert len(runs) == 5
    assert all(run.minute == 0 and run.tzinfo == UTC for run in runs)
    assert [b - a for a, b in itertools.pairwise(runs)] == [timedelta(hours=1)] * 4


async def test_bad_input_is_a_422(admin: httpx.AsyncClient) -> None:
    for body in (
        {"cron_expression": "61 * * * *"},
        {"cron_expression": "* * *"},
        {"cron_expression": "0 2 * * *", "timezone": "Mars/Olympus"},
        {"cron_expression": "0 2 * * *", "count": 0},
        {"cron_expression": "0 2 * * *", "count": 51},
        {"cron_expression": "0 2 * * *", "extra": 1},
    ):
        r = await admin.post("/api/v1/schedules/preview", json=body)
        assert_error(r, 422, "VALIDATION_ERROR")


async def test_needs_login_and_read_permission(api: Api, make_user: UserFactory) -> None:
    body = {"cron_expression": "0 2 * * *"}
    async with api.client() as anonymous:
        assert_error(
            await anonymous.post("/api/v1/schedules/preview", json=body), 401, "UNAUTHORIZED"
        )
    viewer = await make_user("viewer")
    async with viewer.client(api) as client:
        r = await client.post("/api/v1/schedules/preview", json=body)
    assert r.status_code == 200, r.text
