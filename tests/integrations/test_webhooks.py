"""Generic webhooks: signed delivery verified with the reference library, retries on the
schedule, auto-disable, redelivery, the test call, and resuming after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook
from tests.conftest import ADMIN_PASSWORD, Api, make_settings
from tests.core.helpers import own_app
from tests.integrations.conftest import DISABLE_AFTER
from tests.integrations.helpers import (
    BASE,
    create,
    deliveries,
    publish,
    settled,
    wait_deliveries,
)
from tests.integrations.receiver import HOST, Receiver, receiver

from opscenter.app import create_app


async def test_webhook_delivers_subscribed_events_signed(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(
        iadmin,
        "webhook",
        {"url": f"{rx.url}/hook", "events": ["backup.*", "server.health_changed"]},
    )
    secret = hook["signing_secret"]
    assert secret.startswith("whsec_") and hook["has_signing_secret"]
    r = await iadmin.get(f"{BASE}/{hook['id']}/webhooks")
    assert [s["event_type"] for s in r.json()["items"]] == ["backup.*", "server.health_changed"]

    publish(iapi, "backup.progress", {"backup_id": 1, "percent": 10})  # too chatty: not sent
    publish(iapi, "job.succeeded", {"job_id": 3})  # not subscribed
    publish(iapi, "backup.failed", {"job_id": 4, "error": "disk full"}, team_id=1)
    publish(iapi, "server.health_changed", {"server_id": 9, "health_status": "unreachable"})
    received = await rx.wait_for("/hook", 2)
    await asyncio.sleep(0.3)  # nothing else may follow
    assert len(rx.on("/hook")) == 2

    payloads = [Webhook(secret).verify(r.body, r.headers) for r in received]
    assert sorted(p["type"] for p in payloads) == ["backup.failed", "server.health_changed"]
    failed = next(p for p in payloads if p["type"] == "backup.failed")
    assert failed["data"]["error"] == "disk full" and failed["timestamp"].endswith("Z")
    # Another secret does not verify: the signature is real.
    other = (await iadmin.post(f"{BASE}/{hook['id']}/rotate-secret")).json()["signing_secret"]
    with pytest.raises(Exception, match="signature"):
        Webhook(other).verify(received[0].body, received[0].headers)

    log = await wait_deliveries(iadmin, hook["id"], settled(2))
    assert {d["status"] for d in log} == {"succeeded"}
    assert {d["message_id"] for d in log} == {r.headers["webhook-id"] for r in received}
    attempt = log[0]["attempts_log"][0]
    assert attempt["ok"] and attempt["status_code"] == 200 and attempt["latency_ms"] >= 0


async def test_progress_only_when_named_exactly(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    everything = await create(iadmin, "webhook", {"url": f"{rx.url}/all", "events": ["*"]})
    progress = await create(
        iadmin, "webhook", {"url": f"{rx.url}/progress", "events": ["backup.progress"]}
    )
    publish(iapi, "backup.progress", {"backup_id": 3, "percent": 50})
    publish(iapi, "job.progress", {"job_id": 3, "progress": 50.0})
    publish(iapi, "backup.completed", {"backup_id": 3})
    (got,) = await rx.wait_for("/progress", 1)
    assert Webhook(progress["signing_secret"]).verify(got.body, got.headers)["data"] == {
        "backup_id": 3,
        "percent": 50,
    }
    (only,) = await rx.wait_for("/all", 1)
    assert Webhook(everything["signing_secret"]).verify(only.body, only.headers)["type"] == (
        "backup.completed"
    )
    await asyncio.sleep(0.3)
    assert len(rx.on("/all")) == 1 and len(rx.on("/progress")) == 1


async def test_rotated_secret_signs_what_follows(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(iadmin, "webhook", {"url": f"{rx.url}/rot", "events": ["job.*"]})
    r = await iadmin.post(f"{BASE}/{hook['id']}/rotate-secret")
    assert r.status_code == 200
    new = r.json()["signing_secret"]
    publish(iapi, "job.failed", {"job_id": 1})
    (got,) = await rx.wait_for("/rot", 1)
    assert Webhook(new).verify(got.body, got.headers)["type"] == "job.failed"
    with pytest.raises(Exception, match="signature"):
        Webhook(hook["signing_secret"]).verify(got.body, got.headers)


async def test_retries_on_schedule_then_succeeds(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(iadmin, "webhook", {"url": f"{rx.url}/flaky", "events": ["job.failed"]})
    rx.fail("/flaky", 500, 503)
    publish(iapi, "job.failed", {"job_id": 42})
    (delivery,) = await wait_deliveries(iadmin, hook["id"], settled(1))
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["attempts_log"]] == [500, 503, 200]
    assert delivery["attempts_log"][0]["error"].startswith("HTTP 500")
    got = rx.on("/flaky")
    assert len({r.headers["webhook-id"] for r in got}) == 1  # the same message each time

    health = (await iadmin.get(f"{BASE}/{hook['id']}/health")).json()
    assert health["is_active"] and health["consecutive_failures"] == 0
    assert health["succeeded"] == 1 and health["error_rate"] == 0.0
    assert health["recent"][0]["id"] == delivery["id"]


async def test_disabled_after_consecutive_failures_then_redelivered(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(iadmin, "webhook", {"url": f"{rx.url}/down", "events": ["job.failed"]})
    watcher = await create(
        iadmin, "webhook", {"url": f"{rx.url}/watch", "events": ["integration.*"]}
    )
    rx.fail("/down", *[502] * DISABLE_AFTER)
    publish(iapi, "job.failed", {"job_id": 7})
    (failed,) = await wait_deliveries(iadmin, hook["id"], settled(1))
    assert failed["status"] == "failed" and failed["attempts"] == DISABLE_AFTER
    assert [a["status_code"] for a in failed["attempts_log"]] == [502] * DISABLE_AFTER

    state = (await iadmin.get(f"{BASE}/{hook['id']}")).json()
    assert not state["is_active"] and "3 failed attempts" in state["disabled_reason"]
    health = (await iadmin.get(f"{BASE}/{hook['id']}/health")).json()
    assert health["failed"] == 1 and health["error_rate"] == 1.0

    # The disabling is an event of its own, delivered to whoever subscribed to it.
    (notice,) = await rx.wait_for("/watch", 1)
    body = Webhook(watcher["signing_secret"]).verify(notice.body, notice.headers)
    assert body["type"] == "integration.disabled"
    assert body["data"]["integration_id"] == hook["id"] and body["data"]["severity"] == "error"

    # A disabled integration takes no new events and no redelivery.
    publish(iapi, "job.failed", {"job_id": 8})
    await asyncio.sleep(0.3)
    assert len(await deliveries(iadmin, hook["id"])) == 1
    redeliver = f"{BASE}/{hook['id']}/deliveries/{failed['id']}/redeliver"
    assert (await iadmin.post(redeliver)).json()["code"] == "CONFLICT"

    r = await iadmin.patch(f"{BASE}/{hook['id']}", json={"is_active": True})
    assert r.status_code == 200 and r.json()["disabled_reason"] is None
    r = await iadmin.post(redeliver)
    assert r.status_code == 202, r.text
    assert r.json()["redelivery_of"] == failed["id"]
    log = await wait_deliveries(iadmin, hook["id"], settled(2))
    assert log[0]["status"] == "succeeded" and log[0]["message_id"] == failed["message_id"]
    assert rx.on("/down")[-1].headers["webhook-id"] == failed["message_id"]


async def test_sync_sends_failed_deliveries_again(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(iadmin, "webhook", {"url": f"{rx.url}/sync", "events": ["job.failed"]})
    rx.fail("/sync", 500, 500)
    rx.fail("/sync", 500)
    publish(iapi, "job.failed", {"job_id": 1})
    await wait_deliveries(iadmin, hook["id"], lambda d: bool(d) and d[0]["status"] == "failed")
    # Three failures disabled it; enable and sync: the failed delivery goes out again.
    assert (await iadmin.post(f"{BASE}/{hook['id']}/sync")).json()["code"] == "CONFLICT"
    await iadmin.patch(f"{BASE}/{hook['id']}", json={"is_active": True})
    r = await iadmin.post(f"{BASE}/{hook['id']}/sync")
    assert r.status_code == 202 and r.json()["queued"] == 1
    (done,) = await wait_deliveries(iadmin, hook["id"], lambda d: d[0]["status"] == "succeeded")
    assert len(done["attempts_log"]) == 4


async def test_test_call_is_a_real_signed_request(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    hook = await create(iadmin, "webhook", {"url": f"{rx.url}/t", "events": ["job.*"]})
    r = await iadmin.post(f"{BASE}/{hook['id']}/test")
    assert r.status_code == 200 and r.json()["success"] and r.json()["status_code"] == 200
    (got,) = rx.on("/t")
    assert Webhook(hook["signing_secret"]).verify(got.body, got.headers)["type"] == (
        "integration.test"
    )
    rx.fail("/t", 500)
    r = await iadmin.post(f"{BASE}/{hook['id']}/test")
    result = r.json()
    assert not result["success"] and result["status_code"] == 500
    log = await deliveries(iadmin, hook["id"])
    assert [d["status"] for d in log] == ["failed", "succeeded"]  # logged, not retried
    assert (await iadmin.get(f"{BASE}/{hook['id']}")).json()["consecutive_failures"] == 0


async def test_pending_deliveries_resume_after_restart(tmp_path: Path) -> None:
    """A delivery waiting for its retry when the server stops goes out after it restarts."""
    settings = {
        "OPSCENTER_INTEGRATION_RETRY_SCHEDULE": "1.5",
        "OPSCENTER_OUTBOUND_ALLOWLIST": HOST,
    }
    with receiver() as rx:
        rx.fail("/resume", 503)
        async with own_app("sqlite", tmp_path, **settings) as first:
            headers = await first.headers_for("admin", ADMIN_PASSWORD)
            async with first.client(headers) as c:
                hook = await create(c, "webhook", {"url": f"{rx.url}/resume", "events": ["job.*"]})
                publish(first, "job.failed", {"job_id": 1})
                await wait_deliveries(c, hook["id"], lambda d: bool(d) and d[0]["attempts"] == 1)
        assert len(rx.on("/resume")) == 1  # stopped before the retry was due

        database = f"sqlite+aiosqlite:///{tmp_path.resolve() / 'opscenter.db'}"
        app = create_app(make_settings(tmp_path, database, **settings))
        async with app.router.lifespan_context(app):
            second = Api(app, "sqlite", make_settings(tmp_path, database, **settings))
            headers = await second.headers_for("admin", ADMIN_PASSWORD)
            async with second.client(headers) as c:
                (delivery,) = await wait_deliveries(c, hook["id"], settled(1))
        assert delivery["status"] == "succeeded" and delivery["attempts"] == 2
        assert len(rx.on("/resume")) == 2
