"""A team with an operator, and the compliance API's paths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import Api, CreatedUser, UserFactory
from tests.schedules.helpers import uid

FRAMEWORKS = "/api/v1/audit/frameworks"
EVIDENCE = "/api/v1/audit/evidence"
REPORTS = "/api/v1/audit/reports"


@dataclass
class Team:
    id: int
    user: CreatedUser
    client: httpx.AsyncClient


async def own_team(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, role: str = "operator"
) -> Team:
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("cmp-")})).json()
    user = await make_user(role, team_ids=[team["id"]])
    return Team(team["id"], user, user.client(api))


def z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def assess(
    client: httpx.AsyncClient, framework: str, start: datetime, end: datetime
) -> dict[str, Any]:
    r = await client.get(
        f"{FRAMEWORKS}/{framework}/assessment", params={"start": z(start), "end": z(end)}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def requirement(assessment: dict[str, Any], rid: str) -> dict[str, Any]:
    [found] = [r for r in assessment["requirements"] if r["id"] == rid]
    return found


def control(assessment: dict[str, Any], cid: str) -> dict[str, Any]:
    for r in assessment["requirements"]:
        for c in r["controls"]:
            if c["id"] == cid:
                found: dict[str, Any] = c
                return found
    raise AssertionError(f"control {cid} is in no requirement")


async def add_evidence(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"title": uid("doc-"), "link": "https://docs.example.com/policy.pdf", **fields}
    r = await client.post(EVIDENCE, json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data
