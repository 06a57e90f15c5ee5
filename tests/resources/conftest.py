"""A fresh installation per test module and backend, for tests that drive the store's
clock themselves (the rollup watermark is installation-wide: each test of a module
writes later instants than the one before)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from opscenter.app import create_app
from opscenter.core.context import AppContext
from tests.conftest import fresh_pg_database, make_settings
from tests.ssh.conftest import make_sshd, ssh_client_key, sshd  # noqa: F401  (SSH fixtures)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def fresh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AppContext]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_pg_database()) if request.param == "postgres" else None
        app = create_app(make_settings(tmp_path_factory.mktemp("resources"), url))
        async with app.router.lifespan_context(app):
            ctx: AppContext = app.state.ctx
            yield ctx


def mem_total() -> float:
    """What this host's kernel reports, read here without psutil."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return float(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")
