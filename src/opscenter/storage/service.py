"""Storage providers: configuration, a backend for each, and what is stored in them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.db import release
from opscenter.core.errors import Conflict, InvalidInput
from opscenter.core.failures import BackupError
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.principal import Principal
from opscenter.core.schemas import InputModel
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.core.security import Keyring
from opscenter.models import Backup, Schedule, StorageProvider
from opscenter.remote.ssh import SshConfig
from opscenter.storage.schemas import (
    PathConfig,
    S3Config,
    S3Credentials,
    SftpConfig,
    SftpCredentials,
    StorageCreate,
    StorageOut,
    StorageTestResult,
    StorageType,
    StorageUpdate,
)
from opscenter.stores.backends import LocalStorage, StorageBackend, StorageError
from opscenter.stores.s3 import S3Storage
from opscenter.stores.sftp import SftpStorage
from opscenter.streaming.manifest import CatalogScan, scan_catalog

DEFAULT_NAME = "local"
_UNC = re.compile(r"^(\\\\|//)[^\\/]+[\\/][^\\/]+")


def storage_out(provider: StorageProvider) -> StorageOut:
    return StorageOut(
        id=provider.id,
        team_id=provider.team_id,
        name=provider.name,
        type=provider.type,
        config=provider.config,
        has_credentials=bool(provider.secret_fields),
        is_default=provider.is_default,
        is_active=provider.is_active,
        created_at=provider.created_at,
        updated_at=provider.updated_at,
    )


def check_path_config(type: StorageType, config: PathConfig) -> None:
    """Reject what cannot work, with what to do instead."""
    if _UNC.match(config.path):
        raise InvalidInput(
            f"{config.path} is a network share name, not a mounted path: mount it on this "
            "host first (for example `mount -t cifs //server/share /mnt/backups`) and give "
            "the mount point"
        )
    if not config.path.startswith("/"):
        raise InvalidInput("path must be absolute")
    if ".." in Path(config.path).parts:
        raise InvalidInput("path must not contain '..'")
    if type == StorageType.NETWORK and not os.path.ismount(config.path):
        raise InvalidInput(
            f"{config.path} is not a mount point: mount the network share there first"
        )


async def validated_config(
    type: StorageType, config: dict[str, Any], policy: OutboundPolicy
) -> dict[str, Any]:
    """The type's config, validated; remote endpoints pass the outbound address policy. The
    endpoint's name is resolved in a thread: a slow DNS answer must not stall the event loop,
    and callers hold no transaction while it runs (`release` first)."""
    try:
        if type == StorageType.S3:
            s3 = S3Config.model_validate(config)
            if s3.endpoint_url:
                await asyncio.to_thread(policy.check_url, s3.endpoint_url)
            return s3.model_dump()
        if type == StorageType.SFTP:
            sftp = SftpConfig.model_validate(config)
            await asyncio.to_thread(policy.check_host, sftp.host, sftp.port)
            return sftp.model_dump()
        path = PathConfig.model_validate(config)
    except ValidationError as err:
        raise InvalidInput(f"Invalid {type.value} config: {err.errors()[0]['msg']}") from None
    check_path_config(type, path)
    return path.model_dump()


def _secret_context(provider_id: int) -> str:
    return f"storage_providers.secrets:{provider_id}"


def store_credentials(keyring: Keyring, provider: StorageProvider, values: dict[str, str]) -> None:
    provider.secret_fields = sorted(values)
    provider.secrets_encrypted = (
        keyring.encrypt_secret(json.dumps(values), context=_secret_context(provider.id))
        if values
        else None
    )


def credentials_of(keyring: Keyring, provider: StorageProvider) -> dict[str, str]:
    if not provider.secrets_encrypted:
        return {}
    data: dict[str, str] = json.loads(
        keyring.decrypt_secret(provider.secrets_encrypted, context=_secret_context(provider.id))
    )
    return data


def backend_for(type: str, config: dict[str, Any], secrets: dict[str, str]) -> StorageBackend:
    if type == StorageType.S3:
        return S3Storage(
            bucket=config["bucket"],
            endpoint_url=config.get("endpoint_url"),
            region=config.get("region", "us-east-1"),
            prefix=config.get("prefix", ""),
            access_key_id=secrets.get("access_key_id"),
            secret_access_key=secrets.get("secret_access_key"),
            addressing_style=config.get("addressing_style", "auto"),
            verify_tls=config.get("verify_tls", True),
        )
    if type == StorageType.SFTP:
        ssh = SshConfig(
            host=config["host"],
            port=int(config.get("port", 22)),
            username=config["username"],
            password=secrets.get("password"),
            private_key=secrets.get("private_key"),
            passphrase=secrets.get("passphrase"),
            host_key=config.get("host_key"),
        )
        return SftpStorage(ssh, config["path"])
    root = Path(config["path"])
    prefix = str(config.get("prefix", "")).strip("/")
    return LocalStorage(root / prefix if prefix else root)


def backend(provider: StorageProvider, keyring: Keyring) -> StorageBackend:
    return backend_for(provider.type, provider.config, credentials_of(keyring, provider))


class StoragePool:
    """One long-lived backend per provider (an S3 client, an SFTP connection), rebuilt
    when the provider changes and closed at shutdown."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._backends: dict[int, tuple[object, StorageBackend]] = {}

    def get(self, provider: StorageProvider) -> StorageBackend:
        version = (
            provider.updated_at,
            provider.type,
            json.dumps(provider.config, sort_keys=True),
            provider.secrets_encrypted,
        )
        cached = self._backends.get(provider.id)
        if cached is not None and cached[0] == version:
            return cached[1]
        if cached is not None:
            self._retire(cached[1])
        storage = backend(provider, self.keyring)
        self._backends[provider.id] = (version, storage)
        return storage

    def _retire(self, storage: StorageBackend) -> None:
        close = getattr(storage, "close", None)
        if close is not None:
            task = asyncio.ensure_future(close())
            task.add_done_callback(lambda t: t.exception())

    async def close(self) -> None:
        for _, storage in self._backends.values():
            close = getattr(storage, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        self._backends.clear()


def providers_query(principal: Principal) -> Select[StorageProvider]:
    return readable(select(StorageProvider), StorageProvider, principal).order_by(
        StorageProvider.id
    )


async def get_provider(
    session: AsyncSession, principal: Principal, provider_id: int
) -> StorageProvider:
    return await get_readable(
        session, StorageProvider, provider_id, principal, name="Storage provider"
    )


async def _unset_other_defaults(session: AsyncSession, provider: StorageProvider) -> None:
    await session.execute(
        update(StorageProvider)
        .where(StorageProvider.team_id == provider.team_id, StorageProvider.id != provider.id)
        .values(is_default=False)
    )


async def _ensure_unique_name(
    session: AsyncSession, team_id: int, name: str, exclude: int | None = None
) -> None:
    stmt = select(StorageProvider.id).where(
        StorageProvider.team_id == team_id, StorageProvider.name == name
    )
    if exclude is not None:
        stmt = stmt.where(StorageProvider.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise Conflict(f"A storage provider named '{name}' already exists in this team")


async def create_provider(
    session: AsyncSession,
    keyring: Keyring,
    policy: OutboundPolicy,
    principal: Principal,
    data: StorageCreate,
) -> StorageProvider:
    team_id = data.team_id or min(principal.team_ids, default=None)
    if team_id is None:
        raise InvalidInput("You belong to no team; give team_id")
    check_team_access(principal, team_id)
    await release(session)  # authentication's transaction, before the endpoint is resolved
    config = await validated_config(StorageType(data.type), data.config.model_dump(), policy)
    await _ensure_unique_name(session, team_id, data.name)
    provider = StorageProvider(
        team_id=team_id,
        name=data.name,
        type=StorageType(data.type).value,
        config=config,
        is_default=data.is_default,
    )
    session.add(provider)
    await session.flush()  # the id binds the credentials' ciphertext to this row
    credentials = getattr(data, "credentials", None)
    store_credentials(keyring, provider, credentials.model_dump() if credentials else {})
    await session.flush()
    if provider.is_default:
        await _unset_other_defaults(session, provider)
    return provider


async def update_provider(
    session: AsyncSession,
    keyring: Keyring,
    policy: OutboundPolicy,
    principal: Principal,
    provider_id: int,
    data: StorageUpdate,
) -> tuple[StorageProvider, list[str]]:
    provider = await get_provider(session, principal, provider_id)
    config = None
    if data.config is not None:
        await release(session)  # no transaction held while the endpoint is resolved
        config = await validated_config(StorageType(provider.type), data.config, policy)
        provider = await get_provider(session, principal, provider_id)  # still there?
    changed = []
    if data.name is not None and data.name != provider.name:
        await _ensure_unique_name(session, provider.team_id, data.name, provider.id)
        provider.name = data.name
        changed.append("name")
    if config is not None:
        provider.config = config
        changed.append("config")
    if data.credentials is not None:
        schemas: dict[StorageType, type[InputModel]] = {
            StorageType.S3: S3Credentials,
            StorageType.SFTP: SftpCredentials,
        }
        schema = schemas.get(StorageType(provider.type))
        if schema is not None:
            try:
                schema.model_validate(data.credentials)
            except ValidationError as err:
                raise InvalidInput(f"Invalid credentials: {err.errors()[0]['msg']}") from None
        store_credentials(keyring, provider, dict(data.credentials))
        changed.append("credentials")
    if data.is_active is not None and data.is_active != provider.is_active:
        provider.is_active = data.is_active
        changed.append("is_active")
    if data.is_default is not None and data.is_default != provider.is_default:
        provider.is_default = data.is_default
        changed.append("is_default")
        if data.is_default:
            await _unset_other_defaults(session, provider)
    await session.flush()
    return provider, changed


async def delete_provider(
    session: AsyncSession, principal: Principal, provider_id: int
) -> StorageProvider:
    """Only a provider nothing depends on: its backups would lose their bytes' address,
    and schedules that name it would fail at their next run."""
    provider = await get_provider(session, principal, provider_id)
    stored = await session.scalar(
        select(func.count()).select_from(Backup).where(Backup.storage_id == provider.id)
    )
    if stored:
        raise Conflict(
            f"{stored} backup(s) are stored in '{provider.name}': delete them (or let "
            "retention remove them) first, or deactivate the provider (is_active: false) "
            "to keep them restorable while no new backups go there"
        )
    # storage_ids is a JSON list: matched here, the same way on SQLite and PostgreSQL.
    schedules = await session.execute(
        select(Schedule.name, Schedule.storage_ids).where(Schedule.team_id == provider.team_id)
    )
    users = sorted(name for name, ids in schedules if provider.id in (ids or []))
    if users:
        raise Conflict(
            f"Schedules still write to '{provider.name}': {', '.join(users)}. "
            "Point them at another storage first"
        )
    await session.delete(provider)
    await session.flush()
    return provider


async def probe(storage: StorageBackend) -> StorageTestResult:
    """Write, read back and delete a small object: what a backup needs, end to end."""
    started = time.perf_counter()
    key = f"opscenter-probe/{uuid.uuid4().hex}"
    payload = os.urandom(4096)
    try:
        async with await storage.open_writer(key) as writer:
            await writer.write(payload)
            await writer.commit()
        async with await storage.open_reader(key) as reader:
            echoed = await reader.read(len(payload) + 1)
        await storage.delete(key)
    except StorageError as err:
        return StorageTestResult(
            success=False,
            message=str(err),
            code=err.code,
            latency_ms=round((time.perf_counter() - started) * 1000),
        )
    ok = echoed == payload
    return StorageTestResult(
        success=ok,
        message="Wrote, read back and deleted a test object"
        if ok
        else "The object read back differs from what was written",
        latency_ms=round((time.perf_counter() - started) * 1000),
        code=None if ok else "corrupt",
    )


async def scan(storage: StorageBackend) -> CatalogScan:
    try:
        return await scan_catalog(storage)
    except BackupError as err:
        raise InvalidInput(str(err)) from None


async def ensure_default_provider(session: AsyncSession, team_id: int, data_dir: Path) -> None:
    """First start: a local provider under the data dir, so backups work out of the box."""
    exists = await session.scalar(
        select(StorageProvider.id).where(StorageProvider.team_id == team_id).limit(1)
    )
    if exists is not None:
        return
    root = (data_dir / "backups").resolve()
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    session.add(
        StorageProvider(
            team_id=team_id,
            name=DEFAULT_NAME,
            type=StorageType.LOCAL.value,
            config={"path": str(root), "prefix": ""},
            is_default=True,
        )
    )
    await session.flush()


async def catalog_keys(session: AsyncSession, provider_id: int) -> dict[str, int]:
    """Storage key -> backup id of what the catalog knows in this storage."""
    rows = await session.execute(
        select(Backup.storage_key, Backup.id).where(
            Backup.storage_id == provider_id, Backup.storage_key.is_not(None)
        )
    )
    return {key: backup_id for key, backup_id in rows.all() if key}


def pin_host_key(provider: StorageProvider, storage: StorageBackend) -> bool:
    """SFTP: remember the host key seen on first use; a different one then fails closed."""
    seen = getattr(storage, "host_key", None)
    if not isinstance(storage, SftpStorage) or seen is None or provider.config.get("host_key"):
        return False
    provider.config = {**provider.config, "host_key": seen.public_key}
    return True
