"""Commands on a docker server (a real container on this host): `docker` runs in the
container, `shell` on its host, `sql` in its database; a timeout kills what ran inside."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.commands.helpers import create_command, execute, unique
from tests.commands.test_commands_ssh import _processes_with
from tests.conftest import Api
from tests.docker.conftest import PgContainer

pytestmark = pytest.mark.parametrize("api", ["sqlite"], indirect=True)


@pytest.fixture
async def container_server(admin: httpx.AsyncClient, pg_container: PgContainer) -> dict[str, Any]:
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": unique("docker"),
            "type": "docker",
            "container": pg_container.name,
            "credentials": {"db_username": "postgres"},
            "db_engine": "postgresql",
        },
    )
    assert r.status_code == 201, r.text
    server: dict[str, Any] = r.json()
    return server


async def test_docker_shell_and_sql_run_where_they_should(
    api: Api, admin: httpx.AsyncClient, container_server: dict[str, Any], pg_container: PgContainer
) -> None:
    where = "id -u; cat /proc/1/cmdline | tr '\\000' ' '; echo; echo to-stderr >&2"
    inside = await create_command(admin, type="docker", command_template=where)
    host = await create_command(admin, type="shell", command_template=where)
    e = await execute(api, admin, inside["id"], server_id=container_server["id"])
    assert e["status"] == "completed", e
    uid, init = e["stdout"].splitlines()[:2]
    assert uid == "70" and "postgres -D /var/lib/pg" in init  # its user, its PID 1
    assert e["stderr"] == "to-stderr\n"  # streamed, without the wrapper's marker line
    e = await execute(api, admin, host["id"], server_id=container_server["id"])
    assert e["status"] == "completed" and e["stdout"].splitlines()[0] != "70", e

    sql = await create_command(
        admin,
        type="sql",
        command_template="select {{a}}::int + 2",
        variables=[{"name": "a", "type": "int"}],
    )
    e = await execute(api, admin, sql["id"], server_id=container_server["id"], variables={"a": 40})
    assert e["status"] == "completed" and e["stdout"].strip() == "42", e


async def test_timeout_kills_inside_the_container(
    api: Api, admin: httpx.AsyncClient, container_server: dict[str, Any]
) -> None:
    marker = f"oc{uuid.uuid4().hex[:10]}"
    cmd = await create_command(
        admin, type="docker", command_template=f"sleep 300; echo {marker}", timeout_seconds=2
    )
    e = await execute(api, admin, cmd["id"], server_id=container_server["id"])
    assert e["status"] == "timed_out", e
    assert _processes_with(marker) == []  # container processes show in this host's /proc
