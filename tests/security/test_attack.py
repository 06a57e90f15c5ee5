"""The ATT&CK Enterprise catalogue (`/secops/mitre`), technique ids on findings (SARIF
tags) and incidents (checked against the catalogue), and the coverage per tactic."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from opscenter.models import Incident
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.security.helpers import findings, imported, new_asset, own_team

MITRE = "/api/v1/secops/mitre"
POLICIES = "/api/v1/security/policies"
INCIDENTS = "/api/v1/infra/incidents"


def sigma_sarif() -> bytes:
    """SARIF whose rules carry Sigma's ATT&CK tags (`attack.t1059.001`)."""

    def rule(rule_id: str, tags: list[str]) -> dict[str, Any]:
        return {"id": rule_id, "properties": {"tags": tags}}

    def result(rule_id: str, line: int) -> dict[str, Any]:
        return {
            "ruleId": rule_id,
            "level": "error",
            "message": {"text": f"rule {rule_id} matched"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": "logs/host1.evtx"},
                        "region": {"startLine": line},
                    }
                }
            ],
        }

    return json.dumps(
        {
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "sigma",
                            "rules": [
                                rule("ps-encoded", ["attack.execution", "attack.t1059.001"]),
                                rule("lsass-dump", ["attack.credential-access", "attack.t1003"]),
                                rule("made-up", ["attack.t9999", "T1059"]),
                            ],
                        }
                    },
                    "results": [
                        result("ps-encoded", 10),
                        result("lsass-dump", 20),
                        result("made-up", 30),
                    ],
                }
            ],
        }
    ).encode()


def incident(squad: str, **over: Any) -> dict[str, Any]:
    return {
        "title": "Ransomware on the file server",
        "description": "Files renamed and encrypted after a PowerShell download cradle",
        "severity": "critical",
        "squad": squad,
        "environment": "production",
        **over,
    }


async def test_catalogue_is_attack_enterprise(admin: httpx.AsyncClient) -> None:
    tactics = (await admin.get(f"{MITRE}/tactics")).json()
    # ATT&CK v18 (the shipped data is 18.1): 14 tactics in the matrix's order.
    assert tactics["total"] == 14
    assert [t["id"] for t in tactics["items"]][:3] == ["TA0043", "TA0042", "TA0001"]
    assert tactics["items"][-1]["shortname"] == "impact"
    assert [t["order"] for t in tactics["items"]] == list(range(1, 15))
    execution = next(t for t in tactics["items"] if t["shortname"] == "execution")
    assert execution["name"] == "Execution" and execution["techniques"] == 17

    top = (await admin.get(f"{MITRE}/techniques", params={"limit": 1})).json()
    # 216 techniques and 475 sub-techniques, revoked and deprecated ones left out.
    assert top["total"] == 216
    both = (await admin.get(f"{MITRE}/techniques", params={"include_subtechniques": True})).json()
    assert both["total"] == 216 + 475
    ex = (await admin.get(f"{MITRE}/techniques", params={"tactic": "TA0002", "limit": 500})).json()
    assert ex["total"] == 17 and all("execution" in t["tactics"] for t in ex["items"])
    assert "T1059" in {t["id"] for t in ex["items"]}
    found = (
        await admin.get(
            f"{MITRE}/techniques", params={"q": "PowerShell", "include_subtechniques": True}
        )
    ).json()
    assert "T1059.001" in {t["id"] for t in found["items"]}

    ps = (await admin.get(f"{MITRE}/techniques/t1059.001")).json()
    assert (ps["name"], ps["parent_id"], ps["is_subtechnique"]) == ("PowerShell", "T1059", True)
    assert ps["url"] == "https://attack.mitre.org/techniques/T1059/001"
    assert_error(await admin.get(f"{MITRE}/techniques/T9999"), 404, "NOT_FOUND")
    assert_error(
        await admin.get(f"{MITRE}/techniques", params={"tactic": "nope"}), 404, "NOT_FOUND"
    )


