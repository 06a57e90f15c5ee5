"""The deployment files cannot drift from the code: the compose file is valid Compose
(checked by docker-compose itself, without an engine), and every variable they and the
deploy guide set is a setting opscenter reads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.routing import APIWebSocketRoute
from pydantic import AliasChoices

from opscenter.config import Settings
from opscenter.realtime.router import router as realtime

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
# Set in the opscenter containers although not opscenter's: each with whose it is.
FOREIGN = {"FORWARDED_ALLOW_IPS": "uvicorn: whose X-Forwarded-For to trust"}


def setting_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


def required_variables() -> set[str]:
    """The variables the compose file refuses to start without (`${NAME:?...}`)."""
    return set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: scripts/ensure-system.sh installs it"
    clean = {k: v for k, v in os.environ.items() if k not in required_variables()}
    return subprocess.run(
        [binary, "--project-directory", str(DEPLOY), "-f", str(COMPOSE), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose reads it: anchors merged, variables filled in."""
    secrets = {name: f"value-of-{name.lower()}" for name in required_variables()}
    done = compose("config", env=secrets)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def opscenter_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in config["services"].items()
        if service.get("image", "").startswith("opscenter:")
    }


def test_compose_file_is_valid_and_needs_its_secrets() -> None:
    secrets = {name: "x" for name in required_variables()}
    assert required_variables() == {
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "OPSCENTER_ADMIN_PASSWORD",
    }
    done = compose("config", "-q", env=secrets)
    assert done.returncode == 0, done.stderr
    for missing in sorted(required_variables()):
        done = compose("config", "-q", env={k: v for k, v in secrets.items() if k != missing})
        assert done.returncode != 0 and missing in done.stderr, (missing, done.stderr)
    # The example env file names exactly what must be set.
    example = (DEPLOY / "example.env").read_text()
    assert set(re.findall(r"^([A-Z_]+)=", example, re.MULTILINE)) == required_variables()


def test_the_stack_is_scaled_out(resolved: dict[str, Any]) -> None:
    services = opscenter_services(resolved)
    commands = {name: service["command"] for name, service in services.items()}
    apis = sorted(n for n, c in commands.items() if c[:2] == ["opscenter", "serve"])
    workers = sorted(n for n, c in commands.items() if c == ["opscenter", "worker"])
    assert len(apis) >= 2 and len(workers) >= 2, commands
    assert all("--no-jobs" in commands[name] for name in apis)  # the workers take the jobs
    for service in services.values():
        env = service["environment"]
        assert env["OPSCENTER_JOB_ENGINE"] == "procrastinate"
        assert env["OPSCENTER_EVENT_BUS"] == "redis" and env["REDIS_URL"].startswith("redis://")
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert "value-of-postgres_password" in env["DATABASE_URL"]
        # Every process reads the same keys: one data dir volume for all of them.
        assert any(":/var/lib/opscenter/data" in v for v in _volumes(service))
    # A worker serves no API: its jobs' metrics are on a port of its own.
    assert all(services[name]["environment"].get("OPSCENTER_METRICS_PORT") for name in workers)
    # The proxy spreads over exactly the API processes, and upgrades the app's WebSockets.
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert sorted(re.findall(r"^\s*server\s+([\w-]+):8000", nginx, re.MULTILINE)) == apis
    sockets = {r.path for r in realtime.routes if isinstance(r, APIWebSocketRoute)}
    assert sockets == {"/ws"}
    for path in sockets:
        block = nginx.split(f"location {path} {{", 1)[1].split("}", 1)[0]
        assert "proxy_set_header Upgrade $http_upgrade;" in block


def _volumes(service: dict[str, Any]) -> list[str]:
    return [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service["volumes"]]


def test_every_variable_set_is_a_real_setting(resolved: dict[str, Any]) -> None:
    known = setting_names() | set(FOREIGN)
    for name, service in opscenter_services(resolved).items():
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name} sets what opscenter does not read: {sorted(unknown)}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    image_env = set(re.findall(r"\b(OPSCENTER_[A-Z_]+)=", dockerfile))
    assert image_env and image_env <= setting_names()
    # The guide too: each OPSCENTER_* it names is read by opscenter.
    guide = set(re.findall(r"\bOPSCENTER_[A-Z_]+[A-Z]\b", (ROOT / "docs/deploy.md").read_text()))
    assert guide and guide <= setting_names(), sorted(guide - setting_names())
