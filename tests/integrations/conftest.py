"""An app of our own per backend, with a short retry schedule, a low disable threshold and
only the receivers' address (127.0.0.2) allow-listed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from tests.conftest import ADMIN_PASSWORD, Api, StartedApps
from tests.core.helpers import BACKENDS
from tests.integrations.receiver import HOST, Receiver, receiver

RETRY_SCHEDULE = "0.05,0.1"  # three attempts in all
DISABLE_AFTER = 3


@pytest.fixture(scope="session", params=BACKENDS)
async def iapi(request: pytest.FixtureRequest, started_apps: StartedApps) -> Api:
    return await started_apps.get(
        request.param,
        "integrations",
        OPSCENTER_INTEGRATION_RETRY_SCHEDULE=RETRY_SCHEDULE,
        OPSCENTER_INTEGRATION_DISABLE_AFTER=DISABLE_AFTER,
        OPSCENTER_INTEGRATION_TIMEOUT=3,
        OPSCENTER_OUTBOUND_ALLOWLIST=HOST,
        OPSCENTER_LOG_LEVEL="INFO",
    )


@pytest.fixture(scope="session")
async def iadmin_headers(iapi: Api) -> dict[str, str]:
    return await iapi.headers_for("admin", ADMIN_PASSWORD)


@pytest.fixture
async def iadmin(iapi: Api, iadmin_headers: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """Deletes every integration afterwards, so no test's subscriptions outlive it."""
    async with iapi.client(iadmin_headers) as client:
        yield client
        for item in (await client.get("/api/v1/integrations/")).json()["items"]:
            r = await client.delete(f"/api/v1/integrations/{item['id']}")
            assert r.status_code == 204, r.text


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with receiver() as server:
        yield server
