"""Commands over SSH against a real sshd on loopback: injection attempts in every
variable never run, a timeout kills the remote process, output and exit codes are kept
exactly (also when not UTF-8), cancellation kills, and the output streams on the
WebSocket channel `command:<execution_id>`."""

from __future__ import annotations

import getpass
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from opscenter.core.events import Event
from opscenter.realtime.service import channels_of
from tests.commands.helpers import create_command, execute, unique
from tests.conftest import Api
from tests.ssh.conftest import SshServer

# What runs on the target does not depend on the metadata database: SQLite is enough here
# (the API tests of tests/commands/test_commands_api.py run on both).
pytestmark = pytest.mark.parametrize("api", ["sqlite"], indirect=True)


@pytest.fixture
async def ssh_server(
    admin: httpx.AsyncClient, sshd: SshServer, ssh_client_key: Path
) -> dict[str, Any]:
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": unique("ssh"),
            "type": "ssh",
            "host": "127.0.0.1",
            "port": sshd.port,
            "environment": "staging",
            "credentials": {"username": getpass.getuser(), "ssh_key": ssh_client_key.read_text()},
        },
    )
    assert r.status_code == 201, r.text
    server: dict[str, Any] = r.json()
    return server


def _processes_with(marker: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


ATTEMPTS = [
    "; id",
    "$(id)",
    "`id`",
    "a\nid",
    "--option=1",
    "' ; id ; '",
    '" ; id ; "',
    "a && id || id",
    "$HOME ${PATH} *",
    "a > /tmp/x",
]


async def test_injection_attempts_never_run(
    api: Api, admin: httpx.AsyncClient, ssh_server: dict[str, Any], tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    attempts = [*ATTEMPTS, f"; touch {canary}", f"$(touch {canary})", f"`touch {canary}`"]
    names = [f"v{i}" for i in range(len(attempts))]
    # A definition that lets anything through: each value must arrive as one literal word.
    loose = await create_command(
        admin,
        command_template="printf '[%s]\\n' " + " ".join(f"{{{{{n}}}}}" for n in names),
        variables=[{"name": n, "pattern": "(?s).*"} for n in names],
    )
    e = await execute(
        api,
        admin,
        loose["id"],
        server_id=ssh_server["id"],
        variables=dict(zip(names, attempts, strict=True)),
    )
    assert e["status"] == "completed", e
    assert e["stdout"] == "".join(f"[{a}]\n" for a in attempts)
    assert not canary.exists()

    # The default definition refuses them outright; NUL never gets past the schema.
    strict = await create_command(admin, command_template="echo {{a}}")
    url = f"/api/v1/commands/{strict['id']}/execute"
    for attempt in [*ATTEMPTS, "a\x00b"]:
        r = await admin.post(url, json={"server_id": ssh_server["id"], "variables": {"a": attempt}})
        assert r.status_code == 422, (attempt, r.text)
    assert (await admin.get(f"/api/v1/commands/{strict['id']}/executions")).json()["total"] == 0


async def test_output_exit_codes_and_bytes_exactly(
    api: Api, admin: httpx.AsyncClient, ssh_server: dict[str, Any]
) -> None:
    cmd = await create_command(
        admin,
        command_template="printf 'caf\\351\\n\\377\\376end'; "
        "printf 'warn: d\\303\\251j\\303\\240\\n\\377bad\\n' >&2; exit {{code}}",
        variables=[{"name": "code", "type": "int", "minimum": 0, "maximum": 255}],
    )
    e = await execute(api, admin, cmd["id"], server_id=ssh_server["id"], variables={"code": 42})
    assert e["status"] == "failed" and e["exit_code"] == 42
    [result] = e["results"]
    assert result["stdout_bytes"] == 10
    assert e["stdout"] == "caf\ufffd\n\ufffd\ufffdend"  # the row is text
    assert e["stderr"] == "warn: déjà\n\ufffdbad\n" and result["stderr_bytes"] == 18
    url = f"/api/v1/commands/executions/{e['id']}/results/{result['id']}/log"
    log = await admin.get(url, params={"stream": "stdout"})
    assert log.content == b"caf\xe9\n\xff\xfeend"  # the logs have the very bytes
    log = await admin.get(url, params={"stream": "stderr"})
    assert log.content == b"warn: d\xc3\xa9j\xc3\xa0\n\xffbad\n"
    ok = await execute(api, admin, cmd["id"], server_id=ssh_server["id"], variables={"code": 0})
    assert ok["status"] == "completed" and ok["exit_code"] == 0


async def test_timeout_kills_the_remote_process(
    api: Api, admin: httpx.AsyncClient, ssh_server: dict[str, Any]
) -> None:
    marker = f"oc{uuid.uuid4().hex[:10]}"
    cmd = await create_command(
        admin,
        command_template=f"echo started; sleep 300; echo {marker}-never",
        timeout_seconds=2,
    )
    e = await execute(api, admin, cmd["id"], server_id=ssh_server["id"])
    assert e["status"] == "timed_out", e
    [result] = e["results"]
    assert result["status"] == "timed_out" and "timed out after 2 s" in result["error"]
    assert e["stdout"] == "started\n" and 2 <= result["duration_seconds"] < 10
    assert _processes_with(marker) == []  # nothing of it is left on the target


async def test_cancel_kills_and_output_streams(
    api: Api, admin: httpx.AsyncClient, ssh_server: dict[str, Any]
) -> None:
    marker = f"oc{uuid.uuid4().hex[:10]}"
    cmd = await create_command(
        admin,
        command_template=f"echo one; sleep 0.2; printf 'e\\377rr\\n' >&2; sleep 0.2; echo two; "
        f"sleep 300; echo {marker}-never",
    )
    bus = api.app.state.ctx.events
    async with bus.subscribe() as queue:
        r = await admin.post(
            f"/api/v1/commands/{cmd['id']}/execute", json={"server_id": ssh_server["id"]}
        )
        assert r.status_code == 202
        execution_id = r.json()["execution_id"]
        lines: list[tuple[str, str]] = []
        while len(lines) < 3:  # both streams, live, each line marked with its stream
            event: Event = await queue.get()
            data = event.data
            if data.get("execution_id") == execution_id and "line" in data:
                assert f"command:{execution_id}" in channels_of(event)
                lines.append((data["stream"], data["line"]))
        assert lines == [("stdout", "one"), ("stderr", "e\ufffdrr"), ("stdout", "two")]
    assert _processes_with(marker)  # it runs
    r = await admin.post(f"/api/v1/commands/executions/{execution_id}/cancel")
    assert r.status_code == 200, r.text
    await api.app.state.ctx.runner.wait(int(r.json()["job_id"]), limit_seconds=30)
    e = (await admin.get(f"/api/v1/commands/executions/{execution_id}")).json()
    assert e["status"] == "cancelled" and e["results"][0]["status"] == "cancelled"
    assert _processes_with(marker) == []
    r = await admin.post(f"/api/v1/commands/executions/{execution_id}/cancel")
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
