"""Commands through the API on SQLite and PostgreSQL: seed 001's examples, typed
variables, bad input, roles, team scoping, targets, execution on this host and as SQL."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.commands.helpers import create_command, execute, this_host, unique
from tests.conftest import Api, UserFactory


async def test_seed_001_examples(api: Api, admin: httpx.AsyncClient) -> None:
    name = unique("Restart Docker Container")
    r = await admin.post(
        "/api/v1/commands",
        json={
            "name": name,
            "description": "Restart a specific container",
            "command_template": "docker restart {{container_name}}",
            "type": "docker",
            "tags": "docker,restart",
        },
    )
    assert r.status_code == 201, r.text
    cmd = r.json()
    assert cmd["tags"] == ["docker", "restart"] and cmd["created_by"] == "admin"
    # The placeholder without a definition got a conservative string one.
    [var] = cmd["variables"]
    assert var["name"] == "container_name" and var["type"] == "string" and not var["secret"]
    listed = (await admin.get("/api/v1/commands", params={"limit": 1000})).json()
    assert cmd["id"] in [c["id"] for c in listed["items"]] and listed["total"] >= 1
    assert (await admin.get("/api/v1/commands", params={"tag": "restart"})).json()["total"] >= 1

    # Seed 001's execute: on this host, the docker CLI is not there (or the container is
    # not): the record says so, with the exit code, whatever happens.
    local = await this_host(admin)
    r = await admin.post(
        f"/api/v1/commands/{cmd['id']}/execute",
        json={"server_id": local["id"], "variables": {"container_name": "myapp_web"}},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert {"execution_id", "status", "task_id"} <= set(body)
    await api.app.state.ctx.runner.wait(int(body["task_id"]), limit_seconds=60)
    r = await admin.get(f"/api/v1/commands/{cmd['id']}/executions")
    [e] = r.json()["items"]
    assert e["command_text"] == "docker restart myapp_web"
    assert e["status"] in ("completed", "failed") and e["executed_by"] == "admin"
    assert e["completed_at"] and e["duration_seconds"] is not None


async def test_run_on_this_host_records_output(api: Api, admin: httpx.AsyncClient) -> None:
    local = await this_host(admin)
    cmd = await create_command(
        admin,
        command_template="printf '%s\\n' {{who}} {{n}}; echo oops >&2; exit {{code}}",
        variables=[
            {"name": "who", "type": "enum", "allowed_values": ["alice", "bob"]},
            {"name": "n", "type": "int", "minimum": 1, "maximum": 5, "default": 3},
            {"name": "code", "type": "int", "default": 0},
        ],
    )
    ok = await execute(api, admin, cmd["id"], server_id=local["id"], variables={"who": "bob"})
    assert ok["status"] == "completed" and ok["exit_code"] == 0
    assert ok["stdout"] == "bob\n3\n" and ok["stderr"] == "oops\n"
    [result] = ok["results"]
    assert result["server_name"] == "this host" and result["stdout_bytes"] == 6

    bad = await execute(
        api, admin, cmd["id"], server_id=local["id"], variables={"who": "alice", "code": 3}
    )
    assert bad["status"] == "failed" and bad["exit_code"] == 3 and bad["stdout"] == "alice\n3\n"
    # The whole log, as written.
    r = await admin.get(
        f"/api/v1/commands/executions/{bad['id']}/results/{bad['results'][0]['id']}/log"
    )
    assert r.status_code == 200 and r.content == b"alice\n3\n"


async def test_bad_input(api: Api, admin: httpx.AsyncClient) -> None:
    cases = [
        ({"command_template": "echo '{{x}}'"}, "inside quotes"),
        ({"command_template": 'echo "a {{x}}"'}, "inside quotes"),
        ({"command_template": "cat <<EOF\n{{x}}\nEOF"}, "here-documents"),
        ({"command_template": "echo {{x}}", "variables": [{"name": "y"}]}, "not used"),
        ({"command_template": "echo {{x}}", "variables": [{"name": "x", "type": "enum"}]}, "enum"),
        ({"command_template": "echo {{x}}", "variables": [{"name": "x", "pattern": "("}]}, "regex"),
        ({"command_template": "echo {{x}}", "variables": [{"name": "x", "default": "-rf"}]}, "'-'"),
    ]
    for fields, words in cases:
        r = await admin.post("/api/v1/commands", json={"name": unique(), **fields})
        assert r.status_code == 422, (fields, r.text)
        assert r.json()["code"] == "VALIDATION_ERROR" and words in r.json()["detail"], r.text
    for body in (
        {"name": unique(), "command_template": "x", "type": "powershell"},
        {"name": unique(), "command_template": "x", "timeout_seconds": 0},
        {"name": unique(), "command_template": "x", "role": "admin"},
        {"name": "", "command_template": "x"},
    ):
        r = await admin.post("/api/v1/commands", json=body)
        assert r.status_code == 422, body
    cmd = await create_command(admin)
    r = await admin.post("/api/v1/commands", json={"name": cmd["name"], "command_template": "x"})
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
    # Nothing was written by the refusals.
    names = [c["name"] for c in (await admin.get("/api/v1/commands?limit=1000")).json()["items"]]
    assert names.count(cmd["name"]) == 1
    r = await admin.put(f"/api/v1/commands/{cmd['id']}", json={"command_template": "a '{{b}}'"})
    assert r.status_code == 422
    assert (await admin.get(f"/api/v1/commands/{cmd['id']}")).json()["command_template"] == (
        "echo hello"
    )
    assert (await admin.get("/api/v1/commands/999999")).status_code == 404

    local = await this_host(admin)
    typed = await create_command(
        admin,
        command_template="echo {{n}} {{p}}",
        variables=[{"name": "n", "type": "int"}, {"name": "p", "type": "path"}],
    )
    url = f"/api/v1/commands/{typed['id']}/execute"
    for variables, words in [
        ({"n": "1; id", "p": "/tmp"}, "whole number"),
        ({"n": 1, "p": "relative"}, "absolute path"),
        ({"n": 1, "p": "/tmp/../etc"}, "absolute path"),
        ({"n": 1}, "required"),
        ({"n": 1, "p": "/x", "other": "y"}, "unknown"),
    ]:
        r = await admin.post(url, json={"server_id": local["id"], "variables": variables})
        assert r.status_code == 422 and words in r.json()["detail"], (variables, r.text)
    r = await admin.post(url, json={"variables": {"n": 1, "p": "/x"}})
    assert r.status_code == 422  # no target
    r = await admin.post(url, json={"server_id": 999999, "variables": {"n": 1, "p": "/x"}})
    assert r.status_code == 404
    r = await admin.get(f"/api/v1/commands/{typed['id']}/executions")
    assert r.json()["total"] == 0  # none of the refusals left an execution


async def test_roles_and_unauthenticated(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    cmd = await create_command(admin)
    local = await this_host(admin)
    viewer = await make_user("viewer")
    operator = await make_user("operator")
    async with viewer.client(api) as c:
        assert (await c.get(f"/api/v1/commands/{cmd['id']}")).status_code == 200
        r = await c.post(f"/api/v1/commands/{cmd['id']}/execute", json={"server_id": local["id"]})
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
        r = await c.post("/api/v1/commands", json={"name": unique(), "command_template": "x"})
        assert r.status_code == 403
        assert (await c.delete(f"/api/v1/commands/{cmd['id']}")).status_code == 403
    async with operator.client(api) as c:
        # Shell on the host opscenter runs on is an admin's (access:host_files).
        r = await c.post(f"/api/v1/commands/{cmd['id']}/execute", json={"server_id": local["id"]})
        assert r.status_code == 403 and "access:host_files" in r.json()["detail"]
    async with api.client() as c:
        r = await c.get("/api/v1/commands")
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
        r = await c.post(f"/api/v1/commands/{cmd['id']}/execute", json={"server_id": 1})
        assert r.status_code == 401


async def test_another_teams_command_is_a_404(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = (await admin.post("/api/v1/users/teams", json={"name": unique("team")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    cmd = await create_command(admin)
    local = await this_host(admin)
    done = await execute(api, admin, cmd["id"], server_id=local["id"])
    async with outsider.client(api) as c:
        for method, path, body in [
            ("GET", f"/commands/{cmd['id']}", None),
            ("PUT", f"/commands/{cmd['id']}", {"description": "x"}),
            ("DELETE", f"/commands/{cmd['id']}", None),
            ("POST", f"/commands/{cmd['id']}/execute", {"server_id": local["id"]}),
            ("POST", f"/commands/{cmd['id']}/targets", {"server_id": local["id"]}),
            ("GET", f"/commands/{cmd['id']}/executions", None),
            ("GET", f"/commands/executions/{done['id']}", None),
            ("POST", f"/commands/executions/{done['id']}/cancel", None),
        ]:
            r = await c.request(method, f"/api/v1{path}", json=body)
            assert r.status_code == 404, (method, path, r.text)
        listed = (await c.get("/api/v1/commands/executions", params={"limit": 1000})).json()
        assert done["id"] not in [e["id"] for e in listed["items"]]
        # Its own command cannot name another team's server either.
        own = await create_command(c, team_id=team["id"])
        r = await c.post(f"/api/v1/commands/{own['id']}/execute", json={"server_id": local["id"]})
        assert r.status_code == 404


async def test_targets_by_selector_and_production_confirmation(
    api: Api, admin: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = []
    for env in ("staging", "production"):
        r = await admin.post(
            "/api/v1/servers",
            json={
                "name": unique("host"),
                "type": "ssh",
                "host": "127.0.0.1",
                "port": 1,
                "environment": env,
                "tags": {"role": tag},
            },
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    cmd = await create_command(admin, name=unique("uptime"))
    r = await admin.post(f"/api/v1/commands/{cmd['id']}/targets", json={"tags": {"role": tag}})
    preview = r.json()
    assert r.status_code == 200 and sorted(t["id"] for t in preview["items"]) == sorted(ids)
    assert preview["confirmation_required"] is True and preview["confirm_text"] == cmd["name"]
    staging = (
        await admin.post(
            f"/api/v1/commands/{cmd['id']}/targets",
            json={"tags": {"role": tag}, "environment": "staging"},
        )
    ).json()
    assert [t["id"] for t in staging["items"]] == ids[:1] and not staging["production"]
    r = await admin.post(f"/api/v1/commands/{cmd['id']}/execute", json={"tags": {"role": tag}})
    assert r.status_code == 422 and "set confirm" in r.json()["detail"]
    r = await admin.post(
        f"/api/v1/commands/{cmd['id']}/targets", json={"server_id": ids[0], "tags": {"a": "b"}}
    )
    assert r.status_code == 422  # one way of choosing at a time
    # Confirmed: it runs, and the unreachable hosts are recorded as failed, each on its own.
    e = await execute(api, admin, cmd["id"], tags={"role": tag}, confirm=cmd["name"])
    assert e["status"] == "failed" and len(e["results"]) == 2
    assert all("cannot reach" in r["error"] for r in e["results"])


@pytest.mark.parametrize("writes", [False, True])
async def test_sql_is_read_only_unless_marked(
    api: Api, admin: httpx.AsyncClient, writes: bool
) -> None:
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": unique("pg"),
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": 5432,
            "credentials": {"username": "postgres"},
        },
    )
    server = r.json()
    table = f"oc_cmd_{uuid.uuid4().hex[:8]}"
    cmd = await create_command(
        admin,
        type="sql",
        database="postgres",
        writes=writes,
        command_template=f"create table {table} (v text); insert into {table} values ({{{{v}}}}) "
        f"returning v",
        variables=[{"name": "v", "pattern": ".*"}],
    )
    value = "it's'; drop table x; --"
    e = await execute(api, admin, cmd["id"], server_id=server["id"], variables={"v": value})
    if writes:
        assert e["status"] == "completed", e
        assert value in e["stdout"].splitlines()
        await execute(
            api,
            admin,
            (
                await create_command(
                    admin, type="sql", writes=True, command_template=f"drop table {table}"
                )
            )["id"],
            server_id=server["id"],
        )
    else:
        assert e["status"] == "failed" and "read-only transaction" in e["stderr"], e
