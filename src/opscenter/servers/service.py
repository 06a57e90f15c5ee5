"""Servers: team-owned, credentials encrypted at rest and bound to their row."""

from __future__ import annotations

import json
import posixpath
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.auth.permissions import HOST_FILES
from opscenter.core.clock import utcnow
from opscenter.core.errors import Conflict, Forbidden, InvalidInput
from opscenter.core.hostfiles import HostFiles, check_shape
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.core.security import Keyring
from opscenter.models import Schedule, Server
from opscenter.remote.ssh import HostKeyInfo
from opscenter.servers import connect
from opscenter.servers.schemas import (
    DEFAULT_PORTS,
    HOSTS,
    NETWORKED,
    Credentials,
    CredentialsOut,
    ServerCreate,
    ServerOut,
    ServerType,
    ServerUpdate,
)


def server_out(server: Server) -> ServerOut:
    fields = set(server.credential_fields)
    return ServerOut.model_validate(
        {
            **{c: getattr(server, c) for c in ServerOut.model_fields if hasattr(server, c)},
            "credentials": CredentialsOut(
                username=server.credential_username,
                has_password="password" in fields,
                has_ssh_key="ssh_key" in fields,
                has_db_password="db_password" in fields,
            ),
        }
    )


def servers_query(principal: Principal) -> Select[Server]:
    return readable(select(Server), Server, principal).order_by(Server.id)


def filter_servers(
    stmt: Select[Server],
    *,
    type: str | None,
    environment: str | None,
    health: str | None,
    q: str | None,
) -> Select[Server]:
    if type:
        stmt = stmt.where(Server.type == type)
    if environment:
        stmt = stmt.where(Server.environment == environment)
    if health:
        stmt = stmt.where(Server.health_status == health)
    if q:
        stmt = stmt.where(func.lower(Server.name).contains(q.lower()))
    return stmt


async def get_server(session: AsyncSession, principal: Principal, server_id: int) -> Server:
    return await get_readable(session, Server, server_id, principal, name="Server")


def _context(server_id: int) -> str:
    return f"servers.credentials:{server_id}"


def _store_credentials(keyring: Keyring, server: Server, creds: Credentials | None) -> None:
    values = {k: v for k, v in (creds.model_dump() if creds else {}).items() if v is not None}
    server.credential_fields = sorted(values)
    server.credential_username = values.get("db_username") or values.get("username")
    server.credentials_encrypted = (
        keyring.encrypt_secret(json.dumps(values), context=_context(server.id)) if values else None
    )


def credentials_of(keyring: Keyring, server: Server) -> dict[str, Any]:
    if not server.credentials_encrypted:
        return {}
    data: dict[str, Any] = json.loads(
        keyring.decrypt_secret(server.credentials_encrypted, context=_context(server.id))
    )
    return data


def replace_db_password(keyring: Keyring, server: Server, password: str) -> None:
    """Stores a new database password (a rotated one), encrypted, in the field the server's
    database login reads it from (see `_target`)."""
    creds = credentials_of(keyring, server)
    direct = server.type in (ServerType.POSTGRESQL, ServerType.MYSQL)
    field = "password" if direct and "db_password" not in creds else "db_password"
    _store_credentials(keyring, server, Credentials(**{**creds, field: password}))


def _target(
    *,
    kind: ServerType,
    host: str,
    port: int | None,
    paths: tuple[str, ...],
    creds: dict[str, Any],
    host_key: str | None,
    db_engine: str | None,
    db_port: int | None,
    container: str | None,
) -> connect.Target:
    direct = kind in (ServerType.POSTGRESQL, ServerType.MYSQL)
    return connect.Target(
        type=kind,
        host=host,
        port=port,
        paths=paths,
        # A database server's login is the database's; a host's is the host's (SSH).
        username=(creds.get("db_username") or creds.get("username"))
        if direct
        else creds.get("username"),
        password=(creds.get("db_password") or creds.get("password"))
        if direct
        else creds.get("password"),
        ssh_key=creds.get("ssh_key"),
        host_key=host_key,
        db_engine=db_engine,
        db_port=db_port,
        db_username=creds.get("db_username"),
        db_password=creds.get("db_password"),
        container=container,
    )


