"""Incidents opened by an alert policy's `open_incident` action (one per alert, repeats
added to it), and filed in Jira when a Jira integration is enabled (a local server on
127.0.0.1 speaking Jira's create-issue API)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from opscenter.core.events import Event
from opscenter.models import Backup, Incident, StorageProvider
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, uid
from tests.incidents.test_incidents_api import INCIDENTS, seed_example

POLICIES = "/api/v1/notifications/policies"


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def failed_backup(api: Api) -> Backup:
    async with api.app.state.ctx.db.write_session() as s:
        storage = (await s.scalars(select(StorageProvider).order_by(StorageProvider.id))).first()
        assert storage is not None
        backup = Backup(
            team_id=storage.team_id,
            storage_id=storage.id,
            status="failed",
            db_type="files",
            database_name="x",
        )
        s.add(backup)
        await s.commit()
        return backup


async def incidents_of(api: Api, backup_id: int) -> list[Incident]:
    async with api.app.state.ctx.db.read_session() as s:
        stmt = select(Incident).where(
            Incident.source_type == "backup", Incident.source_id == backup_id
        )
        rows = await s.scalars(stmt)
        return list(rows)


def fail(api: Api, backup: Backup, type_: str = "backup.failed") -> None:
    data = {"backup_id": backup.id, "error": "disk full"}
    api.app.state.ctx.events.publish(Event(type_, data, team_id=backup.team_id))


async def test_policy_action_input_roles_and_removal(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    base = {"name": uid("p-"), "event_types": ["backup.*"], "min_severity": "error"}
    for bad in [
        {"severity": "urgent"},
        {"environment": "qa"},
        {"squad": "has space"},
        {"squad": ""},
        {"unknown": 1},
    ]:
        r = await admin.post(f"{POLICIES}", json={**base, "open_incident": bad})
        assert_error(r, 422, "VALIDATION_ERROR")
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        r = await c.post(f"{POLICIES}", json={**base, "open_incident": {}})
        assert_error(r, 403, "FORBIDDEN")
    r = await admin.post(f"{POLICIES}", json={**base, "open_incident": {"squad": "dba"}})
    assert r.status_code == 201, r.text
    policy = r.json()
    assert policy["open_incident"] == {
        "severity": "high",
        "environment": "production",
        "squad": "dba",
    }
    url = f"{POLICIES}/{policy['id']}"
    r = await admin.patch(url, json={"open_incident": {"severity": "critical"}})
    assert r.status_code == 200 and r.json()["open_incident"]["severity"] == "critical"
    r = await admin.patch(url, json={"open_incident": None})
    assert r.status_code == 200 and r.json()["open_incident"] is None
    assert (await admin.delete(url)).status_code == 204


@pytest.fixture
async def incident_policy(api: Api, admin: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    backup = await failed_backup(api)  # the team that owns the storage owns the policy
    r = await admin.post(
        f"{POLICIES}",
        json={
            "name": uid("inc-"),
            "event_types": ["backup.*"],
            "min_severity": "error",
            "open_incident": {"severity": "critical", "environment": "staging", "squad": "dba"},
            "team_id": backup.team_id,
        },
    )
    assert r.status_code == 201, r.text
    yield r.json()
    await admin.delete(f"{POLICIES}/{r.json()['id']}")


async def test_a_failed_backup_opens_one_incident_and_repeats_add_to_it(
    api: Api, admin: httpx.AsyncClient, incident_policy: dict[str, Any]
) -> None:
    backup = await failed_backup(api)
    fail(api, backup)

    async def opened() -> bool:
        return len(await incidents_of(api, backup.id)) == 1

    await eventually(opened)
    (incident,) = await incidents_of(api, backup.id)
    body = (await admin.get(f"{INCIDENTS}/{incident.id}")).json()
    assert body["source_type"] == "backup" and body["source_id"] == backup.id
    assert body["severity"] == "critical" and body["squad"] == "dba"
    assert body["environment"] == "staging" and body["status"] == "open"
    assert body["jira_id"] == f"INC-{incident.id}" and body["alert_count"] == 1
    assert f"Backup {backup.id} failed" in body["title"]
    assert incident_policy["name"] in body["description"]

    fail(api, backup, "backup.corrupt")  # the same target failing again: the same incident

    async def repeated() -> bool:
        found = await incidents_of(api, backup.id)
        return len(found) == 1 and found[0].alert_count == 2

    await eventually(repeated)
    timeline = (await admin.get(f"{INCIDENTS}/{incident.id}/timeline")).json()["items"]
    kinds = [e["kind"] for e in timeline]
    assert kinds[:2] == ["created", "raised_by"] and kinds[-1] == "alert_repeated"
    assert all(e["actor"] == "system" for e in timeline)
    # A person's report of the same alert lands in it too (one de-duplication).
    r = await admin.post(
        INCIDENTS, json=seed_example("dba", source_type="backup", source_id=backup.id)
    )
    assert r.status_code == 200 and r.json()["id"] == incident.id
    audit = (await admin.get("/api/v1/audit/logs", params={"limit": 1000})).json()["items"]
    mine = [e["action"] for e in audit if str(e.get("resource_id")) == str(incident.id)]
    assert "incident.create" in mine and "incident.alert_repeated" in mine


async def test_no_matching_policy_no_incident(
    api: Api, admin: httpx.AsyncClient, incident_policy: dict[str, Any]
) -> None:
    backup = await failed_backup(api)
    fail(api, backup, "backup.completed")  # info: under the policy's minimum severity
    r = await admin.patch(f"{POLICIES}/{incident_policy['id']}", json={"open_incident": None})
    assert r.status_code == 200
    fail(api, backup)  # matches, but the policy no longer opens incidents
    await asyncio.sleep(0.5)
    assert await incidents_of(api, backup.id) == []


# -- Jira ------------------------------------------------------------------------------------
class JiraServer:
    """Jira's REST API v2 create-issue on 127.0.0.1: POST /rest/api/2/issue answers
    201 {id, key, self}; `status` other than 201 answers an error."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.status = 201
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if self.path != "/rest/api/2/issue" or server.status != 201:
                    answer = {"errorMessages": ["Internal server error"], "errors": {}}
                    code = 404 if self.path != "/rest/api/2/issue" else server.status
                else:
                    number = 100 + len(server.requests)
                    answer = {
                        "id": str(10000 + number),
                        "key": f"OPS-{number}",
                        "self": f"{server.url}/rest/api/2/issue/{10000 + number}",
                    }
                    code = 201
                raw = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def jira_server() -> Iterator[JiraServer]:
    server = JiraServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.mark.usefixtures("allow_loopback")
