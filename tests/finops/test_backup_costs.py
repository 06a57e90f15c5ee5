"""The platform's own costs from real backups (pg_dump of a real database into local
storage): bytes over time x the price per GB-month an admin set, and every
recommendation rule firing and not firing, with the status people give a finding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from opscenter.models import Backup
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, role_user
from tests.finops.helpers import BASE, own_team
from tests.schedules.helpers import make_schedule, uid
from tests.verify.helpers import make_server

GIB = 2**30


async def storage(admin: httpx.AsyncClient, path: Path) -> dict[str, Any]:
    path.mkdir()
    r = await admin.post(
        "/api/v1/storage/providers",
        json={"name": uid("st-"), "type": "local", "config": {"path": str(path)}},
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def backup(api: Api, admin: httpx.AsyncClient, server_id: int, db: str, sid: int) -> dict:
    r = await admin.post(
        "/api/v1/backups", json={"server_id": server_id, "database_name": db, "storage_id": sid}
    )
    assert r.status_code == 202, r.text
    await api.app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=120)
    made: dict[str, Any] = (await admin.get(f"/api/v1/backups/{r.json()['id']}")).json()
    assert made["status"] == "completed", made
    return made


async def age(api: Api, backup_id: int, hours: float) -> None:
    """Travel: the backup was made `hours` ago."""
    when = datetime.now(UTC) - timedelta(hours=hours)
    async with api.app.state.ctx.db.write_session() as session:
        await session.execute(
            update(Backup).where(Backup.id == backup_id).values(created_at=when, completed_at=when)
        )
        await session.commit()


async def recs(admin: httpx.AsyncClient) -> dict[tuple[str, int | None], dict[str, Any]]:
    r = await admin.post(f"{BASE}/recommendations/refresh")
    assert r.status_code == 200, r.text
    assert "idle_servers" in r.json()["skipped_rules"]
    items = (await admin.get(f"{BASE}/recommendations", params={"limit": 1000})).json()["items"]
    return {(i["rule"], i["subject_id"]): i for i in items}


@pytest.fixture
def source(source_db: str) -> str:
    return source_db


async def test_backup_storage_cost_and_the_rules(
    api: Api,
    admin: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_user: UserFactory,
    source: str,
    tmp_path: Path,
) -> None:
    dear = await storage(admin, tmp_path / "dear")
    cheap = await storage(admin, tmp_path / "cheap")
    server = await make_server(admin)
    made = await backup(api, admin, server["id"], source, dear["id"])
    size = made["size_bytes"]
    assert size > 0

    costs = (await admin.get(f"{BASE}/backup-costs")).json()
    assert dear["id"] in costs["unpriced_storage_ids"]

    # Prices: admins only, checked, another team's storage is not there.
    # A steep price, so a small test dump costs whole cents.
    price = {"price_per_gb_month": "1000", "currency": "USD"}
    operator = await role_user(api, admin_headers, "operator")
    async with operator.client(api) as op:
        assert_error(
            await op.put(f"{BASE}/storage-prices/{dear['id']}", json=price), 403, "FORBIDDEN"
        )
    for bad in ({**price, "price_per_gb_month": "-1"}, {**price, "currency": "usd"}, {}):
        assert_error(
            await admin.put(f"{BASE}/storage-prices/{dear['id']}", json=bad),
            422,
            "VALIDATION_ERROR",
        )
    assert_error(await admin.put(f"{BASE}/storage-prices/999999", json=price), 404, "NOT_FOUND")
    r = await admin.put(f"{BASE}/storage-prices/{dear['id']}", json=price)
    assert r.status_code == 200 and r.json()["price_per_gb_month"] == 1000, r.text

    # Stored for one GB-month's 730 hours: cost = GB x price.
    await age(api, made["id"], 730)
    costs = (await admin.get(f"{BASE}/backup-costs", params={"window": "60d"})).json()
    [mine] = [p for p in costs["by_provider"] if p["storage_id"] == dear["id"]]
    expected = size / GIB * 1000
    assert expected > 0.001
    assert mine["cost"] == pytest.approx(expected, rel=1e-3)
    assert mine["monthly_cost"] == pytest.approx(expected, rel=1e-3)
    assert (mine["stored_bytes"], mine["backups"], mine["currency"]) == (size, 1, "USD")
    target = [t for t in costs["by_target"] if t["database_name"] == source]
    assert target and target[0]["server_id"] == server["id"]
    # Half the window: half the cost.
    half = (await admin.get(f"{BASE}/backup-costs", params={"window": "today"})).json()
    [today_cost] = [p for p in half["by_provider"] if p["storage_id"] == dear["id"]]
    assert today_cost["cost"] < mine["cost"]
    by_provider = (
        await admin.get(f"{BASE}/breakdown", params={"window": "60d", "aggregate": "provider"})
    ).json()
    assert {(i["key"], i["currency"]) for i in by_provider["items"]} >= {(dear["name"], "USD")}

    # Rules: cheaper storage needs a cheaper price; the empty storage fires at once.
    found = await recs(admin)
    assert ("cheaper_storage", dear["id"]) not in found
    assert ("empty_storage", cheap["id"]) in found
    assert ("empty_storage", dear["id"]) not in found
    await admin.put(
        f"{BASE}/storage-prices/{cheap['id']}",
        json={"price_per_gb_month": "200", "currency": "USD"},
    )
    found = await recs(admin)
    move = found[("cheaper_storage", dear["id"])]
    assert move["estimated_monthly_saving"] == pytest.approx(size / GIB * 800, rel=1e-3)
    assert move["link"] == "/storage" and move["status"] == "open"
    await age(api, made["id"], 24 * 10)  # ten days old: not old enough to move
    assert ("cheaper_storage", dear["id"]) not in await recs(admin)

    # Retention: a schedule keeping one day, two backups, the older one three days old.
    schedule = await make_schedule(
        admin, server["id"], database_name=source, retention_days=1, storage_ids=[dear["id"]]
    )
    runs = []
    for _ in range(2):
        r = await admin.post(f"/api/v1/schedules/{schedule['id']}/run")
        assert r.status_code == 202, r.text
        await api.app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=120)
        runs.append((await admin.get(f"/api/v1/jobs/{r.json()['job_id']}")).json())
    assert ("retention_excess", schedule["id"]) not in await recs(admin)
    older = min(
        (await admin.get("/api/v1/backups", params={"schedule_id": schedule["id"]})).json()[
            "items"
        ],
        key=lambda b: b["id"],
    )
    await age(api, older["id"], 72)
    found = await recs(admin)
    excess = found[("retention_excess", schedule["id"])]
    assert excess["link"] == f"/schedules/{schedule['id']}"
    assert excess["estimated_monthly_saving"] == pytest.approx(
        older["size_bytes"] / GIB * 1000, rel=1e-3
    )

    # Credits about to expire unused: fires for the one in 10 days, not the one in 90.
    today = datetime.now(UTC).date()
    soon, later = [
        (
            await admin.post(
                f"{BASE}/credits",
                json={
                    "name": uid("cr-"),
                    "provider": uid("nobody-"),
                    "amount": "25",
                    "currency": "USD",
                    "starts_on": today.isoformat(),
                    "expires_on": (today + timedelta(days=days)).isoformat(),
                },
            )
        ).json()
        for days in (10, 90)
    ]
    found = await recs(admin)
    assert found[("credit_expiring", soon["id"])]["estimated_monthly_saving"] == 25.0
    assert ("credit_expiring", later["id"]) not in found

    # Status: dismissed stays dismissed over a refresh; viewers and other teams cannot.
    rec_id = found[("empty_storage", cheap["id"])]["id"]
    viewer = await role_user(api, admin_headers, "viewer")
    async with viewer.client(api) as v:
        assert_error(await v.post(f"{BASE}/recommendations/{rec_id}/dismiss"), 403, "FORBIDDEN")
    outsider = await own_team(api, admin, make_user)
    async with outsider.client as o:
        assert_error(await o.post(f"{BASE}/recommendations/{rec_id}/dismiss"), 404, "NOT_FOUND")
        assert (await o.get(f"{BASE}/recommendations")).json()["items"] == []
        assert (await o.get(f"{BASE}/backup-costs")).json()["by_provider"] == []
    r = await admin.post(f"{BASE}/recommendations/{rec_id}/dismiss")
    assert r.status_code == 200 and r.json()["status"] == "dismissed"
    assert (await recs(admin))[("empty_storage", cheap["id"])]["status"] == "dismissed"
    dismissed = (await admin.get(f"{BASE}/recommendations", params={"status": "dismissed"})).json()
    assert rec_id in [i["id"] for i in dismissed["items"]]
    assert (await admin.post(f"{BASE}/recommendations/{rec_id}/apply")).json()[
        "status"
    ] == "applied"
    assert_error(await admin.post(f"{BASE}/recommendations/999999/apply"), 404, "NOT_FOUND")
