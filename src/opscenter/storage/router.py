"""Storage providers (seed 000): CRUD, test, space, and what the storage holds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.db import release
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.storage import service
from opscenter.storage.schemas import (
    SpaceOut,
    StorageCreate,
    StorageOut,
    StorageTest,
    StorageTestResult,
    StorageType,
    StorageUpdate,
    StoredArtifact,
    StoredArtifacts,
)

router = APIRouter(prefix="/storage", tags=["Storage"])
ReadStorage = Annotated[Principal, Depends(require("read:storage"))]
WriteStorage = Annotated[Principal, Depends(require("write:storage"))]
WRITE_ERRORS = responses(Conflict, InvalidInput, NotFound)


@router.get("/providers", response_model=Page[StorageOut])
async def list_providers(
    principal: ReadStorage, session: SessionDep, paging: Paging
) -> Page[StorageOut]:
    rows, total = await paginate(session, service.providers_query(principal), paging)
    return Page.of([service.storage_out(p) for p in rows], total, paging)


@router.post(
    "/providers",
    response_model=StorageOut,
    status_code=status.HTTP_201_CREATED,
    responses=WRITE_ERRORS,
)
async def create_provider(
    body: StorageCreate, principal: WriteStorage, session: SessionDep, ctx: Ctx, request: Request
) -> StorageOut:
    """Credentials are encrypted at rest and never returned (`has_credentials`)."""
    provider = await service.create_provider(session, ctx.keyring, ctx.outbound, principal, body)
    await audit.record(
        session,
        action="storage.create",
        actor=principal,
        resource_type="storage",
        resource_id=provider.id,
        details={"name": provider.name, "type": provider.type, "config": provider.config},
        origin=origin_of(request),
    )
    return service.storage_out(provider)


@router.get("/providers/{provider_id}", response_model=StorageOut, responses=responses(NotFound))
async def get_provider(
    provider_id: PathId, principal: ReadStorage, session: SessionDep
) -> StorageOut:
    return service.storage_out(await service.get_provider(session, principal, provider_id))


@router.put("/providers/{provider_id}", response_model=StorageOut, responses=WRITE_ERRORS)
async def update_provider(
    provider_id: PathId,
    body: StorageUpdate,
    principal: WriteStorage,
    session: SessionDep,
    request: Request,
    ctx: Ctx,
) -> StorageOut:
    provider, changed = await service.update_provider(
        session, ctx.keyring, ctx.outbound, principal, provider_id, body
    )
    await audit.record(
        session,
        action="storage.update",
        actor=principal,
        resource_type="storage",
        resource_id=provider.id,
        details={"changed": changed},
        origin=origin_of(request),
    )
    return service.storage_out(provider)


@router.delete(
    "/providers/{provider_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Conflict),
)
async def delete_provider(
    provider_id: PathId, principal: WriteStorage, session: SessionDep, request: Request
) -> None:
    provider = await service.delete_provider(session, principal, provider_id)
    await audit.record(
        session,
        action="storage.delete",
        actor=principal,
        resource_type="storage",
        resource_id=provider_id,
        team_id=provider.team_id,
        details={"name": provider.name},
        origin=origin_of(request),
    )


@router.post("/test", response_model=StorageTestResult, responses=responses(NotFound, InvalidInput))
async def test_storage(
    body: StorageTest, principal: WriteStorage, session: SessionDep, ctx: Ctx
) -> StorageTestResult:
    """Writes, reads back and deletes a small object, on a saved provider or a configuration."""
    if body.provider_id is not None:
        provider = await service.get_provider(session, principal, body.provider_id)
        storage = service.backend(provider, ctx.keyring)
        probed = provider.config
        await release(session)
        result = await service.probe(storage)
        provider = await service.get_provider(session, principal, body.provider_id)
        if result.success and provider.config == probed:  # not edited while we probed
            service.pin_host_key(provider, storage)
        return result
    if body.provider is None:
        raise InvalidInput("Give provider_id, or provider with type and config")
    try:
        await release(session)  # authentication's transaction, before the name is resolved
        config = await service.validated_config(
            StorageType(body.provider.type), body.provider.config.model_dump(), ctx.outbound
        )
    except InvalidInput as unusable:
        if body.connection_string is None:
            raise
        # What a user typed was understood but cannot work from here: say why and what to do.
        return StorageTestResult(
            success=False, message=unusable.detail, latency_ms=0, code="unusable"
        )
    credentials = getattr(body.provider, "credentials", None)
    secrets = credentials.model_dump() if credentials else {}
    return await service.probe(service.backend_for(body.provider.type, config, secrets))


@router.get("/{provider_id}/space", response_model=SpaceOut, responses=responses(NotFound))
async def space(
    provider_id: PathId, principal: ReadStorage, session: SessionDep, ctx: Ctx
) -> SpaceOut:
    provider = await service.get_provider(session, principal, provider_id)
    storage = service.backend(provider, ctx.keyring)
    await release(session)
    info = await storage.space()
    used = count = 0
    async for obj in storage.list():
        used += obj.size
        count += 1
    return SpaceOut(
        provider_id=provider.id,
        total_bytes=info.total_bytes,
        used_bytes=info.used_bytes,
        free_bytes=info.free_bytes,
        used_by_backups_bytes=used,
        object_count=count,
    )


@router.get("/{provider_id}/backups", response_model=StoredArtifacts, responses=responses(NotFound))
async def stored_backups(
    provider_id: PathId, principal: ReadStorage, session: SessionDep, ctx: Ctx
) -> StoredArtifacts:
    """Every artifact found in the storage by its manifest, known to the catalog or not."""
    provider = await service.get_provider(session, principal, provider_id)
    storage = service.backend(provider, ctx.keyring)
    await release(session)
    scan = await service.scan(storage)
    known = await service.catalog_keys(session, provider.id)
    items = [
        StoredArtifact(
            key=m.key,
            engine=m.engine,
            database=m.database,
            size_bytes=m.size_bytes,
            sha256=m.sha256,
            compression=m.compression,
            encrypted=m.encrypted,
            created_at=m.created_at,
            in_catalog=m.key in known,
            backup_id=known.get(m.key),
        )
        for m in scan.manifests
    ]
    return StoredArtifacts(
        items=items,
        total=len(items),
        invalid=[{"key": k, "reason": r} for k, r in scan.invalid],
        orphans=scan.orphans,
    )
