"""Backups: the catalog, and the jobs that create, restore and delete artifacts."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.audit import service as audit
from opscenter.audit.service import Origin
from opscenter.auth.permissions import HOST_FILES
from opscenter.backups.schemas import BackupCreate, BackupOut, CompressionType, RestoreRequest
from opscenter.core.clock import utcnow
from opscenter.core.db import release
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from opscenter.core.events import Event
from opscenter.core.failures import BackupError
from opscenter.core.hostfiles import HostFiles, check_shape
from opscenter.core.jsonresponse import as_stored, embedded, json_as_text
from opscenter.core.principal import SYSTEM, Principal
from opscenter.core.scoping import get_readable, readable
from opscenter.core.security import Keyring
from opscenter.core.templates import FilterTemplate
from opscenter.jobs import service as jobs
from opscenter.models import Backup, BackupStatus, Job, JobStatus, Server, StorageProvider
from opscenter.servers import connect
from opscenter.servers import service as servers
from opscenter.servers.schemas import HOSTS, ServerType
from opscenter.storage import service as storage
from opscenter.stores.backends import StorageError
from opscenter.streaming.manifest import delete_backup_objects

if TYPE_CHECKING:
    from opscenter.core.context import AppContext

ENGINES = ("postgresql", "mysql", "sqlite", "files")
# Engines whose backups are files of the host: a path read, a path written on restore.
FILE_ENGINES = ("files", "sqlite")
ACTIVE = (BackupStatus.PENDING, BackupStatus.RUNNING)
RESTORE_QUEUED = (
    "Restore job queued; one job per target at a time: another restore into this target "
    "is refused (409) until it ends, and a backup of it waits in the queue"
)
BACKUP_QUEUED = "Backup job queued; one job per target at a time: it waits behind any other"
#: Failure codes that prove the stored backup damaged ("corrupt") or gone ("missing"),
#: whoever met them. Anything else (a target or storage unreachable, a tool missing, a
#: statement the target refused) proves nothing about the backup.
DAMAGE = {
    "checksum_mismatch": "corrupt",
    "decrypt_failed": "corrupt",
    "decompress_failed": "corrupt",
    "verify_failed": "corrupt",
    "manifest_invalid": "corrupt",
    "table_missing": "corrupt",
    "artifact_missing": "missing",
}
#: The verification_status of a backup that is no recovery point.
DAMAGED = ("corrupt", "missing")


def backup_out(backup: Backup) -> BackupOut:
    return BackupOut(
        id=backup.id,
        team_id=backup.team_id,
        server_id=backup.server_id,
        storage_id=backup.storage_id,
        schedule_id=backup.schedule_id,
        job_id=backup.job_id,
        copy_of_id=backup.copy_of_id,
        imported=backup.imported,
        database_name=backup.database_name,
        db_type=backup.db_type,
        backup_type=backup.backup_type,
        status=backup.status,
        size_bytes=backup.size_bytes,
        original_size_bytes=backup.original_size_bytes,
        storage_path=backup.storage_key,
        is_encrypted=backup.is_encrypted,
        is_compressed=backup.compression_type != "none",
        compression_type=backup.compression_type,
        parallel_streams=backup.parallel_streams,
        checksum=backup.checksum,
        encryption_key_ids=backup.encryption_key_ids,
        row_counts=backup.row_counts,
        server_version=backup.server_version,
        verification_status=backup.verification_status,
        error_code=backup.error_code,
        error_message=backup.error_message,
        started_at=backup.started_at,
        completed_at=backup.completed_at,
        duration_seconds=backup.duration_seconds,
        created_at=backup.created_at,
    )


def backups_query(principal: Principal) -> Select[Backup]:
    return readable(select(Backup), Backup, principal).order_by(Backup.id.desc())


# The columns of `BackupOut`, for lists read as rows (`backup_json`), not objects, named
# and in the order of its fields; the two JSON columns as their text, written into the
# answer without a round through Python.
_EMBEDDED = ("encryption_key_ids", "row_counts")
_DERIVED: dict[str, Any] = {
    "storage_path": Backup.storage_key,
    "is_compressed": Backup.compression_type != "none",
}
_OUT_NAMES = tuple(BackupOut.model_fields)


def _out_column(name: str) -> Any:
    if name in _DERIVED:
        return _DERIVED[name].label(name)
    column = getattr(Backup, name)
    return json_as_text(column) if name in _EMBEDDED else as_stored(column)


_OUT_COLUMNS = [_out_column(name) for name in _OUT_NAMES]
# The list's statement, built once per combination of filters in use (core/templates.py):
# building and keying thirty columns cost more than the database's answer to a page.
BACKUP_ROWS = FilterTemplate(
    select(*_OUT_COLUMNS).order_by(Backup.id.desc()),
    {
        "server_id": Backup.server_id == bindparam("server_id"),
        "db_type": Backup.db_type == bindparam("db_type"),
        "status": Backup.status == bindparam("status"),
        "database_name": Backup.database_name == bindparam("database_name"),
        "schedule_id": Backup.schedule_id == bindparam("schedule_id"),
        "start": Backup.created_at >= bindparam("start"),
        "end": Backup.created_at <= bindparam("end"),
    },
    team=Backup.team_id,
)


def backup_json(row: Any) -> dict[str, Any]:
    """A row of `BACKUP_ROWS` as `BackupOut`'s JSON fields (the list's fast path);
    a column after them (`keyset_page`'s total) is left out."""
    item = dict(zip(_OUT_NAMES, row, strict=False))
    for name in _EMBEDDED:
        item[name] = embedded(item[name])
    return item


def filter_backups(
    stmt: Select[Any],
    *,
    server_id: int | None,
    db_type: str | None,
    status: str | None,
    database_name: str | None,
    schedule_id: int | None,
    start: datetime | None,
    end: datetime | None,
) -> Select[Any]:
    """`stmt` narrowed as the list's filters narrow it (`BACKUP_ROWS`); None or "" is no filter."""
    return BACKUP_ROWS.narrow(
        stmt,
        server_id=server_id,
        db_type=db_type,
        status=status,
        database_name=database_name,
        schedule_id=schedule_id,
        start=start,
        end=end,
    )


async def get_backup(session: AsyncSession, principal: Principal, backup_id: int) -> Backup:
    return await get_readable(session, Backup, backup_id, principal, name="Backup")


async def default_storage(session: AsyncSession, team_id: int) -> StorageProvider:
    provider = await session.scalar(
        select(StorageProvider)
        .where(StorageProvider.team_id == team_id, StorageProvider.is_active.is_(True))
        .order_by(StorageProvider.is_default.desc(), StorageProvider.id)
        .limit(1)
    )
    if provider is None:
        raise InvalidInput(
            "This team has no active storage provider; add one under /storage/providers"
        )
    return provider


def engine_for(server: Server, data: BackupCreate) -> str:
    """A database server has one engine; a host (local, ssh, docker) runs what it is asked:
    its `db_engine` for a database name, `files` for a source path, or `db_type`."""
    kind = ServerType(server.type)
    if kind not in HOSTS:
        if data.db_type and data.db_type != kind.value:
            raise InvalidInput(
                f"db_type {data.db_type} does not match the server's type {kind.value}"
            )
        if data.source_path is not None:
            raise InvalidInput(f"A {kind.value} server backs up databases: give database_name")
        return kind.value
    if data.db_type:
        if data.db_type not in ENGINES:
            raise InvalidInput(f"db_type must be one of {', '.join(ENGINES)}")
        return data.db_type
    if data.source_path is not None:
        return "files"
    if not server.db_engine:
        raise InvalidInput("This host has no db_engine: set it on the server, or give db_type")
    return server.db_engine


def check_parallel_streams(engine: str, parallel_streams: int) -> None:
    if parallel_streams > 1 and engine not in ("postgresql", "mysql"):
        raise InvalidInput(
            f"parallel_streams above 1 is for PostgreSQL and MySQL/MariaDB; a {engine} "
            "backup is one stream"
        )


def check_target(server: Server, engine: str, target: str) -> None:
    """The thing to back up must be something this server serves."""
    kind = ServerType(server.type)
    if kind == ServerType.SQLITE and target not in server.paths:
        raise InvalidInput(f"{target} is not one of this server's database files: {server.paths}")
    if kind in HOSTS and engine in FILE_ENGINES:
        check_shape(target, "source_path")
        if kind == ServerType.LOCAL and not server.paths:
            raise InvalidInput(
                "This host has no paths: an admin lists the files it may back up in its paths"
            )
        roots = [p.rstrip("/") for p in server.paths]
        norm = posixpath.normpath(target)
        if roots and not any(norm == r or norm.startswith(r + "/") for r in roots):
            raise InvalidInput(f"{target} is outside this server's paths: {server.paths}")


def can_restore_into(server: Server, engine: str) -> bool:
    kind = ServerType(server.type)
    if kind in HOSTS:
        return engine in ("files", "sqlite") or engine == server.db_engine
    return kind.value == engine


def lock_key(server_id: int, target: str) -> str:
    return f"server:{server_id}/db:{target}"[:300]


async def check_storages(
    session: AsyncSession, principal: Principal, team_id: int, storage_ids: list[int]
) -> list[StorageProvider]:
    """Destinations of a backup (or a schedule's): each once, readable by the caller,
    of the server's team. A 404 for one the caller may not see, else a 422."""
    if len(set(storage_ids)) != len(storage_ids):
        raise InvalidInput("storage_ids lists a storage provider twice")
    providers = []
    for storage_id in storage_ids:
        provider = await storage.get_provider(session, principal, storage_id)
        if provider.team_id != team_id:
            raise InvalidInput(
                f"Storage provider {storage_id} belongs to another team than the server"
            )
        providers.append(provider)
    return providers


@dataclass(frozen=True)
class PlannedBackup:
    """A checked backup request, nothing written yet: its server, engine and destinations
    (the first is the primary's)."""

    data: BackupCreate
    server: Server
    engine: str
    providers: list[StorageProvider]
    schedule_id: int | None


async def plan_backup(
    session: AsyncSession,
    principal: Principal,
    data: BackupCreate,
    *,
    schedule_id: int | None = None,
) -> PlannedBackup:
    """Check a backup request against its server and storages; raises AppError, writes
    nothing."""
    server = await servers.get_server(session, principal, data.server_id)
    engine = engine_for(server, data)
    check_target(server, engine, data.target)
    check_parallel_streams(engine, data.parallel_streams)
    if data.storage_ids:
        try:
            providers = await check_storages(session, principal, server.team_id, data.storage_ids)
        except NotFound as err:  # an id in the body, not in the path: the body is invalid
            raise InvalidInput(err.detail) from None
    elif data.storage_id is not None:
        providers = [await storage.get_provider(session, principal, data.storage_id)]
    else:
        providers = [await default_storage(session, server.team_id)]
    for provider in providers:
        if not provider.is_active:
            raise InvalidInput(f"Storage provider {provider.name} is disabled")
    return PlannedBackup(data, server, engine, providers, schedule_id)


async def add_backups(
    session: AsyncSession, principal: Principal, plans: Sequence[PlannedBackup]
) -> list[tuple[Backup, Job]]:
    """The rows of planned backups: per plan the backup, a pending copy row per extra
    destination, and the one job that writes them all. Each kind of row is one INSERT
    for all plans (a scheduler round adds many). Returns the primaries and their jobs."""

    def row(plan: PlannedBackup, provider: StorageProvider, copy_of: Backup | None) -> Backup:
        data = plan.data
        return Backup(
            team_id=plan.server.team_id,
            server_id=plan.server.id,
            storage_id=provider.id,
            schedule_id=plan.schedule_id,
            copy_of_id=copy_of.id if copy_of is not None else None,
            database_name=data.target,
            db_type=plan.engine,
            backup_type=data.backup_type,
            status=BackupStatus.PENDING,
            is_encrypted=data.encrypt,
            compression_type=data.compression.value,
            parallel_streams=data.parallel_streams,
            created_by=principal.user_id or None,  # the CLI acts as user 0, "system"
        )

    primaries = [row(plan, plan.providers[0], None) for plan in plans]
    session.add_all(primaries)
    await session.flush()
    copies = [
        [row(plan, provider, backup) for provider in plan.providers[1:]]
        for plan, backup in zip(plans, primaries, strict=True)
    ]
    if any(copies):
        session.add_all([copy for group in copies for copy in group])
        await session.flush()
    jobs_ = []
    for plan, backup, group in zip(plans, primaries, copies, strict=True):
        params: dict[str, Any] = {"backup_id": backup.id}
        if group:
            params["copy_ids"] = [c.id for c in group]
        jobs_.append(
            jobs.new_job(
                principal,
                kind="backup",
                team_id=plan.server.team_id,
                lock_key=lock_key(plan.server.id, plan.data.target),
                resource_type="backup",
                resource_id=backup.id,
                params=params,
            )
        )
    session.add_all(jobs_)
    await session.flush()
    for backup, group, job in zip(primaries, copies, jobs_, strict=True):
        for b in (backup, *group):
            b.job_id = job.id
    await session.flush()
    return list(zip(primaries, jobs_, strict=True))


async def create_backup(
    session: AsyncSession,
    principal: Principal,
    data: BackupCreate,
    *,
    schedule_id: int | None = None,
) -> tuple[Backup, Job]:
    """The backup row, a pending copy row per extra destination (``storage_ids``), and
    the one job that writes them all. Returns the primary."""
    plan = await plan_backup(session, principal, data, schedule_id=schedule_id)
    [(backup, job)] = await add_backups(session, principal, [plan])
    return backup, job


async def queue_retry(session: AsyncSession, backup_id: int, attempt: int) -> Job | None:
    """A fresh attempt of a backup whose process was lost mid-run: the same target, storages
    and options, as a new backup row (the interrupted one keeps its own story)."""
    old = await session.get(Backup, backup_id)
    if old is None or old.server_id is None or old.copy_of_id is not None:
        return None
    copies = (
        await session.scalars(
            select(Backup.storage_id).where(Backup.copy_of_id == old.id).order_by(Backup.id)
        )
    ).all()
    is_file = old.db_type in FILE_ENGINES
    compressed = old.compression_type != CompressionType.NONE
    data = BackupCreate(
        server_id=old.server_id,
        database_name=None if is_file else old.database_name,
        source_path=old.database_name if is_file else None,
        compress=compressed,
        compression_type=CompressionType(old.compression_type)
        if compressed
        else CompressionType.ZSTD,
        encrypt=old.is_encrypted,
        parallel_streams=old.parallel_streams,
        storage_id=None if copies else old.storage_id,
        storage_ids=[old.storage_id, *copies] if copies else None,
    )
    _, job = await create_backup(session, SYSTEM, data, schedule_id=old.schedule_id)
    job.params = {**job.params, "attempt": attempt, "retry_of_backup_id": old.id}
    return job


async def mark_damaged(
    session: AsyncSession, backup: Backup, code: str | None, message: str | None, seen_by: str
) -> Event | None:
    """Mark ``backup`` corrupt or missing if ``code`` proves it (``DAMAGE``), in the audit
    trail too; returns the ``backup.corrupt`` event to publish once this commits."""
    status = DAMAGE.get(code or "")
    if status is None:
        return None
    before, backup.verification_status = backup.verification_status, status
    await audit.record(
        session,
        action="backup.corrupt",
        username=f"system ({seen_by})",
        resource_type="backup",
        resource_id=backup.id,
        outcome="failure",
        details={
            "verification_status": [before, status],
            "error_code": code,
            "seen_by": seen_by,
            "message": message,
        },
    )
    return Event(
        "backup.corrupt",
        {
            "backup_id": backup.id,
            "server_id": backup.server_id,
            "database_name": backup.database_name,
            "verification_status": status,
            "severity": "critical",
            "message": f"Backup {backup.id} of {backup.database_name} is {status} "
            f"({seen_by}): {message}",
            "error_code": code,
        },
        team_id=backup.team_id,
    )


async def note_missing(app: AppContext, backup_id: int, message: str, seen_by: str) -> None:
    """A reader (not a job) found the artifact gone: mark the backup missing in a
    transaction of its own, and say so."""
    async with app.db.write_session() as session:
        backup = await session.get(Backup, backup_id)
        event = None
        if backup is not None:
            event = await mark_damaged(session, backup, "artifact_missing", message, seen_by)
        await session.commit()
    if event is not None:
        app.events.publish(event)


async def copies_of(session: AsyncSession, backup: Backup) -> list[Backup]:
    return list(
        (
            await session.scalars(
                select(Backup).where(Backup.copy_of_id == backup.id).order_by(Backup.id)
            )
        ).all()
    )


def check_restore_target(files: HostFiles, server: Server, engine: str, target: str) -> None:
    """A files or SQLite restore writes where an admin allowed: on this host inside the
    restore roots; on an SSH host or in a container at an absolute path."""
    if engine not in FILE_ENGINES:
        return
    if ServerType(server.type) in servers.ON_THIS_HOST:
        files.check_restore_target(target)
    else:
        check_shape(target, "restore target")


async def check_restore(
    session: AsyncSession,
    principal: Principal,
    files: HostFiles,
    backup_id: int,
    data: RestoreRequest,
) -> tuple[Backup, Server]:
    """The backup and the target server of a restore that may be queued."""
    backup = await get_backup(session, principal, backup_id)
    if backup.imported and not principal.can(HOST_FILES):
        # Anyone holding the public recipient can make an artifact: what it restores
        # (files, owners, modes) was never produced here.
        raise Forbidden("This backup was imported, not made here: only an admin restores it")
    if backup.status != BackupStatus.COMPLETED or not backup.storage_key:
        raise Conflict(f"Backup {backup_id} is {backup.status}; only completed backups restore")
    if backup.verification_status == "missing":
        raise Conflict("This backup's artifact is missing from its storage; nothing to restore")
    if backup.verification_status == "corrupt" and not data.force:
        raise Conflict("Verification found this backup corrupt; pass force=true to try anyway")
    target_id = data.target_server_id or backup.server_id
    if target_id is None:
        raise InvalidInput("The backup's server was removed; give target_server_id")
    target = await servers.get_server(session, principal, target_id)
    if not can_restore_into(target, backup.db_type):
        raise InvalidInput(
            f"A {backup.db_type} backup cannot be restored into a {target.type} server"
        )
    if target.environment == "production" and data.confirm != data.target_database:
        raise Conflict(
            f"{target.name} is a production server: set confirm to "
            f"'{data.target_database}' to restore"
        )
    if backup.db_type == "sqlite" and target.type in ("ssh", "docker"):
        raise InvalidInput(
            "An SQLite restore writes the file on this host: restore into a local or sqlite server"
        )
    check_restore_target(files, target, backup.db_type, data.target_database)
    if data.masking_rules and backup.db_type not in {"postgresql", "mysql"}:
        raise InvalidInput("Masking applies to PostgreSQL and MySQL restores")
    if data.parallel_jobs > 1 and backup.db_type != "postgresql":
        raise InvalidInput("parallel_jobs applies to PostgreSQL restores (pg_restore --jobs)")
    return backup, target


async def create_restore(
    session: AsyncSession,
    principal: Principal,
    files: HostFiles,
    backup_id: int,
    data: RestoreRequest,
) -> tuple[Backup, Job]:
    backup, target = await check_restore(session, principal, files, backup_id, data)
    key = lock_key(target.id, data.target_database)
    # One job per target: a restore never runs after or beside another job on it (the
    # row lock makes concurrent requests for one server take turns on PostgreSQL; SQLite
    # writers are serial anyway).
    await session.execute(select(Server.id).where(Server.id == target.id).with_for_update())
    busy = await jobs.holding(session, key)
    if busy is not None:
        raise Conflict(
            f"A {busy.kind} job (job {busy.id}) is working on {data.target_database} on "
            f"{target.name}: one job per target at a time; wait for it to end or cancel it"
        )
    job = await jobs.create_job(
        session,
        principal,
        kind="restore",
        team_id=target.team_id,
        lock_key=key,
        resource_type="backup",
        resource_id=backup.id,
        params={
            "backup_id": backup.id,
            "target_server_id": target.id,
            "target_database": data.target_database,
            "drop_existing": data.drop_existing,
            "parallel_jobs": data.parallel_jobs,
            "masking_rules": data.masking_rules if data.mask_sensitive_data else {},
        },
    )
    return backup, job


async def delete_backup(session: AsyncSession, principal: Principal, backup_id: int) -> Backup:
    backup = await get_backup(session, principal, backup_id)
    if backup.status in ACTIVE:
        raise Conflict(f"Backup {backup_id} is {backup.status}; cancel its job first")
    busy = await session.scalar(
        select(Job.id)
        .where(
            Job.resource_type == "backup",
            Job.resource_id == backup.id,
            Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
        )
        .limit(1)
    )
    if busy is not None:
        raise Conflict(f"Job {busy} is using backup {backup_id}; wait for it or cancel it")
    return backup


async def provider_of(session: AsyncSession, backup: Backup) -> StorageProvider:
    provider = await session.get(StorageProvider, backup.storage_id)
    if provider is None:
        raise NotFound("Storage provider", backup.storage_id)
    return provider


def download_signature(keyring: Keyring, backup_id: int, expires: int) -> str:
    return keyring.sign(f"download:{backup_id}:{expires}")


def download_expiry(minutes: int = 15) -> datetime:
    return utcnow() + timedelta(minutes=minutes)


def compression_of(backup: Backup) -> CompressionType:
    return CompressionType(backup.compression_type)


async def queue_restore(
    session: AsyncSession,
    principal: Principal,
    keyring: Keyring,
    files: HostFiles,
    backup_id: int,
    data: RestoreRequest,
    origin: Origin | None,
) -> tuple[Backup, Job]:
    """Check the request and the target database's state, queue the restore job and
    audit it (`POST /backups/{id}/restore` and seed 002's recovery points)."""
    if not principal.can("write:backups") and data.force:
        raise Forbidden("Forcing the restore of a corrupt backup needs write:backups")
    backup, target_server = await check_restore(session, principal, files, backup_id, data)
    target = servers.target_of(keyring, target_server)
    await release(session)
    try:
        state = await connect.database_state(target, data.target_database, backup.db_type)
    except BackupError as err:
        raise Conflict(f"Cannot inspect the target: {connect.explain(err)}") from None
    if data.drop_existing and data.parallel_jobs > 1 and state != "missing":
        raise InvalidInput(
            "drop_existing replaces the database in one transaction, which a parallel "
            "restore cannot do: drop parallel_jobs, or restore into a new database"
        )
    # A MySQL restore is statement by statement anyway, every part checked first.
    pg_parts = backup.db_type == "postgresql" and backup.parallel_streams > 1
    if data.drop_existing and pg_parts and state != "missing":
        raise InvalidInput(
            "drop_existing replaces the database in one transaction, which a backup of "
            f"{backup.parallel_streams} parallel streams cannot be restored in: restore it "
            "into a new database"
        )
    if state == "non_empty" and not data.drop_existing:
        raise Conflict(
            f"{data.target_database} on {target_server.name} is not empty: restore "
            "into a new database, or set drop_existing to replace its contents"
        )
    # Checked again: the backup or the server may have changed while we looked.
    backup, job = await create_restore(session, principal, files, backup_id, data)
    now = await servers.get_server(session, principal, target_server.id)
    if servers.target_of(keyring, now) != target:
        raise Conflict(f"{now.name} was changed while it was inspected; try again")
    await audit.record(
        session,
        action="backup.restore",
        actor=principal,
        resource_type="backup",
        resource_id=backup.id,
        details={
            "target_server_id": target_server.id,
            "target_database": data.target_database,
            "target_state": state,
            "drop_existing": data.drop_existing,
            "masking_rules": data.masking_rules,
        },
        origin=origin,
    )
    return backup, job


async def remove_backup(
    session: AsyncSession,
    principal: Principal,
    storages: storage.StoragePool,
    backup_id: int,
    origin: Origin | None,
) -> None:
    """Every object of the backup (its parts, its globals), then its manifest, then the
    catalog row (409 while in use); the row stays when the storage refuses, so nothing
    is lost track of."""
    backup = await delete_backup(session, principal, backup_id)
    if backup.storage_key:
        store = storages.get(await provider_of(session, backup))
        try:
            await delete_backup_objects(store, backup.storage_key)
        except StorageError as err:
            raise Conflict(
                f"The storage refused the deletion ({err}); nothing was removed from the catalog"
            ) from None
    await session.delete(backup)
    await audit.record(
        session,
        action="backup.delete",
        actor=principal,
        resource_type="backup",
        resource_id=backup_id,
        team_id=backup.team_id,
        details={"database": backup.database_name, "storage_key": backup.storage_key},
        origin=origin,
    )
