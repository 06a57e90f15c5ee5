"""Rate limits: headers, 429 + Retry-After, stricter writes, login per account and per
address, and counters shared through Redis. Each test runs its own app (SQLite) with small
limits; the apps share one data dir, so only the first one pays for the migrations."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from opscenter.app import create_app
from tests.conftest import ADMIN_PASSWORD, make_settings

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
REDIS_URL = "redis://127.0.0.1:6379/5"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ratelimits")


@asynccontextmanager
async def running(data_dir: Path, **overrides: Any) -> AsyncIterator[FastAPI]:
    settings = make_settings(data_dir, OPSCENTER_RATE_LIMIT_ENABLED=True, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def client(app: FastAPI, ip: str = "127.0.0.1", **kw: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kw)


def random_ip() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


async def admin_token(app: FastAPI, ip: str = "127.0.0.1") -> dict[str, str]:
    async with client(app, ip) as c:
        r = await c.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def assert_limited(r: httpx.Response, limit: int) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["code"] == "RATE_LIMITED" and set(body) == {"detail", "code", "timestamp"}
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 61
    assert r.headers["x-ratelimit-limit"] == str(limit)
    assert r.headers["x-ratelimit-remaining"] == "0"


async def test_headers_count_down_and_429_with_retry_after(data_dir: Path) -> None:
    async with running(data_dir, OPSCENTER_RATE_LIMIT="4/minute") as app:
        headers = await admin_token(app)
        async with client(app, headers=headers) as c:
            seen = []
            for _ in range(4):
                r = await c.get(ME)
                assert r.status_code == 200, r.text
                assert r.headers["x-ratelimit-limit"] == "4"
                reset = int(r.headers["x-ratelimit-reset"])
                assert time.time() < reset <= time.time() + 62
                seen.append(int(r.headers["x-ratelimit-remaining"]))
            assert seen == [3, 2, 1, 0]
            r = await c.get(ME)
            assert_limited(r, 4)
            assert "x-request-id" in r.headers

        # The limit is per caller: anonymous callers (by address) have their own budget.
        async with client(app) as c:
            r = await c.get(ME)
        assert r.status_code == 401 and r.headers["x-ratelimit-limit"] == "4"
        # Outside /api, nothing is limited.
        async with client(app, headers=headers) as c:
            for _ in range(6):
                r = await c.get("/health")
                assert r.status_code == 200
                assert "x-ratelimit-limit" not in r.headers


async def test_cross_origin_answers_only_for_the_allowed_origins(data_dir: Path) -> None:
    """CORS headers go to the origins ALLOWED_ORIGINS lists, on every answer, a 429 too;
    with none listed (the default), no answer carries any."""
    allowed, other = "https://ops.example.com", "https://evil.example.net"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-CSRF-Token",
    }
    async with running(data_dir, OPSCENTER_RATE_LIMIT="2/minute", ALLOWED_ORIGINS=allowed) as app:
        headers = await admin_token(app)
        async with client(app, headers=headers) as c:
            r = await c.options(ME, headers={"Origin": allowed, **preflight})
            assert r.status_code == 200, r.text
            assert r.headers["access-control-allow-origin"] == allowed
            assert r.headers["access-control-allow-credentials"] == "true"
            assert "x-csrf-token" in r.headers["access-control-allow-headers"].lower()
            r = await c.options(ME, headers={"Origin": other, **preflight})
            assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
            answers = [await c.get(ME, headers={"Origin": allowed}) for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 429]
            for answer in answers:
                assert answer.headers["access-control-allow-origin"] == allowed
                assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()
                assert "Origin" in answer.headers["vary"]
            r = await c.get("/health", headers={"Origin": other})
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    async with running(data_dir) as app, client(app) as c:
        r = await c.options(ME, headers={"Origin": allowed, **preflight})
        assert not any(h.startswith("access-control-") for h in r.headers)
        r = await c.get("/health", headers={"Origin": allowed})
        assert r.status_code == 200
        assert not any(h.startswith("access-control-") for h in r.headers)


async def test_writes_are_limited_more_strictly_than_reads(data_dir: Path) -> None:
    async with running(
        data_dir, OPSCENTER_RATE_LIMIT="20/minute", OPSCENTER_RATE_LIMIT_WRITE="2/minute"
    ) as app:
        headers = await admin_token(app)
        async with client(app, headers=headers) as c:
            for _ in range(2):
                name = f"rl-{uuid.uuid4().hex[:8]}"
                r = await c.post("/api/v1/users/teams", json={"name": name})
                assert r.status_code == 201, r.text
            name = f"rl-{uuid.uuid4().hex[:8]}"
            r = await c.post("/api/v1/users/teams", json={"name": name})
            assert_limited(r, 2)
            # The refused write did not happen; reads still go through.
            r = await c.get("/api/v1/users/teams/list", params={"limit": 1000})
            assert r.status_code == 200
            assert name not in {t["name"] for t in r.json()["items"]}
            for method in ("PUT", "DELETE", "PATCH"):
                assert (await c.request(method, "/api/v1/users/1", json={})).status_code == 429
            assert (await c.get(ME)).status_code == 200


async def test_login_is_limited_per_account(data_dir: Path) -> None:
    async with (
        running(
            data_dir,
            OPSCENTER_RATE_LIMIT_LOGIN_ACCOUNT="3/minute",
            OPSCENTER_RATE_LIMIT_LOGIN_ADDRESS="100/minute",
        ) as app,
        client(app) as c,
    ):
        # Three misses on one account, whichever way it is named...
        for ident in ({"username": "admin"}, {"username": "ADMIN"}, {"email": "admin@example.com"}):
            r = await c.post(LOGIN, json={**ident, "password": "wrong-password"})
            assert r.status_code == 401, r.text
        # ...and the account is closed for the window, even to the right password.
        for ident in ({"username": "admin"}, {"email": "Admin@Example.com"}):
            r = await c.post(LOGIN, json={**ident, "password": ADMIN_PASSWORD})
            assert r.status_code == 429, r.text
            assert r.json()["code"] == "RATE_LIMITED"
            assert 1 <= int(r.headers["retry-after"]) <= 61
            assert "access_token" not in r.text
        # Another account from the same address is not affected.
        r = await c.post(LOGIN, json={"username": "someone-else", "password": "x"})
        assert r.status_code == 401, r.text


async def test_login_is_limited_per_address(data_dir: Path) -> None:
    async with running(
        data_dir,
        OPSCENTER_RATE_LIMIT_LOGIN_ACCOUNT="100/minute",
        OPSCENTER_RATE_LIMIT_LOGIN_ADDRESS="3/minute",
    ) as app:
        attacker, other = random_ip(), random_ip()
        async with client(app, attacker) as c:
            for i in range(3):  # a spray over many accounts
                r = await c.post(LOGIN, json={"username": f"victim{i}", "password": "guess"})
                assert r.status_code == 401, r.text
            r = await c.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
            assert r.status_code == 429, r.text
            assert r.json()["code"] == "RATE_LIMITED" and "retry-after" in r.headers
        async with client(app, other) as c:
            r = await c.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
            assert r.status_code == 200, r.text


async def test_made_up_api_keys_do_not_escape_the_address_limit(data_dir: Path) -> None:
    """Every unknown X-API-Key value must not buy its caller a fresh budget."""
    async with (
        running(data_dir, OPSCENTER_RATE_LIMIT="3/minute") as app,
        client(app, random_ip()) as c,
    ):
        statuses = [
            (await c.get(ME, headers={"X-API-Key": f"ock_{uuid.uuid4().hex}"})).status_code
            for _ in range(6)
        ]
        assert statuses[:3] == [401, 401, 401]
        assert 429 in statuses, statuses
        r = await c.get(ME)  # and the plain anonymous budget is spent with it
        assert r.status_code == 429


async def test_counters_live_in_redis_and_are_shared(data_dir: Path) -> None:
    import redis.asyncio as aioredis

    store = aioredis.from_url(REDIS_URL)
    try:
        await store.ping()
    except Exception as exc:  # pragma: no cover - environment without Redis
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    ip = random_ip()  # this run's own counters, whoever else uses this Redis db
    try:
        async with (
            running(data_dir, REDIS_URL=REDIS_URL, OPSCENTER_RATE_LIMIT="4/minute") as one,
            running(data_dir, REDIS_URL=REDIS_URL, OPSCENTER_RATE_LIMIT="4/minute") as two,
        ):
            remaining = []
            for app in (one, two, one, two):
                async with client(app, ip) as c:
                    r = await c.get(ME)
                assert r.status_code == 401
                remaining.append(int(r.headers["x-ratelimit-remaining"]))
            assert remaining == [3, 2, 1, 0]
            for app in (one, two):
                async with client(app, ip) as c:
                    assert_limited(await c.get(ME), 4)
            keys = [k async for k in store.scan_iter(match=f"*{ip}*")]
            assert keys, "no counter for this caller in Redis"
            async with client(one) as c:
                assert (await c.get("/health")).json()["checks"].get("redis") is True
    finally:
        keys = [k async for k in store.scan_iter(match=f"*{ip}*")]
        if keys:
            await store.delete(*keys)
        await store.aclose()


async def test_the_memory_limiter_starts_no_thread_per_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    """`limits`' asynchronous memory storage swept every caller's window in a worker thread
    after each hit (about 100 us of CPU per hit), its synchronous one from a timer thread
    started every 10 ms of traffic. Ours sweeps inline at most once a second: no thread, no
    hand-off; it still refuses exactly at the limit, and expired windows are freed."""
    import asyncio
    import threading

    from opscenter.core import ratelimit

    limiter = ratelimit.RateLimiter(None)
    started = 0
    real_start = threading.Thread.start

    def counted(self: threading.Thread) -> None:
        nonlocal started
        started += 1
        real_start(self)

    real_to_thread = asyncio.to_thread

    async def counted_to_thread(*args: Any, **kwargs: Any) -> Any:
        nonlocal started
        started += 1
        return await real_to_thread(*args, **kwargs)

    monkeypatch.setattr(threading.Thread, "start", counted)
    monkeypatch.setattr(asyncio, "to_thread", counted_to_thread)
    monkeypatch.setattr(ratelimit, "SWEEP_EVERY", 0.5)
    callers = [f"user:{n}" for n in range(20)]
    for _ in range(5):
        for caller in callers:
            assert (await limiter.hit("5/second", "all", caller)).allowed
            await asyncio.sleep(0.005)  # traffic long enough for the old timer to fire
    verdicts = [await limiter.hit("5/second", "all", caller) for caller in callers]
    assert not any(v.allowed for v in verdicts) and {v.remaining for v in verdicts} == {0}
    assert not await limiter.test("5/second", "all", callers[0])
    assert started == 0
    await asyncio.sleep(1.1)  # every window has passed, and a sweep is due
    assert (await limiter.hit("5/second", "all", "user:late")).allowed
    assert limiter._memory is not None
    storage = limiter._memory.storage
    assert isinstance(storage, ratelimit.SweptMemoryStorage)
    assert {key for key, entries in storage.events.items() if entries} == {
        "LIMITER/all/user:late/5/1/second"
    }
    assert await limiter.check() and started == 0
