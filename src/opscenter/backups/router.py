"""Backups (seed 001): run, list, inspect, download, restore, delete; rebuild the catalog
from a storage's manifests."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.auth.permissions import DOWNLOAD_BACKUPS
from opscenter.backups import catalog, service
from opscenter.backups.schemas import (
    BackupCreate,
    BackupOut,
    DownloadLink,
    ImportResult,
    RestoreRequest,
)
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.db import release
from opscenter.core.errors import AppError, Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.failures import BackupError, ErrorCode
from opscenter.core.hostfiles import HostFiles
from opscenter.core.pagination import (
    CursorPaging,
    Dates,
    KeysetPage,
    PathId,
    QueryId,
    keyset_json,
    keyset_page,
)
from opscenter.core.principal import Principal
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.models import Backup, BackupStatus
from opscenter.storage import service as storage_service
from opscenter.stores.backends import StorageBackend, StorageError
from opscenter.streaming.bundle import bundle_name, bundle_size, bundle_stream
from opscenter.streaming.manifest import Manifest, read_manifest

router = APIRouter(prefix="/backups", tags=["Backups"])
#: Rebuilding the catalog from a storage's manifests is asked of the storage, but it
#: writes backups: the route lives here, under the storage's path and tag.
storage_router = APIRouter(prefix="/storage", tags=["Storage"])
ReadBackups = Annotated[Principal, Depends(require("read:backups"))]
WriteBackups = Annotated[Principal, Depends(require("write:backups"))]
Restorer = Annotated[Principal, Depends(require("execute:restores"))]
Downloader = Annotated[Principal, Depends(require(DOWNLOAD_BACKUPS))]
WriteStorage = Annotated[Principal, Depends(require("write:storage"))]
BackupStatusFilter = Annotated[
    str | None,
    Query(pattern="^(pending|running|completed|failed|cancelled|interrupted|deleting)$"),
]


class RangeNotSatisfiable(AppError):
    status_code = 416
    code = "RANGE_NOT_SATISFIABLE"


@router.post(
    "",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, InvalidInput),
)
async def create_backup(
    body: BackupCreate, principal: WriteBackups, session: SessionDep, request: Request
) -> Accepted:
    """Queues a backup job: dump -> compress -> encrypt -> sha256 -> storage, streaming.
    With `storage_ids`, the one dump is written to each storage: the answer's `id` is the
    primary backup (the first storage); each other one gets a copy with `copy_of_id`."""
    backup, job = await service.create_backup(session, principal, body)
    for row in (backup, *await service.copies_of(session, backup)):
        await audit.record(
            session,
            action="backup.create",
            actor=principal,
            resource_type="backup",
            resource_id=row.id,
            details={
                "server_id": row.server_id,
                "database": row.database_name,
                "storage_id": row.storage_id,
                "copy_of_id": row.copy_of_id,
                "compression": row.compression_type,
                "encrypted": row.is_encrypted,
            },
            origin=origin_of(request),
        )
    return accepted(request, job.id, backup.id, service.BACKUP_QUEUED)


@router.get("", response_model=KeysetPage[BackupOut])
async def list_backups(
    principal: ReadBackups,
    session: SessionDep,
    paging: CursorPaging,
    dates: Dates,
    server_id: QueryId = None,
    schedule_id: QueryId = None,
    db_type: Annotated[str | None, Query(max_length=20)] = None,
    status: BackupStatusFilter = None,
    database_name: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    # Read as rows and encoded once (core/jsonresponse.py): the most read list of all.
    bound = service.BACKUP_ROWS.bind(
        principal,
        server_id=server_id,
        db_type=db_type,
        status=status,
        database_name=database_name,
        schedule_id=schedule_id,
        start=dates.start,
        end=dates.end,
    )
    rows, total, next_cursor = await keyset_page(session, bound, paging, Backup.id, columns=True)
    return keyset_json([service.backup_json(row) for row in rows], total, paging, next_cursor)


@router.get("/{backup_id}", response_model=BackupOut, responses=responses(NotFound))
async def get_backup(backup_id: PathId, principal: ReadBackups, session: SessionDep) -> BackupOut:
    return service.backup_out(await service.get_backup(session, principal, backup_id))


@router.delete(
    "/{backup_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound, Conflict)
)
async def delete_backup(
    backup_id: PathId, principal: WriteBackups, session: SessionDep, ctx: Ctx, request: Request
) -> None:
    """Removes the artifact, then its manifest, then the catalog row (409 while in use)."""
    await service.remove_backup(session, principal, ctx.storages, backup_id, origin_of(request))


@router.post(
    "/{backup_id}/download", response_model=DownloadLink, responses=responses(NotFound, Conflict)
)
async def download_link(
    backup_id: PathId, principal: Downloader, session: SessionDep, ctx: Ctx, request: Request
) -> DownloadLink:
    """A signed link, valid for 15 minutes: the storage's own presigned URL where it offers
    one (S3), else ours, which streams the artifact through this server with Range support."""
    backup = await service.get_backup(session, principal, backup_id)
    if backup.status != BackupStatus.COMPLETED or not backup.storage_key:
        raise Conflict(f"Backup {backup_id} is {backup.status}; only completed backups download")
    expires_at = service.download_expiry()
    expires = int(expires_at.timestamp())
    storage = ctx.storages.get(await service.provider_of(session, backup))
    # A parallel backup is several objects: it downloads as one tar, through us.
    url = (
        None
        if backup.parallel_streams > 1
        else await storage.signed_url(
            backup.storage_key,
            int(expires - time.time()),
            download_name=backup.storage_key.rsplit("/", 1)[-1],
        )
    )
    if url is None:
        signature = service.download_signature(ctx.keyring, backup.id, expires)
        url = f"/api/v1/backups/{backup.id}/file?expires={expires}&signature={signature}"
    await audit.record(
        session,
        action="backup.download_link",
        actor=principal,
        resource_type="backup",
        resource_id=backup.id,
        origin=origin_of(request),
    )
    return DownloadLink(download_url=url, expires_at=expires_at)


@router.get(
    "/{backup_id}/file",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        **responses(Forbidden, NotFound, RangeNotSatisfiable),
    },
)
async def download_file(
    backup_id: PathId,
    session: SessionDep,
    ctx: Ctx,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    signature: Annotated[str, Query(max_length=200)],
    range_header: Annotated[str | None, Header(alias="Range", max_length=100)] = None,
) -> StreamingResponse:
    """The artifact itself; the signed query string is the authorization. Supports Range.
    A parallel backup comes as one tar of its parts and manifest (no Range)."""
    if expires < time.time() or not ctx.keyring.verify_signature(
        f"download:{backup_id}:{expires}", signature
    ):
        raise Forbidden("This download link is invalid or has expired; request a new one")
    backup = await session.get(Backup, backup_id)
    if backup is None or not backup.storage_key or backup.size_bytes is None:
        raise NotFound("Backup", backup_id)
    storage = ctx.storages.get(await service.provider_of(session, backup))
    await release(session)  # opening and streaming the object is storage I/O
    if backup.parallel_streams > 1:
        return await _download_bundle(ctx, backup, storage)
    size = backup.size_bytes
    start, end = 0, size - 1
    status_code = 200
    if range_header:
        start, end = _parse_range(range_header, size)
        status_code = 206
    try:
        reader = await storage.open_reader(backup.storage_key, offset=start, length=end - start + 1)
    except StorageError as err:
        if err.code != "not_found":
            raise
        await service.note_missing(ctx, backup.id, str(err), "download")
        raise NotFound("Backup artifact", backup_id) from None

    async def body() -> AsyncIterator[bytes]:
        async with reader:
            while chunk := await reader.read():
                yield chunk

    headers = {
        "Content-Length": str(end - start + 1),
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{backup.storage_key.rsplit("/", 1)[-1]}"',
        "X-Checksum-SHA256": (backup.checksum or "").removeprefix("sha256:"),
    }
    if status_code == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        body(), status_code=status_code, headers=headers, media_type="application/octet-stream"
    )


async def _download_bundle(ctx: Ctx, backup: Backup, storage: StorageBackend) -> StreamingResponse:
    assert backup.storage_key is not None
    try:
        manifest = await read_manifest(storage, backup.storage_key)
        # Every part is there before the answer starts: a missing one is a 404, not a
        # tar cut short.
        for part in manifest.part_manifests():
            await storage.stat(part.key)
    except (BackupError, StorageError) as err:
        gone = err.code in (ErrorCode.ARTIFACT_MISSING, "not_found")
        if not gone:
            raise
        await service.note_missing(ctx, backup.id, str(err), "download")
        raise NotFound("Backup artifact", backup.id) from None
    headers = {
        "Content-Length": str(bundle_size(manifest)),
        "Content-Disposition": f'attachment; filename="{bundle_name(manifest)}"',
    }
    return StreamingResponse(
        bundle_stream(storage, manifest), headers=headers, media_type="application/x-tar"
    )


def _parse_range(value: str, size: int) -> tuple[int, int]:
    unit, _, spec = value.partition("=")
    first, _, last = spec.strip().partition("-")
    try:
        if unit.strip() != "bytes" or "," in spec:
            raise ValueError
        if first == "":  # suffix: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), (int(last) if last else size - 1)
    except ValueError:
        raise RangeNotSatisfiable("Only a single bytes=start-end range is supported") from None
    end = min(end, size - 1)
    if start > end or start >= size:
        raise RangeNotSatisfiable(f"The artifact has {size} bytes")
    return start, end


@router.post(
    "/{backup_id}/restore",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, Conflict, Forbidden, InvalidInput),
)
async def restore_backup(
    backup_id: PathId,
    body: RestoreRequest,
    principal: Restorer,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> Accepted:
    """Into a new or empty database; a non-empty one needs `drop_existing` (afterwards it
    holds exactly the backup), a production server also `confirm` equal to the database
    name. One job per target: 409 while another job works on it. Masking runs in the
    target."""
    backup, job = await service.queue_restore(
        session,
        principal,
        ctx.keyring,
        HostFiles(ctx.settings),
        backup_id,
        body,
        origin_of(request),
    )
    return accepted(request, job.id, backup.id, service.RESTORE_QUEUED)


@router.post(
    "/import",
    response_model=BackupOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(NotFound, Conflict, InvalidInput),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def import_backup(
    request: Request,
    principal: WriteBackups,
    session: SessionDep,
    ctx: Ctx,
    manifest_header: Annotated[
        str,
        Header(
            alias="X-Backup-Manifest",
            max_length=65536,
            description="The artifact's manifest JSON, base64",
        ),
    ],
    storage_id: QueryId = None,
) -> BackupOut:
    """Upload an artifact (the raw bytes as the body) with its manifest, for example to
    restore on a new installation. Size and sha256 are checked before anything commits.
    A parallel backup (a manifest with parts) is uploaded as the tar its download gives."""
    try:
        manifest = Manifest.from_json(base64.b64decode(manifest_header, validate=True))
    except (ValueError, BackupError) as err:
        raise InvalidInput(f"X-Backup-Manifest is not a base64 manifest: {err}") from None
    team_id = min(principal.team_ids, default=None)
    if storage_id is not None:
        provider = await storage_service.get_provider(session, principal, storage_id)
    elif team_id is not None:
        provider = await service.default_storage(session, team_id)
    else:
        raise InvalidInput("Give storage_id: you belong to no team with a default storage")
    backup = await catalog.import_upload(
        session, ctx.storages.get(provider), principal, provider, manifest, request.stream()
    )
    await audit.record(
        session,
        action="backup.import",
        actor=principal,
        resource_type="backup",
        resource_id=backup.id,
        details={"storage_key": backup.storage_key, "size_bytes": backup.size_bytes},
        origin=origin_of(request),
    )
    return service.backup_out(backup)


@storage_router.post(
    "/{provider_id}/import",
    response_model=ImportResult,
    responses=responses(NotFound, InvalidInput),
)
async def import_catalog(
    provider_id: PathId, principal: WriteStorage, session: SessionDep, ctx: Ctx, request: Request
) -> ImportResult:
    """Rebuild catalog entries from the manifests in this storage (after losing the
    metadata database). Artifacts the catalog already knows are left alone."""
    provider = await storage_service.get_provider(session, principal, provider_id)
    await release(session)  # the scan reads the storage before anything is written
    adopted, invalid = await catalog.import_from_storage(
        session, ctx.storages.get(provider), principal, provider
    )
    await audit.record(
        session,
        action="storage.import",
        actor=principal,
        resource_type="storage",
        resource_id=provider.id,
        details={"adopted": [b.id for b in adopted], "invalid": [k for k, _ in invalid]},
        origin=origin_of(request),
    )
    return ImportResult(
        imported=len(adopted),
        backup_ids=[b.id for b in adopted],
        invalid=[{"key": k, "reason": r} for k, r in invalid],
    )
