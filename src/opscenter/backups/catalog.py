"""Rebuilding the catalog from storage alone (disaster recovery after losing the
metadata database), and taking in an uploaded artifact with its manifest."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import as_utc
from opscenter.core.db import release
from opscenter.core.errors import Conflict, InvalidInput
from opscenter.core.principal import Principal
from opscenter.models import Backup, BackupStatus, Server, StorageProvider
from opscenter.storage import service as storage_service
from opscenter.stores.backends import StorageBackend, StorageError, StorageWriter
from opscenter.streaming.bundle import TarReader
from opscenter.streaming.manifest import MAX_MANIFEST, Manifest, manifest_key, write_manifest


def _when(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


async def backup_from_manifest(
    session: AsyncSession, principal: Principal, provider: StorageProvider, manifest: Manifest
) -> Backup:
    """A catalog row for an artifact already committed in `provider`."""
    server_id: int | None = None
    label = manifest.labels.get("server_id", "")
    if label.isdigit():
        server = await session.get(Server, int(label))
        if server is not None and server.team_id == provider.team_id:
            server_id = server.id
    created = _when(manifest.created_at)
    started = _when(manifest.started_at)
    backup = Backup(
        team_id=provider.team_id,
        server_id=server_id,
        storage_id=provider.id,
        database_name=manifest.database,
        db_type=manifest.engine,
        backup_type="full",
        status=BackupStatus.COMPLETED,
        storage_key=manifest.key,
        size_bytes=manifest.total_size_bytes,
        original_size_bytes=manifest.total_original_size_bytes,
        checksum=f"sha256:{manifest.sha256}",
        is_encrypted=manifest.encrypted,
        compression_type=manifest.compression,
        parallel_streams=max(1, len(manifest.parts) - 2),
        encryption_key_ids=[r["key_id"] for r in manifest.encryption.recipients]
        if manifest.encryption
        else [],
        row_counts=dict(manifest.row_counts.tables) if manifest.row_counts else {},
        server_version=manifest.server_version,
        started_at=started,
        completed_at=created,
        duration_seconds=manifest.duration_seconds,
        created_by=principal.user_id or None,
        imported=True,
    )
    session.add(backup)
    await session.flush()
    return backup


async def import_from_storage(
    session: AsyncSession,
    storage: StorageBackend,
    principal: Principal,
    provider: StorageProvider,
) -> tuple[list[Backup], list[tuple[str, str]]]:
    """Adopt every artifact whose manifest is valid and which the catalog lacks."""
    scan = await storage_service.scan(storage)
    known = await storage_service.catalog_keys(session, provider.id)
    adopted = [
        await backup_from_manifest(session, principal, provider, m)
        for m in scan.manifests
        if m.key not in known
    ]
    return adopted, scan.invalid


async def _store_bundle(
    storage: StorageBackend, manifest: Manifest, body: AsyncIterator[bytes]
) -> None:
    """A parallel backup uploaded as the tar its download gives: every part checked
    against the manifest as it arrives; the first part is committed last, then the
    manifest. On any failure nothing stays."""
    parts = {p.key.rsplit("/", 1)[-1]: p for p in manifest.parts}
    first = manifest.parts[0]
    manifest_name = manifest_key(first.key).rsplit("/", 1)[-1]
    tar = TarReader(body)
    writers: dict[str, StorageWriter] = {}
    committed: list[str] = []
    try:
        while (member := await tar.next_member()) is not None:
            name, size = member
            part = parts.get(name)
            if part is None:
                if name != manifest_name or size > MAX_MANIFEST:
                    raise InvalidInput(f"{name} is no part of this backup")
                while await tar.read():  # the manifest beside them: the header's counts
                    pass
                continue
            if part.key in writers or size != part.size_bytes:
                raise InvalidInput(f"{name} is {size} bytes or twice in the tar, not as listed")
            writer = writers[part.key] = await storage.open_writer(part.key)
            digest = hashlib.sha256()
            while chunk := await tar.read():
                digest.update(chunk)
                await writer.write(chunk)
            if digest.hexdigest() != part.sha256:
                raise InvalidInput(f"{name} does not match its sha256 in the manifest")
            if part is not first:
                await writer.commit()
                committed.append(part.key)
        if len(writers) != len(parts):
            missing = sorted(set(parts) - {k.rsplit("/", 1)[-1] for k in writers})
            raise InvalidInput(f"The tar lacks parts of the backup: {', '.join(missing)}")
        await writers[first.key].commit()
        committed.append(first.key)
        await write_manifest(storage, manifest)
    except BaseException as err:
        for writer in writers.values():
            with contextlib.suppress(Exception):
                await writer.abort()
        for key in committed:
            with contextlib.suppress(Exception):
                await storage.delete(key)
        if isinstance(err, ValueError):
            raise InvalidInput(f"The upload is not a backup's tar: {err}") from None
        if isinstance(err, StorageError):
            if err.code == "exists":
                raise Conflict(f"{manifest.key} already exists in this storage") from None
            raise InvalidInput(f"The storage refused the upload: {err}") from None
        raise


async def import_upload(
    session: AsyncSession,
    storage: StorageBackend,
    principal: Principal,
    provider: StorageProvider,
    manifest: Manifest,
    body: AsyncIterator[bytes],
) -> Backup:
    """Stream an uploaded artifact into storage, checking its size and sha256 against the
    manifest before committing; then the manifest, then the catalog row. A parallel
    backup is uploaded as the tar of its parts its download gives."""
    known = select(Backup.id).where(
        Backup.storage_id == provider.id, Backup.storage_key == manifest.key
    )
    if await session.scalar(known):
        raise Conflict(f"The catalog already holds {manifest.key}")
    await release(session)  # the body arrives at the client's pace
    if manifest.parts:
        await _store_bundle(storage, manifest, body)
        if await session.scalar(known):  # a storage import adopted it meanwhile
            raise Conflict(f"The catalog already holds {manifest.key}")
        return await backup_from_manifest(session, principal, provider, manifest)
    digest = hashlib.sha256()
    size = 0
    try:
        writer = await storage.open_writer(manifest.key)
        async with writer:
            async for chunk in body:
                size += len(chunk)
                if size > manifest.size_bytes:
                    break
                digest.update(chunk)
                await writer.write(chunk)
            if size != manifest.size_bytes or digest.hexdigest() != manifest.sha256:
                await writer.abort()
                raise InvalidInput(
                    f"The upload does not match its manifest (got {size} bytes, expected "
                    f"{manifest.size_bytes}, or a different sha256); nothing was stored"
                )
            await writer.commit()
        await write_manifest(storage, manifest)
    except StorageError as err:
        if err.code == "exists":
            raise Conflict(f"{manifest.key} already exists in this storage") from None
        raise InvalidInput(f"The storage refused the upload: {err}") from None
    if await session.scalar(known):  # a storage import adopted it meanwhile
        raise Conflict(f"The catalog already holds {manifest.key}")
    return await backup_from_manifest(session, principal, provider, manifest)
