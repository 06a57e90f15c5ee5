"""Cost files built in the test (FOCUS, AWS CUR, generic), a team of one's own per test
(so sums are exactly the test's own lines), and an upload that waits for its job."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import Api, CreatedUser, UserFactory
from tests.schedules.helpers import uid

BASE = "/api/v1/finops"
FOCUS_HEADER = [
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ServiceProviderName",
    "ServiceName",
    "ResourceId",
    "RegionId",
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "Tags",
]


def focus_row(
    day: str,
    service: str,
    cost: str,
    currency: str = "USD",
    *,
    effective: str | None = None,
    provider: str = "AWS",
    category: str = "Usage",
    tags: dict[str, str] | None = None,
    resource: str = "",
) -> list[str]:
    month = day[:8] + "01"
    return [
        f"{month}T00:00:00Z",
        f"{month}T00:00:00Z",
        f"{day}T00:00:00Z",
        f"{day}T23:59:59Z",
        category,
        provider,
        service,
        resource,
        "eu-west-1",
        cost,
        effective if effective is not None else cost,
        currency,
        json.dumps(tags or {}),
    ]


def to_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def focus_csv(rows: Iterable[Sequence[str]]) -> bytes:
    return to_csv(FOCUS_HEADER, rows)


@dataclass
class Team:
    id: int
    user: CreatedUser
    client: httpx.AsyncClient


async def own_team(api: Api, admin: httpx.AsyncClient, make_user: UserFactory) -> Team:
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("fin-")})).json()
    user = await make_user("operator", team_ids=[team["id"]])
    return Team(team["id"], user, user.client(api))


async def upload(
    client: httpx.AsyncClient, content: bytes, content_type: str = "text/csv", **params: Any
) -> httpx.Response:
    return await client.post(
        f"{BASE}/imports", content=content, params=params, headers={"Content-Type": content_type}
    )


async def imported(
    api: Api, client: httpx.AsyncClient, content: bytes, **params: Any
) -> dict[str, Any]:
    """Upload, wait for the import job, return the import with its report."""
    r = await upload(client, content, **params)
    assert r.status_code == 202, r.text
    await api.app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=60)
    detail: dict[str, Any] = (await client.get(f"{BASE}/imports/{r.json()['id']}")).json()
    return detail


def by_currency(totals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["currency"]: t for t in totals}
