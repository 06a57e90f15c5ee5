"""Fuzz the API from its own OpenAPI schema against a real server process: no input,
however odd, may produce a 500, and every 2xx body must match its declared schema."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from opscenter.app import create_app
from tests.conftest import ADMIN_PASSWORD, make_settings

# 10 cases per operation keeps `make test` under 20 minutes on 2 cores with ~200
# operations; raise it for a deeper run (OPSCENTER_FUZZ_EXAMPLES=100 make test).
MAX_EXAMPLES = int(os.environ.get("OPSCENTER_FUZZ_EXAMPLES", "10"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    env = {
        **os.environ,
        "OPSCENTER_DATA_DIR": str(data_dir),
        "OPSCENTER_PORT": str(port),
        "OPSCENTER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "OPSCENTER_RATE_LIMIT_ENABLED": "false",
        "OPSCENTER_LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "opscenter", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def admin_token(live_server: str) -> str:
    r = httpx.post(
        f"{live_server}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    token: str = r.json()["access_token"]
    return token


def _app_schema() -> dict[str, Any]:
    """The schema the server will serve, from the same app factory, at collection: one
    test per operation, so xdist hands this file out first instead of last."""
    with tempfile.TemporaryDirectory() as data_dir:
        return create_app(make_settings(Path(data_dir))).openapi()


schema = schemathesis.openapi.from_dict(_app_schema())


def test_the_served_schema_is_the_one_fuzzed(live_server: str) -> None:
    # The first request builds the document for some 600 routes: seconds on a busy machine.
    served = httpx.get(f"{live_server}/openapi.json", timeout=60)
    assert served.json() == schema.raw_schema


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case, live_server: str, admin_token: str) -> None:
    if case.path == "/api/v1/auth/logout":
        return  # would end the session every other case relies on
    case.call_and_validate(
        base_url=live_server,
        headers={"Authorization": f"Bearer {admin_token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
