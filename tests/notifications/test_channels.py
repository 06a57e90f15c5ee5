"""Channels: CRUD with secrets encrypted and never shown; `POST /notifications/test`
against real local receivers speaking each service's protocol; the SSRF guard."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from opscenter.models import NotificationChannel
from tests.conftest import Api, UserFactory
from tests.notifications.conftest import Mailbox, Receiver, TeamSetup, assert_error, uid

BASE = "/api/v1/notifications"
SLACK_TOKEN = "XXXXslacksecretXXXX"


async def create(
    admin: httpx.AsyncClient, team: TeamSetup, kind: str, config: dict[str, Any]
) -> dict[str, Any]:
    r = await admin.post(
        f"{BASE}/channels",
        json={"name": uid(f"{kind}-"), "type": kind, "config": config, "team_id": team.id},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def send_test(admin: httpx.AsyncClient, channel_id: int) -> dict[str, Any]:
    r = await admin.post(
        f"{BASE}/test", json={"channel_id": channel_id, "message": "Backup failed for app_db"}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def stored(api: Api, channel_id: int) -> NotificationChannel | None:
    async with api.app.state.ctx.db.read_session() as session:
        row: NotificationChannel | None = await session.scalar(
            select(NotificationChannel).where(NotificationChannel.id == channel_id)
        )
        return row


@pytest.mark.usefixtures("allow_loopback")
async def test_slack_secret_encrypted_never_returned_and_delivered(
    api: Api, admin: httpx.AsyncClient, team: TeamSetup, receiver: Callable[..., Receiver]
) -> None:
    slack = receiver(reply=b"ok")  # what Slack's incoming webhooks answer
    url = f"{slack.base}/services/T0001/B0001/{SLACK_TOKEN}"
    channel = await create(admin, team, "slack", {"webhook_url": url, "channel": "#alerts"})
    assert channel["has_secret"] is True and channel["secret_fields"] == ["webhook_url"]
    assert channel["config"] == {"channel": "#alerts"}
    assert channel["target_host"] == "127.0.0.1"
    listed = await admin.get(f"{BASE}/channels", params={"limit": 1000})
    for text in (
        str(channel),
        listed.text,
        (await admin.get(f"{BASE}/channels/{channel['id']}")).text,
    ):
        assert SLACK_TOKEN not in text
    row = await stored(api, channel["id"])
    assert row is not None and row.secrets_encrypted and SLACK_TOKEN not in row.secrets_encrypted
    assert SLACK_TOKEN not in str(row.config)

    result = await send_test(admin, channel["id"])
    assert result == {"channel_id": channel["id"], "delivered": True, "error": None}
    [req] = slack.requests
    assert req.path == f"/services/T0001/B0001/{SLACK_TOKEN}"
    payload = req.json()
    assert payload["channel"] == "#alerts"
    assert payload["attachments"][0]["text"] == "Backup failed for app_db"
    after = (await admin.get(f"{BASE}/channels/{channel['id']}")).json()
    assert after["last_success_at"] is not None and after["last_error"] is None
    # The audit trail names the channel, never the URL.
    audit = await admin.get("/api/v1/audit/logs", params={"limit": 20})
    assert SLACK_TOKEN not in audit.text


@pytest.mark.usefixtures("allow_loopback")
async def test_discord_ntfy_and_generic_webhook_protocols(
    admin: httpx.AsyncClient, team: TeamSetup, receiver: Callable[..., Receiver]
) -> None:
    discord, ntfy, hook = receiver(), receiver(), receiver()
    channels = [
        await create(
            admin, team, "discord", {"webhook_url": f"{discord.base}/api/webhooks/42/tok-{uid()}"}
        ),
        await create(
            admin, team, "ntfy", {"url": f"{ntfy.base}/ops-alerts", "token": "tk_secret123"}
        ),
        await create(admin, team, "webhook", {"url": f"{hook.base}/hooks/opscenter?key=s3cret"}),
    ]
    for channel in channels:
        assert (await send_test(admin, channel["id"]))["delivered"] is True
    [d] = discord.requests
    assert d.path.startswith("/api/webhooks/42/tok-")
    assert "Backup failed for app_db" in d.json()["content"]
    [n] = ntfy.requests
    assert n.json()["topic"] == "ops-alerts" and n.json()["message"] == "Backup failed for app_db"
    assert n.headers["Authorization"] == "Bearer tk_secret123"
    [h] = hook.requests
    assert h.path == "/hooks/opscenter?key=s3cret"
    body = h.json()
    assert body["title"] == "opscenter test notification"
    assert body["message"] == "Backup failed for app_db" and body["type"] == "info"
    assert channels[1]["config"] == {"url": f"{ntfy.base}/ops-alerts"}  # token kept secret


@pytest.mark.usefixtures("allow_loopback")
async def test_teams_workflow_over_https(
    admin: httpx.AsyncClient,
    team: TeamSetup,
    receiver: Callable[..., Receiver],
    loopback_cert: tuple[Path, ssl.SSLContext],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert_path, context = loopback_cert
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))  # trust our receiver's cert
    teams = receiver(tls=context)
    url = (
        f"{teams.base}/workflows/abc123/triggers/manual/paths/invoke"
        "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=sigSECRET"
    )
    channel = await create(admin, team, "teams", {"webhook_url": url})
    assert "sigSECRET" not in str(channel)
    assert (await send_test(admin, channel["id"]))["delivered"] is True
    [req] = teams.requests
    assert req.path.startswith("/workflows/abc123/triggers/manual/paths/invoke?")
    assert "sig=sigSECRET" in req.path
    card = req.json()
    assert card["type"] == "message"
    assert card["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert "Backup failed for app_db" in str(card["attachments"][0]["content"])


@pytest.mark.usefixtures("allow_loopback")
async def test_email_over_smtp(
    admin: httpx.AsyncClient, team: TeamSetup, smtp_server: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp_server
    channel = await create(
        admin,
        team,
        "email",
        {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "security": "none",
            "from_address": "opscenter@example.com",
            "to": ["oncall@example.com", "dba@example.com"],
        },
    )
    assert channel["has_secret"] is False
    assert (await send_test(admin, channel["id"]))["delivered"] is True
    assert len(mailbox.messages) == 2  # one message per recipient
    for message in mailbox.messages:
        assert message["Subject"] == "opscenter test notification"
        assert "opscenter@example.com" in message["From"]
        assert "Backup failed for app_db" in message.as_string()
    recipients = sorted(r for _, rcpt in mailbox.envelopes for r in rcpt)
    assert recipients == ["dba@example.com", "oncall@example.com"]


@pytest.mark.usefixtures("allow_loopback")
async def test_failing_receiver_recorded_without_secret(
    admin: httpx.AsyncClient, team: TeamSetup, receiver: Callable[..., Receiver]
) -> None:
    broken = receiver(status=500)
    channel = await create(admin, team, "webhook", {"url": f"{broken.base}/hook/{SLACK_TOKEN}"})
    result = await send_test(admin, channel["id"])
    assert result["delivered"] is False and result["error"]
    assert SLACK_TOKEN not in result["error"]
    after = (await admin.get(f"{BASE}/channels/{channel['id']}")).json()
    assert after["last_error"] == result["error"] and after["last_success_at"] is None


@pytest.mark.usefixtures("allow_loopback")
async def test_redirect_to_a_forbidden_address_is_not_followed(
    admin: httpx.AsyncClient, team: TeamSetup, receiver: Callable[..., Receiver]
) -> None:
    forbidden = receiver(host="127.0.0.2")  # loopback, but not allow-listed
    bouncer = receiver(redirect_to=f"{forbidden.base}/steal")
    channel = await create(admin, team, "webhook", {"url": f"{bouncer.base}/hook"})
    result = await send_test(admin, channel["id"])
    assert result["delivered"] is False and "302" in result["error"]
    assert len(bouncer.requests) == 1 and forbidden.requests == []
    # Pointing the channel at the forbidden receiver directly is refused too.
    r = await admin.patch(
        f"{BASE}/channels/{channel['id']}", json={"config": {"url": forbidden.base}}
    )
    assert_error(r, 422, "OUTBOUND_BLOCKED")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
        # Loopback names need no DNS answer to be refused (RFC 6761), in any spelling.
        "http://localhost.:9/hook",
        "http://LocalHost./hook",
        "http://api.localhost/hook",
    ],
)
async def test_internal_addresses_refused(
    api: Api, admin: httpx.AsyncClient, team: TeamSetup, url: str
) -> None:
    before = (await admin.get(f"{BASE}/channels", params={"limit": 1})).json()["total"]
    for kind, config in [
        ("webhook", {"url": url}),
        ("slack", {"webhook_url": url.replace("/hook", "") + "/services/T1/B1/C1"}),
    ]:
        r = await admin.post(
            f"{BASE}/channels",
            json={"name": uid(), "type": kind, "config": config, "team_id": team.id},
        )
        assert_error(r, 422, "OUTBOUND_BLOCKED")
        assert "OPSCENTER_OUTBOUND_ALLOWLIST" in r.json()["detail"]
    assert (await admin.get(f"{BASE}/channels", params={"limit": 1})).json()["total"] == before


async def test_allowlist_is_checked_again_at_send_time(
    api: Api, admin: httpx.AsyncClient, team: TeamSetup, receiver: Callable[..., Receiver]
) -> None:
    from opscenter.core.outbound import OutboundPolicy

    hook = receiver()
    ctx = api.app.state.ctx
    saved = ctx.outbound
    ctx.outbound = OutboundPolicy(["127.0.0.1"])
    try:
        channel = await create(admin, team, "webhook", {"url": f"{hook.base}/hook"})
    finally:
        ctx.outbound = saved  # the admin removes the allowlist entry
    r = await admin.post(f"{BASE}/test", json={"channel_id": channel["id"]})
    assert_error(r, 422, "OUTBOUND_BLOCKED")
    assert hook.requests == []


@pytest.mark.usefixtures("allow_loopback")
async def test_update_keeps_secrets_and_delete(
    api: Api, admin: httpx.AsyncClient, team: TeamSetup, receiver: Callable[..., Receiver]
) -> None:
    slack = receiver(reply=b"ok")  # what Slack's incoming webhooks answer
    url = f"{slack.base}/services/T0001/B0001/{SLACK_TOKEN}"
    channel = await create(admin, team, "slack", {"webhook_url": url})
    r = await admin.patch(
        f"{BASE}/channels/{channel['id']}",
        json={"name": uid("renamed-"), "config": {"channel": "#dba"}, "is_enabled": False},
    )
    assert r.status_code == 200, r.text
    assert r.json()["config"] == {"channel": "#dba"} and r.json()["is_enabled"] is False
    assert (await send_test(admin, channel["id"]))["delivered"] is True
    assert slack.requests[0].path.endswith(SLACK_TOKEN)  # the secret survived the update
    # A bad update changes nothing.
    r = await admin.patch(
        f"{BASE}/channels/{channel['id']}", json={"config": {"webhook_url": "not a url"}}
    )
    assert_error(r, 422, "VALIDATION_ERROR")
    assert (await admin.get(f"{BASE}/channels/{channel['id']}")).json()["config"] == {
        "channel": "#dba"
    }
    assert (await admin.delete(f"{BASE}/channels/{channel['id']}")).status_code == 204
    assert_error(await admin.get(f"{BASE}/channels/{channel['id']}"), 404, "NOT_FOUND")
    assert await stored(api, channel["id"]) is None


@pytest.mark.usefixtures("allow_loopback")
async def test_put_updates_a_channel_like_patch(
    admin: httpx.AsyncClient, team: TeamSetup, receiver: Callable[..., Receiver]
) -> None:
    slack = receiver(reply=b"ok")
    channel = await create(admin, team, "slack", {"webhook_url": f"{slack.base}/services/T/B/C"})
    body = {"name": uid("put-"), "config": {"channel": "#alerts"}, "is_enabled": False}
    r = await admin.put(f"{BASE}/channels/{channel['id']}", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == body["name"] and r.json()["is_enabled"] is False
    assert r.json()["config"] == {"channel": "#alerts"}
    r = await admin.put(f"{BASE}/channels/{channel['id']}", json={"is_enabled": "maybe"})
    assert_error(r, 422, "VALIDATION_ERROR")
    assert (await admin.get(f"{BASE}/channels/{channel['id']}")).json()["is_enabled"] is False


@pytest.mark.usefixtures("allow_loopback")
async def test_bad_input_is_refused_and_nothing_written(
    api: Api,
    admin: httpx.AsyncClient,
    team: TeamSetup,
    make_user: UserFactory,
    receiver: Callable[..., Receiver],
) -> None:
    hook = receiver()
    good = {
        "name": uid(),
        "type": "webhook",
        "config": {"url": f"{hook.base}/h"},
        "team_id": team.id,
    }
    before = (await admin.get(f"{BASE}/channels", params={"limit": 1})).json()["total"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "type": "carrier-pigeon"}, "VALIDATION_ERROR"),
        ({**good, "config": {}}, "VALIDATION_ERROR"),
        ({**good, "config": {"url": "ftp://127.0.0.1/x"}}, "VALIDATION_ERROR"),
        ({**good, "config": {"url": f"{hook.base}/h", "extra": 1}}, "VALIDATION_ERROR"),
        ({**good, "secret_smuggled": True}, "VALIDATION_ERROR"),
        ({**good, "name": ""}, "VALIDATION_ERROR"),
        ({**good, "name": "a\x00b"}, "VALIDATION_ERROR"),
        (
            {**good, "type": "slack", "config": {"webhook_url": f"{hook.base}/services/T1"}},
            "VALIDATION_ERROR",
        ),
        (
            {**good, "type": "slack", "config": {"webhook_url": f"{hook.base}/s/T-1/B!/C"}},
            "VALIDATION_ERROR",
        ),
        (
            {**good, "type": "telegram", "config": {"bot_token": "nope", "chat_id": "1"}},
            "VALIDATION_ERROR",
        ),
        (
            {
                **good,
                "type": "email",
                "config": {
                    "smtp_host": "127.0.0.1",
                    "from_address": "x@example.com",
                    "to": ["not-an-address"],
                },
            },
            "VALIDATION_ERROR",
        ),
        (
            {
                **good,
                "type": "email",
                "config": {"smtp_host": "127.0.0.1", "from_address": "x@example.com", "to": []},
            },
            "VALIDATION_ERROR",
        ),
        ({**good, "team_id": 2**31}, "VALIDATION_ERROR"),
    ]
    for body, code in cases:
        assert_error(await admin.post(f"{BASE}/channels", json=body), 422, code)
    assert (await admin.get(f"{BASE}/channels", params={"limit": 1})).json()["total"] == before

    first = await admin.post(f"{BASE}/channels", json=good)
    assert first.status_code == 201
    assert_error(await admin.post(f"{BASE}/channels", json=good), 409, "CONFLICT")
    assert_error(await admin.post(f"{BASE}/test", json={"channel_id": 2**31 - 1}), 404, "NOT_FOUND")
    assert_error(await admin.post(f"{BASE}/test", json={"channel_id": 0}), 422, "VALIDATION_ERROR")

    viewer = await make_user("viewer", team_ids=[team.id])
    async with viewer.client(api) as c:
        assert (await c.get(f"{BASE}/channels")).status_code == 200
        assert_error(
            await c.post(f"{BASE}/channels", json={**good, "name": uid()}), 403, "FORBIDDEN"
        )
        assert_error(
            await c.post(f"{BASE}/test", json={"channel_id": first.json()["id"]}), 403, "FORBIDDEN"
        )
    async with api.client() as anonymous:
        assert_error(await anonymous.get(f"{BASE}/channels"), 401, "UNAUTHORIZED")
    # Another team's channel does not exist for an outsider.
    other = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[other["id"]])
    async with outsider.client(api) as c:
        cid = first.json()["id"]
        assert_error(await c.get(f"{BASE}/channels/{cid}"), 404, "NOT_FOUND")
        assert_error(await c.patch(f"{BASE}/channels/{cid}", json={"name": "x"}), 404, "NOT_FOUND")
        assert_error(await c.delete(f"{BASE}/channels/{cid}"), 404, "NOT_FOUND")
        assert_error(await c.post(f"{BASE}/test", json={"channel_id": cid}), 404, "NOT_FOUND")
        listed = (await c.get(f"{BASE}/channels", params={"limit": 1000})).json()
        assert cid not in [i["id"] for i in listed["items"]]
