"""Routing events to channels and people: the default for channels without a policy,
alert policies and their throttle window, schedules' notify flags, preferences, and the
per-user notification center."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from opscenter.core.events import Event
from opscenter.notifications.dispatch import describe, severity
from tests.conftest import Api, CreatedUser, UserFactory
from tests.notifications.conftest import (
    Mailbox,
    Receiver,
    TeamSetup,
    assert_error,
    eventually,
    settle,
    uid,
)

BASE = "/api/v1/notifications"


def publish(api: Api, type_: str, team: TeamSetup, **data: Any) -> None:
    api.app.state.ctx.events.publish(Event(type_, data, team_id=team.id))


async def webhook_channel(admin: httpx.AsyncClient, team: TeamSetup, hook: Receiver) -> int:
    r = await admin.post(
        f"{BASE}/channels",
        json={
            "name": uid("hook-"),
            "type": "webhook",
            "config": {"url": f"{hook.base}/hook"},
            "team_id": team.id,
        },
    )
    assert r.status_code == 201, r.text
    channel_id: int = r.json()["id"]
    return channel_id


async def inbox(api: Api, user: CreatedUser, **params: Any) -> dict[str, Any]:
    async with user.client(api) as c:
        r = await c.get(f"{BASE}/", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_severity_mapping() -> None:
    assert severity(Event("backup.failed", {})) == "error"
    assert severity(Event("backup.completed", {})) == "info"
    assert severity(Event("backup.corrupt", {})) == "critical"
    assert severity(Event("server.health_changed", {"health_status": "unhealthy"})) == "error"
    assert severity(Event("server.health_changed", {"health_status": "healthy"})) == "info"
    assert severity(Event("external_job.overdue", {"severity": "critical"})) == "critical"
    assert severity(Event("external_job.overdue", {"severity": "bogus"})) == "warning"
    assert severity(Event("verification.failed", {})) == "error"
    assert severity(Event("something.else", {})) == "info"


def test_titles_name_what_failed() -> None:
    """A restore or a verification of backup 5 failing is not "Backup 5 failed"."""
    restore = Event("restore.failed", {"backup_id": 5, "job_id": 9, "target_database": "s"})
    assert describe(restore, "error")[0] == "Restore of backup 5 into s failed"
    job = Event("job.failed", {"backup_id": 5, "job_id": 9, "kind": "restore"})
    assert describe(job, "error")[0] == "Restore of backup 5 failed"
    check = Event("verification.failed", {"backup_id": 5, "run_id": 3})
    assert describe(check, "error")[0] == "Verification of backup 5 failed"
    assert describe(Event("backup.failed", {"backup_id": 5}), "error")[0] == "Backup 5 failed"


@pytest.mark.usefixtures("allow_loopback")
async def test_failures_reach_a_channel_without_policy(
    api: Api,
    admin: httpx.AsyncClient,
    team: TeamSetup,
    make_user: UserFactory,
    receiver: Callable[..., Receiver],
) -> None:
    hook = receiver()
    channel_id = await webhook_channel(admin, team, hook)
    member = await make_user("viewer", team_ids=[team.id])
    publish(api, "backup.completed", team, backup_id=900001, status="completed")
    publish(
        api,
        "backup.failed",
        team,
        backup_id=900002,
        error_code="dump_killed",
        error="pg_dump killed",
    )

    async def delivered() -> bool:
        return len(hook.requests) >= 1

    await eventually(delivered)
    await settle()
    [req] = hook.requests  # the success (info) is not a default alert
    assert req.json()["type"] == "failure"
    assert "pg_dump killed" in req.json()["message"]
    page = await inbox(api, member)
    assert page["total"] == 1 and page["limit"] == 100 and page["offset"] == 0
    [note] = page["items"]
    assert note["type"] == "backup.failed" and note["level"] == "error" and note["read"] is False
    assert note["details"]["backup_id"] == 900002
    channel = (await admin.get(f"{BASE}/channels/{channel_id}")).json()
    assert channel["last_success_at"] is not None


@pytest.mark.usefixtures("allow_loopback")
async def test_policy_routes_and_throttles_a_flapping_server(
    api: Api,
    admin: httpx.AsyncClient,
    team: TeamSetup,
    make_user: UserFactory,
    receiver: Callable[..., Receiver],
) -> None:
    routed_hook, default_hook = receiver(), receiver()
    routed = await webhook_channel(admin, team, routed_hook)
    await webhook_channel(admin, team, default_hook)
    watcher = await make_user("viewer", team_ids=[team.id])
    r = await admin.post(
        f"{BASE}/policies",
        json={
            "name": uid("pol-"),
            "team_id": team.id,
            "event_types": ["server.*"],
            "min_severity": "warning",
            "channel_ids": [routed],
            "user_ids": [watcher.id],
            "throttle_seconds": 3600,
        },
    )
    assert r.status_code == 201, r.text
    for _ in range(3):  # the same server flaps
        publish(api, "server.health_changed", team, server_id=910001, health_status="unhealthy")
    publish(api, "server.health_changed", team, server_id=910002, health_status="unhealthy")
    publish(api, "server.health_changed", team, server_id=910003, health_status="healthy")

    async def both() -> bool:
        return len(routed_hook.requests) >= 2 and len(default_hook.requests) >= 2

    await eventually(both)
    await settle()
    assert len(routed_hook.requests) == 2  # once per server inside the window; info filtered
    assert len(default_hook.requests) == 2  # the unrouted channel: failures, default window
    page = await inbox(api, watcher)
    assert page["total"] == 2 and {n["type"] for n in page["items"]} == {"server.health_changed"}

    # A channel named by a policy gets only what its policies send it.
    publish(api, "backup.failed", team, backup_id=910009, error="disk full")

    async def default_got_it() -> bool:
        return len(default_hook.requests) >= 3

    await eventually(default_got_it)
    await settle()
    assert len(routed_hook.requests) == 2


@pytest.mark.usefixtures("allow_loopback")
async def test_schedule_notify_flags(
    api: Api,
    admin: httpx.AsyncClient,
    team: TeamSetup,
    receiver: Callable[..., Receiver],
) -> None:
    hook = receiver()
    await webhook_channel(admin, team, hook)
    server = await admin.post(
        "/api/v1/servers",
        json={
            "name": uid("pg-"),
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": 5432,
            "team_id": team.id,
        },
    )
    assert server.status_code == 201, server.text

    async def schedule(**flags: bool) -> int:
        r = await admin.post(
            "/api/v1/schedules",
            json={
                "name": uid("s-"),
                "server_id": server.json()["id"],
                "database_name": "app",
                "cron_expression": "0 3 * * *",
                **flags,
            },
        )
        assert r.status_code == 201, r.text
        schedule_id: int = r.json()["id"]
        return schedule_id

    loud = await schedule(notify_on_success=True)
    quiet = await schedule(notify_on_failure=False)
    publish(api, "backup.failed", team, backup_id=920001, schedule_id=quiet, error="quiet failure")
    publish(api, "backup.completed", team, backup_id=920002, schedule_id=loud, status="completed")

    async def got() -> bool:
        return len(hook.requests) >= 1

    await eventually(got)
    await settle()
    [req] = hook.requests
    assert req.json()["type"] == "info" and "Backup 920002 completed" in req.json()["message"]


async def test_notification_center_is_per_user(
    api: Api, admin: httpx.AsyncClient, team: TeamSetup, make_user: UserFactory
) -> None:
    alice = await make_user("viewer", team_ids=[team.id])
    bob = await make_user("operator", team_ids=[team.id])
    publish(api, "backup.failed", team, backup_id=930001, error="one")
    publish(api, "backup.corrupt", team, backup_id=930002, error="checksum mismatch")
    publish(api, "external_job.overdue", team, external_job_id=930003, severity="error")

    async def three() -> bool:
        return (await inbox(api, alice))["total"] == 3 and (await inbox(api, bob))["total"] == 3

    await eventually(three)
    async with alice.client(api) as c:
        assert (await c.get(f"{BASE}/unread-count")).json() == {"unread": 3}
        page = (await c.get(f"{BASE}/", params={"level": "critical"})).json()
        assert [n["type"] for n in page["items"]] == ["backup.corrupt"]
        assert (await c.get(f"{BASE}/", params={"type": "backup.*"})).json()["total"] == 2
        assert (await c.get(f"{BASE}/", params={"since": "2999-01-01T00:00:00Z"})).json()[
            "total"
        ] == 0
        first = page["items"][0]["id"]
        r = await c.post(f"{BASE}/{first}/read")
        assert r.status_code == 200 and r.json()["read"] is True and r.json()["read_at"]
        assert (await c.get(f"{BASE}/unread-count")).json() == {"unread": 2}
        assert (await c.get(f"{BASE}/", params={"unread": True})).json()["total"] == 2
        assert (await c.post(f"{BASE}/mark-all-read")).json() == {"marked": 2}
        assert (await c.get(f"{BASE}/unread-count")).json() == {"unread": 0}
        assert (await c.delete(f"{BASE}/{first}")).status_code == 204
        assert (await c.get(f"{BASE}/")).json()["total"] == 2
        assert_error(await c.post(f"{BASE}/{first}/read"), 404, "NOT_FOUND")
        for params in ({"level": "loud"}, {"since": "yesterday"}, {"type": "Robert'); DROP"}):
            assert_error(await c.get(f"{BASE}/", params=params), 422, "VALIDATION_ERROR")
        assert_error(await c.post(f"{BASE}/0/read"), 422, "VALIDATION_ERROR")
        assert_error(await c.delete(f"{BASE}/{2**31}"), 422, "VALIDATION_ERROR")
    # Bob's notifications are untouched and Alice's do not exist for him (nor for the admin).
    bobs = await inbox(api, bob)
    assert bobs["total"] == 3 and all(not n["read"] for n in bobs["items"])
    alices = (await inbox(api, alice))["items"]
    async with bob.client(api) as c:
        for note in alices:
            assert_error(await c.post(f"{BASE}/{note['id']}/read"), 404, "NOT_FOUND")
            assert_error(await c.delete(f"{BASE}/{note['id']}"), 404, "NOT_FOUND")
    assert_error(await admin.delete(f"{BASE}/{alices[0]['id']}"), 404, "NOT_FOUND")
    assert (await inbox(api, alice))["total"] == 2
    async with api.client() as anonymous:
        assert_error(await anonymous.get(f"{BASE}/"), 401, "UNAUTHORIZED")
        assert_error(await anonymous.post(f"{BASE}/mark-all-read"), 401, "UNAUTHORIZED")


async def test_preferences_and_critical_alerts(
    api: Api,
    admin: httpx.AsyncClient,
    team: TeamSetup,
    make_user: UserFactory,
    smtp_server: tuple[Mailbox, int],
    allow_loopback: None,
) -> None:
    mailbox, port = smtp_server
    user = await make_user("viewer", team_ids=[team.id])
    r = await admin.post(
        f"{BASE}/channels",
        json={
            "name": uid("mail-"),
            "type": "email",
            "team_id": team.id,
            "config": {
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "security": "none",
                "from_address": "opscenter@example.com",
                "to": ["oncall@example.com"],
            },
        },
    )
    assert r.status_code == 201, r.text
    async with user.client(api) as c:
        assert (await c.get(f"{BASE}/preferences")).json() == {
            "preferences": [],
            "channels": ["in_app", "email"],
        }
        wanted = [
            {"event_type": "backup.*", "channel": "in_app", "min_level": "critical"},
            {"event_type": "backup.corrupt", "channel": "email", "enabled": True},
        ]
        r = await c.put(f"{BASE}/preferences", json={"preferences": wanted})
        assert r.status_code == 200, r.text
        assert len(r.json()["preferences"]) == 2
        bad = [
            [{"event_type": "*", "channel": "in_app", "enabled": False}],
            [{"event_type": "backup.*", "channel": "pager"}],
            [{"event_type": "Backup!", "channel": "in_app"}],
            [{"event_type": "backup.*", "channel": "email", "min_level": "loud"}],
            [wanted[1], wanted[1]],
        ]
        codes = []
        for prefs in bad:
            r = await c.put(f"{BASE}/preferences", json={"preferences": prefs})
            assert r.status_code == 422, r.text
            codes.append(r.json()["code"])
        assert codes[0] == "CRITICAL_ALERTS_REQUIRED"
        assert (
            "critical"
            in (await c.put(f"{BASE}/preferences", json={"preferences": bad[0]})).json()["detail"]
        )
        # Nothing was half-written by the refused updates.
        assert len((await c.get(f"{BASE}/preferences")).json()["preferences"]) == 2

    publish(api, "backup.failed", team, backup_id=940001, error="muted by preference")
    publish(api, "backup.corrupt", team, backup_id=940002, error="bad checksum")
    publish(api, "server.health_changed", team, server_id=940003, health_status="unhealthy")

    async def two() -> bool:
        return (await inbox(api, user))["total"] >= 2

    await eventually(two)

    async def mailed() -> bool:
        return any(f"{user.username}@example.com" in rcpt for _, rcpt in mailbox.envelopes)

    await eventually(mailed)
    await settle()
    types = sorted(n["type"] for n in (await inbox(api, user))["items"])
    assert types == ["backup.corrupt", "server.health_changed"]
    personal = [rcpt for _, rcpt in mailbox.envelopes if f"{user.username}@example.com" in rcpt]
    assert personal == [[f"{user.username}@example.com"]]  # only the corrupt backup, by e-mail


async def test_policy_crud_and_bad_input(
    api: Api,
    admin: httpx.AsyncClient,
    team: TeamSetup,
    make_user: UserFactory,
) -> None:
    good = {"name": uid("pol-"), "team_id": team.id, "event_types": ["backup.failed"]}
    r = await admin.post(f"{BASE}/policies", json=good)
    assert r.status_code == 201, r.text
    policy = r.json()
    assert policy["min_severity"] == "info" and policy["throttle_seconds"] == 300
    before = (await admin.get(f"{BASE}/policies", params={"limit": 1})).json()["total"]
    other = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    foreign_channel = await admin.post(
        f"{BASE}/channels",
        json={
            "name": uid(),
            "type": "ntfy",
            "team_id": other["id"],
            "config": {"url": "https://ntfy.invalid/topic"},
        },
    )
    assert foreign_channel.status_code == 201, foreign_channel.text
    cases = [
        {**good, "name": uid(), "event_types": []},
        {**good, "name": uid(), "event_types": ["BACKUP"]},
        {**good, "name": uid(), "min_severity": "fatal"},
        {**good, "name": uid(), "throttle_seconds": -1},
        {**good, "name": uid(), "channel_ids": [foreign_channel.json()["id"]]},
        {**good, "name": uid(), "user_ids": [2**31 - 1]},
        {**good, "name": uid(), "team_ids": [2**31 - 1]},
        {**good, "name": uid(), "channel_ids": ["x"]},
        {**good, "name": uid(), "unknown": 1},
    ]
    for body in cases:
        assert_error(await admin.post(f"{BASE}/policies", json=body), 422, "VALIDATION_ERROR")
    assert_error(await admin.post(f"{BASE}/policies", json=good), 409, "CONFLICT")
    assert (await admin.get(f"{BASE}/policies", params={"limit": 1})).json()["total"] == before

    r = await admin.patch(
        f"{BASE}/policies/{policy['id']}", json={"min_severity": "error", "is_enabled": False}
    )
    assert r.status_code == 200 and r.json()["min_severity"] == "error"
    assert_error(
        await admin.patch(f"{BASE}/policies/{policy['id']}", json={"event_types": []}),
        422,
        "VALIDATION_ERROR",
    )
    assert (await admin.get(f"{BASE}/policies/{policy['id']}")).json()["event_types"] == [
        "backup.failed"
    ]
    viewer = await make_user("viewer", team_ids=[team.id])
    async with viewer.client(api) as c:
        assert (await c.get(f"{BASE}/policies/{policy['id']}")).status_code == 200
        assert_error(
            await c.post(f"{BASE}/policies", json={**good, "name": uid()}), 403, "FORBIDDEN"
        )
        assert_error(await c.delete(f"{BASE}/policies/{policy['id']}"), 403, "FORBIDDEN")
    outsider = await make_user("operator", team_ids=[other["id"]])
    async with outsider.client(api) as c:
        assert_error(await c.get(f"{BASE}/policies/{policy['id']}"), 404, "NOT_FOUND")
        assert_error(
            await c.patch(f"{BASE}/policies/{policy['id']}", json={"name": "x"}), 404, "NOT_FOUND"
        )
    assert (await admin.delete(f"{BASE}/policies/{policy['id']}")).status_code == 204
    assert_error(await admin.get(f"{BASE}/policies/{policy['id']}"), 404, "NOT_FOUND")


@pytest.mark.usefixtures("allow_loopback")
async def test_a_failing_channel_is_logged_without_its_secret(
    api: Api,
    admin: httpx.AsyncClient,
    team: TeamSetup,
    receiver: Callable[..., Receiver],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = f"hooksecret{uid()}"
    broken = receiver(status=503)
    r = await admin.post(
        f"{BASE}/channels",
        json={
            "name": uid("hook-"),
            "type": "webhook",
            "team_id": team.id,
            "config": {"url": f"{broken.base}/hook/{secret}?token={secret}"},
        },
    )
    assert r.status_code == 201, r.text
    channel_id = r.json()["id"]
    publish(api, "backup.failed", team, backup_id=950001, error="disk full")

    async def recorded() -> bool:
        got = (await admin.get(f"{BASE}/channels/{channel_id}")).json()
        return got["last_error"] is not None

    await eventually(recorded)
    assert len(broken.requests) == 1 and secret in broken.requests[0].path
    channel = (await admin.get(f"{BASE}/channels/{channel_id}")).json()
    assert "503" in channel["last_error"] and secret not in channel["last_error"]
    out, err = capfd.readouterr()
    assert "notification channel failed" in out + err
    assert secret not in out + err
    assert all(secret not in record.getMessage() for record in caplog.records)
