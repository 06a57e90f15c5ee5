"""Bad input on every route, the outbound address policy on every URL field, permissions,
and secrets: shown once, encrypted at rest, never in a response, a log line or the audit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.conftest import Api
from tests.core.helpers import assert_error, role_user, uid
from tests.integrations.helpers import BASE, create, deliveries, publish, wait_deliveries
from tests.integrations.receiver import Receiver

from opscenter.models import Integration

INTERNAL_URLS = [
    "http://localhost:{port}/",
    "http://127.0.0.3:{port}/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://2130706433:{port}/",  # 127.0.0.1, decimal
    "http://0x7f000001:{port}/",  # 127.0.0.1, hex
    "http://0177.0.0.1:{port}/",  # 127.0.0.1, octal
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
]


def bodies(url: str) -> list[tuple[str, dict[str, Any], dict[str, str] | None]]:
    """Every type, with `url` in each of its URL fields."""
    events = ["backup.failed"]
    return [
        ("webhook", {"url": url, "events": events}, None),
        ("slack", {"events": events}, {"webhook_url": url}),
        ("teams", {"events": events}, {"webhook_url": url}),
        (
            "jira",
            {"base_url": url, "project_key": "OPS", "username": "u", "events": events},
            {"api_token": "t"},
        ),
        (
            "github_actions",
            {"base_url": url, "owner": "o", "repo": "r", "workflow_id": "w.yml", "events": events},
            {"token": "t"},
        ),
        (
            "gitlab_ci",
            {"base_url": url, "project_id": "1", "events": events},
            {"trigger_token": "t"},
        ),
        (
            "jenkins",
            {"base_url": url, "job_name": "j", "username": "u", "events": events},
            {"api_token": "t"},
        ),
    ]


async def count(iapi: Api) -> int:
    async with iapi.app.state.ctx.db.read_session() as session:
        return len((await session.scalars(select(Integration.id))).all())


@pytest.mark.parametrize("template", INTERNAL_URLS)
async def test_internal_addresses_refused_in_every_url_field(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver, template: str
) -> None:
    url = template.format(port=rx.port)
    before = await count(iapi)
    for type_, config, credentials in bodies(url):
        body = {"name": uid(), "type": type_, "config": config, "credentials": credentials}
        r = await iadmin.post(f"{BASE}/", json=body)
        detail = assert_error(r, 422, "VALIDATION_ERROR")["detail"]
        assert "internal address" in detail or "Cannot resolve" in detail, (type_, detail)
    assert await count(iapi) == before  # nothing half-written
    assert rx.requests == []


async def test_allowlisted_receiver_accepted_in_every_url_field(
    iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    for type_, config, credentials in bodies(rx.url):
        await create(iadmin, type_, config, credentials)


async def test_updates_pass_the_policy_too(iadmin: httpx.AsyncClient, rx: Receiver) -> None:
    hook = await create(iadmin, "webhook", {"url": rx.url, "events": ["job.*"]})
    bad = {"config": {"url": "http://169.254.169.254/", "events": ["job.*"]}}
    assert_error(await iadmin.patch(f"{BASE}/{hook['id']}", json=bad), 422, "VALIDATION_ERROR")
    slack = await create(iadmin, "slack", {"events": ["job.*"]}, {"webhook_url": rx.url})
    bad = {"credentials": {"webhook_url": "http://10.1.2.3/hook"}}
    assert_error(await iadmin.patch(f"{BASE}/{slack['id']}", json=bad), 422, "VALIDATION_ERROR")
    assert (await iadmin.get(f"{BASE}/{hook['id']}")).json()["config"]["url"] == rx.url


async def test_seed_002_put_updates_like_patch(iadmin: httpx.AsyncClient, rx: Receiver) -> None:
    hook = await create(iadmin, "webhook", {"url": rx.url, "events": ["job.*"]})
    name = uid("put-")
    r = await iadmin.put(
        f"{BASE}/{hook['id']}",
        json={"name": name, "config": {"url": rx.url, "events": ["backup.failed"]}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name and r.json()["events"] == ["backup.failed"]
    bad = {"config": {"url": "http://169.254.169.254/", "events": ["job.*"]}}
    assert_error(await iadmin.put(f"{BASE}/{hook['id']}", json=bad), 422, "VALIDATION_ERROR")
    assert (await iadmin.get(f"{BASE}/{hook['id']}")).json()["name"] == name


async def test_redirects_are_not_followed(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(iadmin, "webhook", {"url": f"{rx.url}/moved", "events": ["job.failed"]})
    rx.fail("/moved", 302, location="http://169.254.169.254/latest/meta-data/")
    rx.fail("/moved", 307, location=f"{rx.url}/elsewhere")
    r = await iadmin.post(f"{BASE}/{hook['id']}/test")
    result = r.json()
    assert not result["success"] and result["status_code"] == 302
    assert "redirects are not followed" in result["error"]
    publish(iapi, "job.failed", {"job_id": 1})
    log = await wait_deliveries(iadmin, hook["id"], lambda d: len(d) == 2 and d[0]["attempts"] >= 2)
    assert log[0]["attempts_log"][0]["status_code"] == 307  # the event's first attempt
    assert rx.on("/elsewhere") == []


BAD_CREATES: list[tuple[dict[str, Any], int, str]] = [
    ({"name": "x", "type": "webhook"}, 422, "VALIDATION_ERROR"),  # no config
    ({"name": "x", "type": "smtp", "config": {}}, 422, "VALIDATION_ERROR"),
    ({"name": "", "type": "webhook", "config": {}}, 422, "VALIDATION_ERROR"),
    ({"name": "x\x00", "type": "webhook", "config": {}}, 422, "VALIDATION_ERROR"),
    ({"name": "x", "type": "webhook", "config": {}, "team_id": 1}, 422, "VALIDATION_ERROR"),
    ({"name": "x", "type": "webhook", "config": {"url": "{rx}"}}, 422, "VALIDATION_ERROR"),
    (
        {"name": "x", "type": "webhook", "config": {"url": "{rx}", "events": []}},
        422,
        "VALIDATION_ERROR",
    ),
    (
        {"name": "x", "type": "webhook", "config": {"url": "{rx}", "events": ["Backup Failed"]}},
        422,
        "VALIDATION_ERROR",
    ),
    (
        {"name": "x", "type": "webhook", "config": {"url": "ftp://h/", "events": ["job.*"]}},
        422,
        "VALIDATION_ERROR",
    ),
    (
        {
            "name": "x",
            "type": "webhook",
            "config": {"url": "{rx}", "events": ["job.*"], "extra": 1},
        },
        422,
        "VALIDATION_ERROR",
    ),
    (
        {
            "name": "x",
            "type": "webhook",
            "config": {"url": "{rx}", "events": ["job.*"]},
            "credentials": {"token": "t"},
        },
        422,
        "VALIDATION_ERROR",
    ),
    (
        {"name": "x", "type": "slack", "config": {"events": ["job.*"]}},
        422,
        "VALIDATION_ERROR",
    ),  # no webhook_url
    (
        {
            "name": "x",
            "type": "jira",
            "config": {"base_url": "{rx}", "project_key": "ops", "username": "u", "events": ["*"]},
            "credentials": {"api_token": "t"},
        },
        422,
        "VALIDATION_ERROR",
    ),
    (
        {
            "name": "x",
            "type": "webhook",
            "config": {"url": "http://user:pw@127.0.0.1/", "events": ["job.*"]},
        },
        422,
        "VALIDATION_ERROR",
    ),
]


def _fill(value: Any, url: str) -> Any:
    if isinstance(value, str):
        return value.replace("{rx}", url)
    if isinstance(value, dict):
        return {k: _fill(v, url) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, url) for v in value]
    return value


@pytest.mark.parametrize(("body", "status", "code"), BAD_CREATES)
async def test_bad_creates_refused(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver, body: dict[str, Any], status: int, code: str
) -> None:
    before = await count(iapi)
    assert_error(await iadmin.post(f"{BASE}/", json=_fill(body, rx.url)), status, code)
    assert await count(iapi) == before


async def test_bad_input_on_every_route(iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver) -> None:
    hook = await create(iadmin, "webhook", {"url": rx.url, "events": ["job.*"]})
    one = f"{BASE}/{hook['id']}"
    # The same name twice.
    again = {"name": hook["name"], "type": "webhook", "config": {"url": rx.url, "events": ["*"]}}
    assert_error(await iadmin.post(f"{BASE}/", json=again), 409, "CONFLICT")
    # Unknown and malformed ids, on every {id} route.
    for method, path in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/health"),
        ("GET", "/webhooks"),
        ("GET", "/deliveries"),
        ("POST", "/test"),
        ("POST", "/sync"),
        ("POST", "/rotate-secret"),
        ("POST", "/deliveries/1/redeliver"),
    ]:
        json = {} if method == "PATCH" else None
        r = await iadmin.request(method, f"{BASE}/999999{path}", json=json)
        assert_error(r, 404, "NOT_FOUND")
        r = await iadmin.request(method, f"{BASE}/0{path}", json=json)
        assert_error(r, 422, "VALIDATION_ERROR")
    assert_error(await iadmin.post(f"{one}/deliveries/999999/redeliver"), 404, "NOT_FOUND")
    # Updates: unknown fields, bad config, a name taken: nothing changes.
    other = await create(iadmin, "webhook", {"url": rx.url, "events": ["job.*"]})
    for patch, status, code in [
        ({"role": "admin"}, 422, "VALIDATION_ERROR"),
        ({"config": {"url": rx.url}}, 422, "VALIDATION_ERROR"),
        ({"config": {"url": rx.url, "events": ["job.*"], "x": 1}}, 422, "VALIDATION_ERROR"),
        ({"name": other["name"]}, 409, "CONFLICT"),
        ({"is_active": "maybe"}, 422, "VALIDATION_ERROR"),
    ]:
        assert_error(await iadmin.patch(one, json=patch), status, code)
    after = (await iadmin.get(one)).json()
    assert after["name"] == hook["name"] and after["events"] == ["job.*"]
    # A type without a signing secret has nothing to rotate.
    slack = await create(iadmin, "slack", {"events": ["*"]}, {"webhook_url": f"{rx.url}/slack/x"})
    assert_error(await iadmin.post(f"{BASE}/{slack['id']}/rotate-secret"), 409, "CONFLICT")
    # Paging bounds.
    assert_error(await iadmin.get(f"{BASE}/?limit=0"), 422, "VALIDATION_ERROR")
    assert_error(await iadmin.get(f"{one}/deliveries?limit=5000"), 422, "VALIDATION_ERROR")


async def test_permissions(
    iapi: Api, iadmin_headers: dict[str, str], iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(iadmin, "webhook", {"url": rx.url, "events": ["job.*"]})
    one = f"{BASE}/{hook['id']}"
    for role in ("viewer", "operator"):
        user = await role_user(iapi, iadmin_headers, role)
        async with user.client(iapi) as c:
            assert (await c.get(f"{BASE}/")).status_code == 200
            assert (await c.get(f"{one}/deliveries")).status_code == 200
            for method, path in [
                ("POST", f"{BASE}/"),
                ("PATCH", one),
                ("DELETE", one),
                ("POST", f"{one}/test"),
                ("POST", f"{one}/sync"),
                ("POST", f"{one}/rotate-secret"),
            ]:
                r = await c.request(method, path, json={} if method != "DELETE" else None)
                assert_error(r, 403, "FORBIDDEN")
    async with iapi.client() as anonymous:
        assert_error(await anonymous.get(f"{BASE}/"), 401, "UNAUTHORIZED")


async def test_deliveries_of_other_teams_are_hidden(
    iapi: Api, iadmin_headers: dict[str, str], iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(iadmin, "webhook", {"url": rx.url, "events": ["job.*"]})
    publish(iapi, "job.failed", {"job_id": 1}, team_id=999_999)  # a team nobody is in
    publish(iapi, "job.failed", {"job_id": 2})
    await wait_deliveries(iadmin, hook["id"], lambda d: len(d) == 2)
    viewer = await role_user(iapi, iadmin_headers, "viewer")
    async with viewer.client(iapi) as c:
        visible = (await c.get(f"{BASE}/{hook['id']}/deliveries")).json()["items"]
    assert [d["payload"]["data"]["job_id"] for d in visible] == [2]


async def test_secrets_shown_once_sealed_and_never_logged(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "jira-super-secret-token"
    jira = await create(
        iadmin,
        "jira",
        {"base_url": rx.url, "project_key": "OPS", "username": "u", "events": ["backup.failed"]},
        {"api_token": token},
    )
    hook = await create(iadmin, "webhook", {"url": rx.url, "events": ["backup.failed"]})
    signing = hook["signing_secret"]
    rotated = (await iadmin.post(f"{BASE}/{hook['id']}/rotate-secret")).json()["signing_secret"]
    # Jira answers with an error that echoes the token: it must not reach the log.
    rx.fail("/rest/api/2/issue", 500, 500, 500, body=f"bad token {token}".encode())
    publish(iapi, "backup.failed", {"backup_id": 1, "server_id": 1, "database_name": "db"})
    await wait_deliveries(iadmin, jira["id"], lambda d: bool(d) and d[0]["status"] == "failed")

    creds = {"api_token": token}
    texts = [
        (await iadmin.get(f"{BASE}/")).text,
        (await iadmin.get(f"{BASE}/{jira['id']}")).text,
        (await iadmin.get(f"{BASE}/{hook['id']}")).text,
        (await iadmin.get(f"{BASE}/{jira['id']}/deliveries")).text,
        (await iadmin.get(f"{BASE}/{jira['id']}/health")).text,
        (await iadmin.patch(f"{BASE}/{jira['id']}", json={"credentials": creds})).text,
        (await iadmin.post(f"{BASE}/{jira['id']}/test")).text,
        (await iadmin.get("/api/v1/audit/logs?limit=200")).text,
    ]
    log = capsys.readouterr()
    texts += [log.out, log.err]
    for text in texts:
        for secret in (token, signing, rotated, signing.removeprefix("whsec_")):
            assert secret not in text
    assert "***" in (await deliveries(iadmin, jira["id"]))[-1]["last_error"]
    assert '"integration delivery attempt"' in log.out  # the attempts were logged

    async with iapi.app.state.ctx.db.read_session() as session:
        row = await session.get(Integration, jira["id"])
        assert row is not None and row.secrets_encrypted is not None
        assert token not in row.secrets_encrypted and token not in str(row.config)


async def test_addresses_are_checked_again_at_send_time(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    """A URL that was fine when saved but points inside now (a changed DNS answer, an
    edited row) is refused when sending: a permanent failure, never retried."""
    hook = await create(iadmin, "webhook", {"url": f"{rx.url}/ok", "events": ["job.failed"]})
    async with iapi.app.state.ctx.db.write_session() as session:
        row = await session.get(Integration, hook["id"])
        assert row is not None
        row.config = {"url": "http://169.254.169.254/latest/meta-data/"}
        await session.commit()
    publish(iapi, "job.failed", {"job_id": 1})
    (delivery,) = await wait_deliveries(
        iadmin, hook["id"], lambda d: bool(d) and d[0]["status"] == "failed"
    )
    assert delivery["attempts"] == 1 and delivery["last_status_code"] is None
    assert delivery["last_error"].startswith("permanent: refused:")
    assert "internal address" in delivery["last_error"]


async def test_jenkins_job_name_cannot_climb(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    before = await count(iapi)
    config = {"base_url": rx.url, "username": "u", "events": ["*"], "job_name": "a/../../script"}
    body = {"name": uid(), "type": "jenkins", "config": config, "credentials": {"api_token": "t"}}
    assert_error(await iadmin.post(f"{BASE}/", json=body), 422, "VALIDATION_ERROR")
    assert await count(iapi) == before
