"""Fuzz the API from its own OpenAPI schema against a real server process: no input,
however odd, may produce a 500, and every 2xx body must match its declared schema."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import ADMIN_PASSWORD

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


@pytest.fixture(scope="module")
def api_schema(live_server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case, admin_token: str) -> None:
    if case.path == "/api/v1/auth/logout":
        return  # would end the session every other case relies on
    case.call_and_validate(
        headers={"Authorization": f"Bearer {admin_token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