def target_of(keyring: Keyring, server: Server) -> connect.Target:
    return _target(
        kind=ServerType(server.type),
        host=server.host,
        port=server.port,
        paths=tuple(server.paths),
        creds=credentials_of(keyring, server),
        host_key=server.ssh_host_key,
        db_engine=server.db_engine,
        db_port=server.db_port,
        container=server.container,
    )


# Their paths are this host's files, read (and restored) as the server's OS user.
ON_THIS_HOST = {ServerType.LOCAL, ServerType.SQLITE}


def check_paths(principal: Principal, files: HostFiles, kind: ServerType, paths: list[str]) -> None:
    """Absolute paths without `..`; on this host an admin's to set, and never the
    installation's keys or metadata database."""
    for path in paths:
        check_shape(path)
    if kind in ON_THIS_HOST and paths:
        if not principal.can(HOST_FILES):
            raise Forbidden(
                f"The paths of a {kind.value} server are this host's files: an admin sets them"
            )
        for path in paths:
            files.check_readable(path)


def _host(data: ServerCreate) -> str:
    # A docker server's host is where docker runs: none is this host, one is an SSH host.
    if data.type in NETWORKED or data.type == ServerType.DOCKER:
        return data.host or ""
    return data.host or "localhost"


def _port(data: ServerCreate) -> int | None:
    if data.type == ServerType.DOCKER and data.host:
        return data.port or 22
    return data.port or DEFAULT_PORTS.get(data.type)


def unsaved_target(principal: Principal, files: HostFiles, data: ServerCreate) -> connect.Target:
    """The Target a `create_server` of `data` would give, built in memory: the credentials
    are used as sent, never encrypted, stored or logged."""
    if data.team_id is not None:
        check_team_access(principal, data.team_id)
    check_paths(principal, files, data.type, data.paths)
    creds = data.credentials.model_dump(exclude_none=True) if data.credentials else {}
    return _target(
        kind=data.type,
        host=_host(data),
        port=_port(data),
        paths=tuple(data.paths),
        creds=creds,
        host_key=data.ssh_host_key,
        db_engine=data.db_engine,
        db_port=data.db_port,
        container=data.container,
    )


async def probe_unsaved(
    principal: Principal, files: HostFiles, data: ServerCreate
) -> connect.Probe:
    """Test before saving: the same probe as a stored server's, with nothing written."""
    return await connect.probe(unsaved_target(principal, files, data))


def pin_host_key(server: Server, seen: HostKeyInfo | None) -> bool:
    """Trust on first use: remember the key an SSH host showed the first time."""
    if seen is None or server.ssh_host_key:
        return False
    server.ssh_host_key = seen.public_key
    return True


async def _ensure_unique_name(
    session: AsyncSession, team_id: int, name: str, exclude_id: int | None = None
) -> None:
    stmt = select(Server.id).where(
        Server.team_id == team_id, func.lower(Server.name) == func.lower(name)
    )
    if exclude_id is not None:
        stmt = stmt.where(Server.id != exclude_id)
    if await session.scalar(stmt.limit(1)) is not None:
        raise Conflict(f"A server named '{name}' already exists in this team")


THIS_HOST = "this host"


def add_this_host(session: AsyncSession, team_id: int) -> None:
    """On first start: the host opscenter runs on, a `local` server of the default team,
    so that seed 000's jobs, which name a path and no server, have one. It starts with no
    paths: which of this host's files jobs may read is an admin's choice (an admin's seed
    000 job adds its path; see `allow_on_this_host`)."""
    session.add(
        Server(
            team_id=team_id,
            name=THIS_HOST,
            description="The host opscenter runs on (created on first start)",
            type=ServerType.LOCAL.value,
            host="localhost",
            paths=[],
            tags={},
        )
    )


async def this_host(session: AsyncSession, principal: Principal) -> Server:
    """The caller's "this host" server, for a request that names no server."""
    stmt = select(Server).where(Server.type == ServerType.LOCAL.value, Server.name == THIS_HOST)
    server: Server | None = await session.scalar(
        readable(stmt, Server, principal).order_by(Server.id).limit(1)
    )
    if server is None:
        raise InvalidInput(f"Give server_id: no '{THIS_HOST}' server is in your teams")
    return server


