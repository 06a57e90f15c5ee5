"""Servers (seed 001): CRUD, connection test, database discovery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.db import release
from opscenter.core.errors import AppError, Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.failures import BackupError
from opscenter.core.hostfiles import HostFiles
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.servers import connect, service
from opscenter.servers.schemas import (
    ConnectionTest,
    DatabaseInfo,
    DatabaseList,
    Environment,
    ServerCreate,
    ServerOut,
    ServerType,
    ServerUpdate,
)

router = APIRouter(prefix="/servers", tags=["Servers"])
ReadServers = Annotated[Principal, Depends(require("read:servers"))]
WriteServers = Annotated[Principal, Depends(require("write:servers"))]


class ServerUnreachable(AppError):
    status_code = 502
    code = "SERVER_UNREACHABLE"


@router.get("", response_model=Page[ServerOut])
async def list_servers(
    principal: ReadServers,
    session: SessionDep,
    paging: Paging,
    type: ServerType | None = None,
    environment: Environment | None = None,
    health_status: Annotated[str | None, Query(pattern="^(unknown|healthy|unhealthy)$")] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[ServerOut]:
    stmt = service.filter_servers(
        service.servers_query(principal),
        type=type,
        environment=environment,
        health=health_status,
        q=q,
    )
    rows, total = await paginate(session, stmt, paging)
    return Page.of([service.server_out(s) for s in rows], total, paging)


@router.post(
    "",
    response_model=ServerOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Conflict, Forbidden, InvalidInput, NotFound),
)
async def create_server(
    body: ServerCreate, principal: WriteServers, session: SessionDep, ctx: Ctx, request: Request
) -> ServerOut:
    server = await service.create_server(
        session, ctx.keyring, principal, HostFiles(ctx.settings), body
    )
    await audit.record(
        session,
        action="server.create",
        actor=principal,
        resource_type="server",
        resource_id=server.id,
        details={"name": server.name, "type": server.type, "host": server.host},
        origin=origin_of(request),
    )
    return service.server_out(server)


def _connection_test(result: connect.Probe) -> ConnectionTest:
    return ConnectionTest(
        success=result.success,
        message=result.message,
        latency_ms=result.latency_ms,
        code=result.code,
        version=result.version,
        host_key_fingerprint=result.host_key.fingerprint if result.host_key else None,
    )


# Declared before the `/{server_id}` routes, so the literal path is never read as an id.
@router.post(
    "/test-connection", response_model=ConnectionTest, responses=responses(Forbidden, NotFound)
)
async def test_unsaved_connection(
    body: ServerCreate, principal: WriteServers, session: SessionDep, ctx: Ctx
) -> ConnectionTest:
    """Test before saving: the body of `POST /servers`, probed as it is; nothing is stored
    (the credentials are used in memory only) and nothing is audited."""
    await release(session)  # authentication's transaction
    return _connection_test(await service.probe_unsaved(principal, HostFiles(ctx.settings), body))


@router.get("/{server_id}", response_model=ServerOut, responses=responses(NotFound))
async def get_server(server_id: PathId, principal: ReadServers, session: SessionDep) -> ServerOut:
    return service.server_out(await service.get_server(session, principal, server_id))


@router.put(
    "/{server_id}",
    response_model=ServerOut,
    responses=responses(Conflict, Forbidden, InvalidInput, NotFound),
)
async def update_server(
    server_id: PathId,
    body: ServerUpdate,
    principal: WriteServers,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> ServerOut:
    server, changed = await service.update_server(
        session, ctx.keyring, principal, HostFiles(ctx.settings), server_id, body
    )
    await audit.record(
        session,
        action="server.update",
        actor=principal,
        resource_type="server",
        resource_id=server.id,
        details={"changed": changed},
        origin=origin_of(request),
    )
    return service.server_out(server)


@router.delete(
    "/{server_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound, Conflict)
)
async def delete_server(
    server_id: PathId, principal: WriteServers, session: SessionDep, request: Request
) -> None:
    server = await service.delete_server(session, principal, server_id)
    await audit.record(
        session,
        action="server.delete",
        actor=principal,
        resource_type="server",
        resource_id=server_id,
        team_id=server.team_id,
        details={"name": server.name},
        origin=origin_of(request),
    )


@router.post(
    "/{server_id}/test-connection", response_model=ConnectionTest, responses=responses(NotFound)
)
async def test_connection(
    server_id: PathId, principal: WriteServers, session: SessionDep, ctx: Ctx
) -> ConnectionTest:
    """Connects with the stored credentials and the same tools a backup uses."""
    target = service.target_of(ctx.keyring, await service.get_server(session, principal, server_id))
    await release(session)
    result = await connect.probe(target)
    server = await service.get_server(session, principal, server_id)
    if service.target_of(ctx.keyring, server) != target:
        return _connection_test(result)  # edited while we probed: not its health (or key) now
    if await service.record_health(session, server, result):
        ctx.events.publish(
            Event(
                "server.health_changed",
                {
                    "server_id": server.id,
                    "health_status": server.health_status,
                    "message": server.health_message,
                },
                team_id=server.team_id,
            )
        )
    return _connection_test(result)


@router.get(
    "/{server_id}/databases",
    response_model=DatabaseList,
    responses=responses(NotFound, ServerUnreachable),
)
async def list_databases(
    server_id: PathId, principal: WriteServers, session: SessionDep, ctx: Ctx
) -> DatabaseList:
    """Read live from the server: names and sizes."""
    target = service.target_of(ctx.keyring, await service.get_server(session, principal, server_id))
    await release(session)
    try:
        found = await connect.list_databases(target)
    except BackupError as err:
        raise ServerUnreachable(connect.explain(err)) from None
    return DatabaseList(
        databases=[
            DatabaseInfo(name=d.name, size_mb=round(d.size_bytes / 1_048_576, 2), type=d.type)
            for d in found
        ]
    )
