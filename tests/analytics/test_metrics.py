"""Metrics, trends and predictions against figures worked out by hand from rows written
for one team; other tests' rows (other teams) never reach them."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

import httpx

from opscenter.core.clock import utcnow
from opscenter.models import (
    CostImport,
    CostRollup,
    Finding,
    Incident,
    Schedule,
    SecurityAsset,
    VerificationRun,
)
from tests.analytics.helpers import BASE, Team, add, backup, own_team
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error

NANO = 1_000_000_000


async def seed(api: Api, admin: httpx.AsyncClient, make_user: UserFactory) -> Team:
    team = await own_team(api, admin, make_user)
    now = utcnow()

    def ago(days: int) -> datetime:
        return now - timedelta(days=days)

    b1, *_ = await add(
        api,
        backup(team, "sales", ago(10), size=1000, duration=100, verification="checksum_ok"),
        backup(team, "sales", ago(9), size=3000, duration=200),
        backup(team, "sales", ago(8), "failed"),
        backup(team, "sales", ago(7), "interrupted"),
        backup(team, "sales", ago(6), "cancelled"),  # not finished: left out
        backup(team, "sales", ago(40), size=99999, duration=9),  # before the window
        backup(team, "hr", ago(2), size=500, duration=60, verification="restore_verified"),
    )
    await add(
        api,
        backup(team, "sales", ago(5), size=7777, duration=1, copy_of_id=b1.id),  # a copy
        backup(team, "sales", ago(5), size=7777, duration=1, imported=True),  # not made here
    )
    run = {"team_id": team.id, "backup_id": b1.id}
    await add(
        api,
        VerificationRun(
            **run, test_type="restore", status="passed", rto_seconds=30, created_at=ago(3)
        ),
        VerificationRun(
            **run, test_type="restore", status="passed", rto_seconds=90, created_at=ago(4)
        ),
        VerificationRun(**run, test_type="restore", status="failed", created_at=ago(2)),
        VerificationRun(**run, test_type="checksum", status="passed", created_at=ago(2)),
        VerificationRun(
            **run, test_type="restore", status="passed", rto_seconds=999, created_at=ago(45)
        ),
    )
    inc = {
        "team_id": team.id,
        "description": "",
        "severity": "high",
        "environment": "prod",
        "squad": "db",
    }
    await add(
        api,
        Incident(
            **inc,
            title="a",
            created_at=ago(5),
            acknowledged_at=ago(5) + timedelta(minutes=10),
            resolved_at=ago(5) + timedelta(hours=1),
        ),
        Incident(
            **inc, title="b", created_at=ago(3), acknowledged_at=ago(3) + timedelta(minutes=20)
        ),
        Incident(**inc, title="c", created_at=ago(50), acknowledged_at=ago(50)),
    )
    [asset] = await add(api, SecurityAsset(team_id=team.id, name="shop", kind="service"))
    f = {
        "team_id": team.id,
        "asset_id": asset.id,
        "scanner": "trivy",
        "identifier": "CVE-1",
        "title": "t",
        "first_seen": ago(1),
        "last_seen": ago(1),
        "due_at": now,
    }
    await add(
        api,
        Finding(**f, fingerprint=uuid_hex(), severity="critical", status="open"),
        Finding(**f, fingerprint=uuid_hex(), severity="high", status="open"),
        Finding(**f, fingerprint=uuid_hex(), severity="high", status="open"),
        Finding(**f, fingerprint=uuid_hex(), severity="high", status="fixed"),
    )
    [imp] = await add(
        api,
        CostImport(
            team_id=team.id,
            filename="c.csv",
            format="focus",
            sha256=uuid_hex(),
            size_bytes=1,
            status="completed",
        ),
    )
    roll = {
        "import_id": imp.id,
        "team_id": team.id,
        "dimension": "category",
        "value": "Usage",
        "currency": "USD",
        "lines": 1,
    }
    await add(
        api,
        CostRollup(
            **roll, day=ago(3).date(), billed_cost=13 * NANO, effective_cost=12 * NANO + NANO // 2
        ),
        CostRollup(**roll, day=date(2000, 1, 1), billed_cost=NANO, effective_cost=NANO),
    )
    sched = {"team_id": team.id, "server_id": team.server_id, "timezone": "UTC"}
    await add(
        api,
        Schedule(**sched, name="s1", database_name="sales", cron_expression="0 3 * * *"),
        Schedule(**sched, name="s2", database_name="hr", cron_expression="0 3 * * 1"),
        Schedule(
            **sched, name="s3", database_name="old", cron_expression="0 3 * * *", enabled=False
        ),
    )
    return team


def uuid_hex() -> str:
    return uuid.uuid4().hex


async def test_metrics_are_the_hand_computed_figures(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await seed(api, admin, make_user)
    async with team.client as c:
        r = await c.get(f"{BASE}/metrics", params={"window": "30d"})
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["window"]["days"] == 30
    # finished in the window: sales 10d, 9d, 8d (failed), 7d (interrupted); hr 2d
    assert m["backups"] == {
        "finished": 5,
        "completed": 3,
        "failed": 2,
        "success_rate": 60.0,
        "mean_duration_seconds": 120.0,  # (100 + 200 + 60) / 3
        "mean_size_bytes": 1500.0,  # (1000 + 3000 + 500) / 3
        "total_size_bytes": 4500,
    }
    targets = {t["database_name"]: t for t in m["targets"]}
    assert set(targets) == {"sales", "hr"}
    sales = targets["sales"]
    assert (sales["finished"], sales["completed"], sales["success_rate"]) == (4, 2, 50.0)
    assert (sales["mean_duration_seconds"], sales["mean_size_bytes"]) == (150.0, 2000.0)
    assert targets["hr"]["success_rate"] == 100.0
    assert m["verification"] == {
        "completed_backups": 3,
        "verified_backups": 2,
        "coverage_percent": 66.67,
    }
    assert m["restore_tests"] == {
        "runs": 3,
        "passed": 2,
        "mean_rto_seconds": 60.0,
        "max_rto_seconds": 90.0,
    }
    assert m["incidents"] == {
        "opened": 2,
        "acknowledged": 2,
        "resolved": 1,
        "mtta_seconds": 900.0,  # (600 + 1200) / 2
        "mttr_seconds": 3600.0,
    }
    assert {s["severity"]: s["count"] for s in m["open_findings"]} == {
        "critical": 1,
        "high": 2,
        "medium": 0,
        "low": 0,
        "info": 0,
    }
    assert m["spend"] == [{"currency": "USD", "effective_cost": 12.5}]
    # sales daily: last good 9 days ago > 1.5 days; hr weekly: 2 days ago < 10.5 days
    assert m["rpo"] == {
        "scheduled_targets": 2,
        "compliant": 1,
        "compliance_percent": 50.0,
        "late": [f"{team.server_id}/sales"],
    }


async def test_trends_per_step_and_bad_parameters(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await seed(api, admin, make_user)
    async with team.client as c:
        r = await c.get(
            f"{BASE}/trends", params={"metric": "backups", "window": "30d", "step": "1d"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["unit"], body["step_seconds"], len(body["points"])) == ("count", 86400, 30)
        assert sum(p["value"] for p in body["points"]) == 5
        whole = (
            await c.get(f"{BASE}/trends", params={"metric": "backup_success_rate", "step": "30d"})
        ).json()
        assert [p["value"] for p in whole["points"]] == [60.0]
        rto = (
            await c.get(f"{BASE}/trends", params={"metric": "restore_rto", "step": "30d"})
        ).json()
        assert [p["value"] for p in rto["points"]] == [60.0]
        mtta = (await c.get(f"{BASE}/trends", params={"metric": "mtta", "step": "30d"})).json()
        assert [p["value"] for p in mtta["points"]] == [900.0]
        assert_error(await c.get(f"{BASE}/trends", params={"step": "1m"}), 422, "VALIDATION_ERROR")
        assert_error(
            await c.get(f"{BASE}/trends", params={"window": "366d", "step": "1h"}),
            422,
            "VALIDATION_ERROR",
        )
        assert_error(
            await c.get(f"{BASE}/metrics", params={"window": "0d"}), 422, "VALIDATION_ERROR"
        )
        assert_error(await c.get(f"{BASE}/trends", params={"metric": "x"}), 422, "VALIDATION_ERROR")


async def test_prediction_extends_a_weekly_line_with_its_interval(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    now = utcnow()
    start = now - timedelta(days=84)
    # one backup a week, 100 bytes more each week: 1000, 1100, ..., 2100
    await add(
        api,
        *(
            backup(
                team, "grow", start + timedelta(days=7 * i + 1), size=1000 + 100 * i, duration=10
            )
            for i in range(12)
        ),
    )
    async with team.client as c:
        r = await c.get(f"{BASE}/predictions", params={"metric": "backup_size", "weeks": 2})
        assert r.status_code == 200, r.text
        [p] = r.json()["items"]
        assert p["weeks_with_data"] == 12 and p["slope_per_week"] == 100.0
        assert "Theil-Sen" in p["method"] and "95 %" in p["interval"]
        assert [(x["value"], x["low"], x["high"]) for x in p["points"]] == [
            (2200.0, 2200.0, 2200.0),
            (2300.0, 2300.0, 2300.0),
        ]
        few = (await c.get(f"{BASE}/predictions", params={"metric": "restore_rto"})).json()
        assert few["items"][0]["points"] == [] and few["items"][0]["reason"]
        every = (await c.get(f"{BASE}/predictions")).json()
        assert len(every["items"]) == 6


async def test_reads_need_a_login_and_the_permission(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    async with api.client() as anonymous:
        for path in ("metrics", "trends", "predictions", "insights", "dashboard-data", "reports"):
            assert_error(await anonymous.get(f"{BASE}/{path}"), 401, "UNAUTHORIZED")
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        for path in ("metrics", "trends", "predictions", "insights", "dashboard-data", "reports"):
            assert (await c.get(f"{BASE}/{path}")).status_code == 200, path
