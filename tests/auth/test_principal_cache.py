"""Who a token or key stands for is cached per process (OPSCENTER_AUTH_CACHE_SECONDS): a
change committed in this process takes effect on the very next request; one committed by
another process, within the cache's lifetime."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Executable, event, update

from opscenter.core.cache import TtlCache
from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.core.principal import Principal
from opscenter.models import ApiKey, User
from tests.auth.test_auth import ME, assert_unauthorized
from tests.conftest import Api, UserFactory

TOKENS = "/api/v1/admin/tokens"
AUDIT = "/api/v1/audit/logs"
LIFETIME = 1.0


@pytest.fixture
def short_lived_cache(api: Api) -> Iterator[TtlCache[tuple[str, ...], Principal]]:
    """The cache with a lifetime of LIFETIME s, as OPSCENTER_AUTH_CACHE_SECONDS=1 sets it."""
    cache: TtlCache[tuple[str, ...], Principal] = api.app.state.ctx.principals
    saved = cache.ttl
    cache.ttl = LIFETIME
    cache.clear()
    yield cache
    cache.ttl = saved


async def written_by_another_process(api: Api, statement: Executable) -> None:
    """A commit this application's sessions do not see: another Database on the same data."""
    other = Database(api.app.state.ctx.db.url)
    try:
        async with other.write_session() as session:
            await session.execute(statement)
            await session.commit()
    finally:
        await other.dispose()


async def get(api: Api, headers: dict[str, str], path: str = ME) -> httpx.Response:
    async with api.client(headers) as c:
        return await c.get(path)


async def test_a_key_revoked_by_another_process_is_refused_within_the_lifetime(
    api: Api, admin: httpx.AsyncClient, short_lived_cache: TtlCache[tuple[str, ...], Principal]
) -> None:
    r = await admin.post(TOKENS, json={"name": f"k-{uuid.uuid4().hex[:8]}", "role": "viewer"})
    assert r.status_code == 201, r.text
    key = r.json()
    headers = {"X-API-Key": key["key"]}
    assert (await get(api, headers)).status_code == 200  # now cached

    revoke = update(ApiKey).where(ApiKey.id == key["id"]).values(revoked_at=utcnow())
    await written_by_another_process(api, revoke)
    await asyncio.sleep(LIFETIME + 0.2)
    assert_unauthorized(await get(api, headers))


async def test_a_user_disabled_by_another_process_is_refused_within_the_lifetime(
    api: Api, make_user: UserFactory, short_lived_cache: TtlCache[tuple[str, ...], Principal]
) -> None:
    user = await make_user("operator")
    assert (await get(api, user.headers)).status_code == 200

    await written_by_another_process(
        api, update(User).where(User.id == user.id).values(is_active=False)
    )
    await asyncio.sleep(LIFETIME + 0.2)
    assert_unauthorized(await get(api, user.headers))


async def test_changes_made_in_this_process_take_effect_at_once(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """With the default lifetime (5 s), each change primed in the cache first."""
    operator = await make_user("operator")
    assert (await get(api, operator.headers, AUDIT)).status_code == 200  # operators read audit
    r = await admin.put(f"/api/v1/users/{operator.id}", json={"role": "viewer"})
    assert r.status_code == 200, r.text
    # A new role ends the user's sessions (they log in again to get it): at once.
    assert_unauthorized(await get(api, operator.headers, AUDIT))

    second_admin = await make_user("admin")
    async with second_admin.client(api) as c:
        r = await c.post(TOKENS, json={"name": f"k-{uuid.uuid4().hex[:8]}", "role": "viewer"})
    assert r.status_code == 201, r.text
    key_headers = {"X-API-Key": r.json()["key"]}
    assert (await get(api, key_headers)).status_code == 200
    assert (await get(api, second_admin.headers)).status_code == 200
    r = await admin.put(f"/api/v1/users/{second_admin.id}", json={"is_active": False})
    assert r.status_code == 200, r.text
    assert_unauthorized(await get(api, second_admin.headers))
    assert_unauthorized(await get(api, key_headers))  # a disabled owner's key, too


async def test_logging_out_ends_the_access_token_at_once(api: Api, make_user: UserFactory) -> None:
    user = await make_user("viewer")
    assert (await get(api, user.headers)).status_code == 200
    async with user.client(api) as c:
        r = await c.post("/api/v1/auth/logout")
    assert r.status_code in (200, 204), r.text
    assert_unauthorized(await get(api, user.headers))


async def test_requests_that_miss_together_share_one_load(
    api: Api, make_user: UserFactory, short_lived_cache: TtlCache[tuple[str, ...], Principal]
) -> None:
    """When an entry expires under load, every request in flight for it misses at once:
    they wait for one lookup of the user instead of each running its own."""
    user = await make_user("viewer")
    lookups = 0

    def count(_conn: object, _cursor: object, sql: str, *_: object) -> None:
        nonlocal lookups  # a token's lookup ends with its session's logout check
        lookups += "FROM refresh_tokens" in sql and "revoked_at IS NOT NULL" in sql

    engine = api.app.state.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        short_lived_cache.clear()
        assert (await get(api, user.headers)).status_code == 200
        assert lookups == 1
        short_lived_cache.clear()
        answers = await asyncio.gather(*(get(api, user.headers) for _ in range(10)))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [r.json()["id"] for r in answers] == [user.id] * 10
    assert lookups == 2


async def test_a_load_that_fails_or_predates_a_clear_is_not_shared() -> None:
    cache: TtlCache[str, int] = TtlCache(60)
    release = asyncio.Event()
    calls = 0

    async def failing() -> tuple[int, float | None]:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("database gone")

    async def working() -> tuple[int, float | None]:
        nonlocal calls
        calls += 1
        return 7, None

    first = asyncio.create_task(cache.get_or_load("k", failing))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cache.get_or_load("k", working))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(RuntimeError):
        await first
    assert await waiter == 7 and calls == 2  # the waiter loaded for itself
    assert cache.get("k") == 7

    # A load under way when the cache is cleared answers its callers but is not kept.
    cache.clear()
    gate = asyncio.Event()

    async def slow() -> tuple[int, float | None]:
        await gate.wait()
        return 1, None

    before = asyncio.create_task(cache.get_or_load("k", slow))
    await asyncio.sleep(0)
    cache.clear()
    after = asyncio.create_task(cache.get_or_load("k", working))
    await asyncio.sleep(0)
    gate.set()
    assert await before == 1 and await after == 7
    assert cache.get("k") == 7

    # A load run for its caller alone (a write request's, which may wait for SQLite's write
    # lock) is not waited on by the others.
    held = asyncio.Event()

    async def locked() -> tuple[int, float | None]:
        await held.wait()
        return 2, None

    alone = asyncio.create_task(cache.get_or_load("j", locked, share=False))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(cache.get_or_load("j", working), 5) == 7
    held.set()
    assert await alone == 2