async def test_jira_integration_files_the_incident(
    admin: httpx.AsyncClient, jira_server: JiraServer
) -> None:
    token = "jira-secret-token-42"
    r = await admin.post(
        "/api/v1/integrations/",
        json={
            "name": uid("jira-"),
            "type": "jira",
            "config": {
                "base_url": jira_server.url,
                "project_key": "OPS",
                "username": "bot@example.com",
                "events": ["incident.created"],
            },
            "credentials": {"api_token": token},
        },
    )
    assert r.status_code == 201, r.text
    integration = r.json()
    try:
        r = await admin.post(INCIDENTS, json=seed_example(uid("sq")))
        assert r.status_code == 201, r.text
        created = r.json()
        headers, sent = jira_server.requests[0]
        key = f"OPS-{100 + 1}"
        assert created["jira_id"] == key
        assert (await admin.get(f"{INCIDENTS}/{created['id']}")).json()["jira_id"] == key
        assert sent["fields"]["project"] == {"key": "OPS"}
        assert "Database connection pool exhausted" in sent["fields"]["summary"]
        expected = base64.b64encode(f"bot@example.com:{token}".encode()).decode()
        assert headers["authorization"] == f"Basic {expected}"
        timeline = (await admin.get(f"{INCIDENTS}/{created['id']}/timeline")).json()["items"]
        assert {"kind": "jira", "old_value": f"INC-{created['id']}", "new_value": key}.items() <= (
            timeline[-1].items()
        )

        jira_server.status = 500  # Jira down: the incident still opens, with INC-<id>
        r = await admin.post(INCIDENTS, json=seed_example(uid("sq")))
        assert r.status_code == 201, r.text
        down = r.json()
        assert down["jira_id"] == f"INC-{down['id']}"
        timeline = (await admin.get(f"{INCIDENTS}/{down['id']}/timeline")).json()["items"]
        assert timeline[-1]["kind"] == "jira_failed" and "HTTP 500" in timeline[-1]["new_value"]
        assert token not in json.dumps(timeline)
    finally:
        r = await admin.delete(f"/api/v1/integrations/{integration['id']}")
        assert r.status_code == 204, r.text
    r = await admin.post(INCIDENTS, json=seed_example(uid("sq")))
    assert r.json()["jira_id"] == f"INC-{r.json()['id']}"  # no integration: INC-<id>
    assert len(jira_server.requests) == 2


async def test_a_resource_rule_that_asks_opens_one_incident_without_a_policy(api: Api) -> None:
    team_id = (await failed_backup(api)).team_id
    rule_id = 900_000 + int(uid("")[-4:], 16)  # a rule id no other test uses
    key = f"resource_rule:{rule_id}:host:/data"

    def fire(alert_id: int, *, ask: bool = True) -> None:
        data = {
            "alert_id": alert_id,
            "rule_id": rule_id,
            "source": "host",
            "metric": "disk_used_percent",
            "label": "/data",
            "value": 97.0,
            "severity": "critical",
            "alert_severity": "critical",
            "status": "firing",
            "message": "disk_used_percent of /data is 97 (> 90)",
            "open_incident": ask,
        }
        api.app.state.ctx.events.publish(Event("resource_alert.fired", data, team_id=team_id))

    async def opened() -> list[Incident]:
        async with api.app.state.ctx.db.read_session() as s:
            return list(await s.scalars(select(Incident).where(Incident.alert_key == key)))

    fire(1, ask=False)  # the rule does not ask: nothing opens
    await asyncio.sleep(0.5)
    assert await opened() == []

    fire(2)
    await eventually(lambda: _count_is(opened, 1))
    (incident,) = await opened()
    assert incident.severity == "critical" and incident.alert_count == 1
    assert "resource rule" in incident.description

    fire(3)  # the same rule, source and disk firing again adds to the open incident
    await eventually(lambda: _alert_count_is(opened, 2))
    assert len(await opened()) == 1


async def _count_is(rows: Callable[[], Awaitable[list[Incident]]], n: int) -> bool:
    return len(await rows()) == n


async def _alert_count_is(rows: Callable[[], Awaitable[list[Incident]]], n: int) -> bool:
    found = await rows()
    return len(found) == 1 and found[0].alert_count == n