async def test_coverage_counts_findings_and_incidents_of_the_team(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    other = await own_team(api, admin, make_user)
    async with team.client as c:
        asset = await new_asset(c, kind="host")
        await imported(c, sigma_sarif(), asset_id=asset["id"])
        tagged = {f["identifier"]: f["attack_techniques"] for f in await findings(c)}
        # attack.t9999 is no technique and is dropped; a bare T1059 tag is one.
        assert tagged == {
            "ps-encoded": ["T1059.001"],
            "lsass-dump": ["T1003"],
            "made-up": ["T1059"],
        }
        r = await c.post(
            INCIDENTS, json=incident("sec-a", attack_techniques=["t1486", "T1059", "T1486"])
        )
        assert r.status_code == 201, r.text
        assert r.json()["attack_techniques"] == ["T1486", "T1059"]
        cov = (await c.get(f"{MITRE}/coverage")).json()
    async with other.client as o:  # another team's findings and incidents do not count
        await imported(o, sigma_sarif(), asset_id=(await new_asset(o))["id"])
        theirs = (await o.get(f"{MITRE}/coverage")).json()

    assert cov["attack_version"] == "18.1" and cov["incidents_counted"] is True
    cells = {
        (t["shortname"], x["id"]): {k: v for k, v in x.items() if k != "policies"}
        for t in cov["tactics"]
        for x in t["techniques"]
    }
    # T1059: ps-encoded (via T1059.001) and made-up, and the incident.
    assert cells[("execution", "T1059")] == {
        "id": "T1059",
        "name": "Command and Scripting Interpreter",
        "findings": 2,
        "incidents": 1,
        "subtechniques": ["T1059.001"],
    }
    assert (cells[("credential-access", "T1003")]["findings"], cells[("impact", "T1486")]) == (
        1,
        {
            "id": "T1486",
            "name": "Data Encrypted for Impact",
            "findings": 0,
            "incidents": 1,
            "subtechniques": [],
        },
    )
    # A tactic counts a technique that a finding, an incident or an enabled policy names.
    for tactic in cov["tactics"]:
        named = [x for x in tactic["techniques"] if x["findings"] or x["incidents"]]
        assert tactic["techniques_referenced"] >= len(named)
        assert tactic["techniques_referenced"] == len(
            [x for x in tactic["techniques"] if x["findings"] or x["incidents"] or x["policies"]]
        )
    assert sum(t["techniques_total"] for t in cov["tactics"]) == sum(
        len(t["techniques"]) for t in cov["tactics"]
    )
    other_cells = {(t["shortname"], x["id"]): x for t in theirs["tactics"] for x in t["techniques"]}
    assert (
        other_cells[("execution", "T1059")]["findings"],
        other_cells[("impact", "T1486")]["incidents"],
    ) == (2, 0)


async def test_incident_techniques_are_checked_against_the_catalogue(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    async def count() -> int:
        async with api.app.state.ctx.db.read_session() as s:
            return int(await s.scalar(select(func.count(Incident.id))) or 0)

    team = await own_team(api, admin, make_user)
    viewer = await make_user("viewer", team_ids=[team.id])
    async with team.client as c:
        before = await count()
        for bad in (["T9999"], ["TA0002"], ["T1059", "powershell"]):
            r = await c.post(INCIDENTS, json=incident("sec-b", attack_techniques=bad))
            assert_error(r, 422, "UNKNOWN_ATTACK_TECHNIQUE")
        too_long = await c.post(INCIDENTS, json=incident("sec-b", attack_techniques=["T" * 17]))
        assert_error(too_long, 422, "VALIDATION_ERROR")
        assert await count() == before

        made = (await c.post(INCIDENTS, json=incident("sec-b"))).json()
        assert made["attack_techniques"] == []
        url = f"{INCIDENTS}/{made['id']}"
        assert_error(
            await c.patch(url, json={"attack_techniques": ["T1059", "T0000"]}),
            422,
            "UNKNOWN_ATTACK_TECHNIQUE",
        )
        assert (await c.get(url)).json()["attack_techniques"] == []
        changed = await c.patch(url, json={"attack_techniques": ["T1566.001"]})
        assert changed.status_code == 200 and changed.json()["attack_techniques"] == ["T1566.001"]
    async with viewer.client(api) as v:
        assert (await v.get(f"{MITRE}/coverage")).status_code == 200
        assert (await v.get(f"{MITRE}/tactics")).status_code == 200
        assert_error(await v.patch(url, json={"attack_techniques": []}), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        for path in ("tactics", "techniques", "techniques/T1059", "coverage"):
            assert_error(await anonymous.get(f"{MITRE}/{path}"), 401, "UNAUTHORIZED")


async def test_coverage_counts_enabled_policies_and_policies_name_known_techniques(
    api: Api, admin: httpx.AsyncClient
) -> None:
    async def cell(tactic: str, technique: str) -> dict[str, Any]:
        cov = (await admin.get(f"{MITRE}/coverage")).json()
        found = next(t for t in cov["tactics"] if t["shortname"] == tactic)["techniques"]
        return next(x for x in found if x["id"] == technique)

    # Every built-in policy names techniques of the catalogue.
    for p in (await admin.get(POLICIES, params={"limit": 1000})).json()["items"]:
        for tid in p["attack"]:
            assert (await admin.get(f"{MITRE}/techniques/{tid}")).status_code == 200, tid

    before = await cell("execution", "T1059")
    body = {
        "key": f"custom.attack-{uuid.uuid4().hex[:8]}",
        "check": "open_ports",
        "title": "Interpreter reachable",
        "parameters": {"ports": [5432]},
        "attack": ["T1059.001"],
    }
    bad = await admin.post(POLICIES, json={**body, "attack": ["T1059.001", "T9999"]})
    assert_error(bad, 422, "UNKNOWN_ATTACK_TECHNIQUE")
    made = await admin.post(POLICIES, json=body)
    assert made.status_code == 201, made.text
    after = await cell("execution", "T1059")
    assert after["policies"] == before["policies"] + 1
    assert "T1059.001" in after["subtechniques"]

    url = f"{POLICIES}/{made.json()['id']}"
    assert_error(await admin.put(url, json={"attack": ["T0000"]}), 422, "UNKNOWN_ATTACK_TECHNIQUE")
    assert (await admin.get(url)).json()["attack"] == ["T1059.001"]
    assert (await admin.put(url, json={"enabled": False})).status_code == 200
    assert (await cell("execution", "T1059"))["policies"] == before["policies"]
