"""Past the pool's capacity a request waits a bounded time, then is answered 503 with
Retry-After: overload is refused quickly and in the one error format, never a 500."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from tests.conftest import admin_client, fresh_pg_database, make_settings


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_request_past_the_pool_gets_503_with_retry_after(
    tmp_path: Path, backend: str
) -> None:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_pg_database()) if backend == "postgres" else None
        settings = make_settings(
            tmp_path, url, OPSCENTER_DB_POOL_SIZE=1, OPSCENTER_DB_POOL_TIMEOUT=0.3
        )
        async with admin_client(settings) as client:
            engine = client.app.state.ctx.db.engine  # type: ignore[attr-defined]
            held = [await engine.connect()]  # the whole pool: one connection, no overflow
            try:
                started = time.monotonic()
                r = await client.get("/api/v1/backups")
                waited = time.monotonic() - started
            finally:
                for conn in held:
                    await conn.close()
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "SERVICE_UNAVAILABLE"
            assert r.headers["Retry-After"] == "1"
            assert waited < 5, waited  # bounded by the pool timeout, not SQLAlchemy's 30 s
            # Once a connection is free again the same request goes through.
            assert (await client.get("/api/v1/backups")).status_code == 200