def allow_on_this_host(principal: Principal, files: HostFiles, server: Server, path: str) -> bool:
    """A seed 000 job's `source_path` on 'this host': inside its paths, or added to them
    when the caller may set this host's paths (True: the server changed). Never the
    installation's keys or metadata database."""
    files.check_readable(path)
    norm = posixpath.normpath(path)
    if any(norm == r or norm.startswith(r.rstrip("/") + "/") for r in server.paths):
        return False
    if not principal.can(HOST_FILES):
        raise Forbidden(
            f"{path} is not among the paths of '{THIS_HOST}' ({', '.join(server.paths) or 'none'})"
            f": an admin adds it to them (PATCH /api/v1/servers/{server.id}) or creates this job"
        )
    server.paths = [*server.paths, path]
    return True


async def create_server(
    session: AsyncSession,
    keyring: Keyring,
    principal: Principal,
    files: HostFiles,
    data: ServerCreate,
) -> Server:
    team_id = data.team_id or min(principal.team_ids, default=None)
    if team_id is None:
        raise InvalidInput("You belong to no team; give team_id or ask an admin to add you")
    check_team_access(principal, team_id)
    check_paths(principal, files, data.type, data.paths)
    await _ensure_unique_name(session, team_id, data.name)
    server = Server(
        team_id=team_id,
        name=data.name,
        description=data.description,
        type=data.type.value,
        environment=data.environment.value,
        host=_host(data),
        port=_port(data),
        paths=list(data.paths),
        tags=dict(data.tags),
        db_engine=data.db_engine,
        db_port=data.db_port,
        ssh_host_key=data.ssh_host_key,
        container=data.container,
    )
    session.add(server)
    await session.flush()  # the id binds the credentials' ciphertext to this row
    _store_credentials(keyring, server, data.credentials)
    await session.flush()
    return server


async def update_server(
    session: AsyncSession,
    keyring: Keyring,
    principal: Principal,
    files: HostFiles,
    server_id: int,
    data: ServerUpdate,
) -> tuple[Server, list[str]]:
    server = await get_server(session, principal, server_id)
    if data.paths is not None and data.paths != server.paths:
        check_paths(principal, files, ServerType(server.type), data.paths)
    changed = []
    if data.reset_host_key and server.ssh_host_key:
        server.ssh_host_key = None
        changed.append("ssh_host_key")
    if server.type not in HOSTS and (data.db_engine or data.db_port):
        raise InvalidInput("db_engine and db_port apply to local, ssh and docker hosts")
    if data.container and server.type != ServerType.DOCKER:
        raise InvalidInput("container applies to docker servers")
    fields = ("name", "description", "host", "port", "paths", "tags", "db_engine", "db_port")
    for field in (*fields, "container"):
        value = getattr(data, field)
        if value is not None and value != getattr(server, field):
            if field == "name":
                await _ensure_unique_name(session, server.team_id, value, server.id)
            setattr(server, field, value)
            changed.append(field)
    if data.environment is not None and data.environment.value != server.environment:
        server.environment = data.environment.value
        changed.append("environment")
    if "credentials" in data.model_fields_set:
        _store_credentials(keyring, server, data.credentials)
        changed.append("credentials")
    if server.type == ServerType.SQLITE and not server.paths:
        raise InvalidInput("a sqlite server needs the database files in paths")
    if changed:
        server.health_status = "unknown"
    await session.flush()
    return server, changed


async def delete_server(session: AsyncSession, principal: Principal, server_id: int) -> Server:
    server = await get_server(session, principal, server_id)
    # Without its sandbox a schedule would run its restore tests on its source server,
    # which may be the production one the sandbox was there to spare.
    sandboxed = (
        await session.scalars(
            select(Schedule.name).where(
                Schedule.restore_test_server_id == server.id, Schedule.server_id != server.id
            )
        )
    ).all()
    if sandboxed:
        raise Conflict(
            f"Schedules run their restore tests on '{server.name}': "
            f"{', '.join(sorted(sandboxed))}. Choose another restore-test server for them first"
        )
    await session.delete(server)
    await session.flush()
    return server


async def record_health(session: AsyncSession, server: Server, result: connect.Probe) -> bool:
    """Store a probe's outcome; True when the health status changed."""
    status = "healthy" if result.success else "unhealthy"
    changed = status != server.health_status
    if result.success:
        pin_host_key(server, result.host_key)
    server.health_status = status
    server.health_message = result.message[:2000]
    server.last_heartbeat = utcnow()
    await session.flush()
    return changed
