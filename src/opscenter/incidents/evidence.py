"""Evidence with a chain of custody: immutable items (a correction supersedes, never
edits), files in storage under generated keys with their SHA-256, and a log of every
upload, view and download, re-checked against the hash on the way out."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from pydantic import Field, StringConstraints, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.db import Database
from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.principal import Principal
from opscenter.core.schemas import Id, InputModel
from opscenter.incidents.schemas import EvidenceOut, EvidenceType, Title
from opscenter.incidents.upload import Form
from opscenter.models import Evidence, EvidenceAccess, Incident, StorageProvider
from opscenter.stores.backends import StorageBackend

API = "/api/v1/infra/incidents"


class EvidenceForm(InputModel):
    """Seed 004's form fields (`evidence_type` is taken for `type`)."""

    title: Title
    type: EvidenceType
    content: Annotated[str, StringConstraints(min_length=1, max_length=1024 * 1024)] | None = None
    supersedes_id: Id | None = Field(None, description="The item this one corrects")


def parse_form(form: Form) -> EvidenceForm:
    values: dict[str, Any] = dict(form.fields)
    if "evidence_type" in values:
        if "type" in values:
            raise InvalidInput("Give type or evidence_type, not both")
        values["type"] = values.pop("evidence_type")
    if values.get("supersedes_id") == "":
        values.pop("supersedes_id")
    if values.get("content") == "":
        values.pop("content")
    try:
        data = EvidenceForm.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in err.errors()
        )
        raise InvalidInput(f"Evidence form: {problems}") from None
    if (data.content is None) == (form.file is None):
        raise InvalidInput("Give either a file or text content, exactly one of them")
    return data


class Tampered(Conflict):
    code = "EVIDENCE_TAMPERED"


def storage_key(incident_id: int) -> str:
    # Generated, never from the upload's name: names cannot become paths.
    return f"evidence/incident-{incident_id}/{uuid.uuid4().hex}"


async def default_storage(session: AsyncSession, team_id: int) -> StorageProvider:
    provider = await session.scalar(
        select(StorageProvider)
        .where(StorageProvider.team_id == team_id, StorageProvider.is_active.is_(True))
        .order_by(StorageProvider.is_default.desc(), StorageProvider.id)
        .limit(1)
    )
    if provider is None:
        raise InvalidInput(
            "This team has no active storage provider for evidence files; "
            "add one under /storage/providers"
        )
    return provider


async def check_supersedes(
    session: AsyncSession, incident: Incident, supersedes_id: int | None
) -> None:
    if supersedes_id is None:
        return
    old = await session.get(Evidence, supersedes_id)
    if old is None or old.incident_id != incident.id:
        raise InvalidInput(f"Evidence {supersedes_id} is not evidence of incident {incident.id}")
    newer = await session.scalar(
        select(Evidence.id).where(Evidence.supersedes_id == supersedes_id).limit(1)
    )
    if newer is not None:
        raise Conflict(
            f"Evidence {supersedes_id} is already superseded by {newer}; correct that one"
        )


def add_evidence(
    session: AsyncSession,
    principal: Principal,
    incident: Incident,
    data: EvidenceForm,
    form: Form,
    storage_id: int | None,
) -> Evidence:
    if form.file is not None:
        item = Evidence(
            file_name=form.file.name,
            storage_id=storage_id,
            storage_key=form.file.key,
            sha256=form.file.sha256,
            size_bytes=form.file.size,
            media_type=form.file.media_type,
        )
    else:
        assert data.content is not None
        raw = data.content.encode()
        item = Evidence(
            content=data.content,
            sha256=hashlib.sha256(raw).hexdigest(),
            size_bytes=len(raw),
            media_type="text/plain",
        )
    item.incident_id = incident.id
    item.title = data.title
    item.type = data.type.value
    item.supersedes_id = data.supersedes_id
    item.uploaded_by_id = principal.user_id or None
    item.uploaded_by = principal.username
    session.add(item)
    return item


def evidence_query(incident_id: int) -> Any:
    return select(Evidence).where(Evidence.incident_id == incident_id).order_by(Evidence.id.desc())


async def get_evidence(session: AsyncSession, incident: Incident, evidence_id: int) -> Evidence:
    item = await session.get(Evidence, evidence_id)
    if item is None or item.incident_id != incident.id:
        raise NotFound("Evidence", evidence_id)
    return item


async def superseded_by(session: AsyncSession, items: Sequence[Evidence]) -> dict[int, int]:
    ids = [i.id for i in items]
    if not ids:
        return {}
    rows = await session.execute(
        select(Evidence.supersedes_id, Evidence.id).where(Evidence.supersedes_id.in_(ids))
    )
    return {old: new for old, new in rows.all() if old is not None}


def evidence_out(item: Evidence, newer: dict[int, int]) -> EvidenceOut:
    return EvidenceOut(
        id=item.id,
        incident_id=item.incident_id,
        title=item.title,
        type=item.type,
        content=item.content,
        file_name=item.file_name,
        sha256=item.sha256,
        size_bytes=item.size_bytes,
        media_type=item.media_type,
        supersedes_id=item.supersedes_id,
        superseded_by_id=newer.get(item.id),
        uploaded_by=item.uploaded_by,
        uploaded_at=item.uploaded_at,
        download_url=(
            f"{API}/{item.incident_id}/evidence/{item.id}/download" if item.storage_key else None
        ),
    )


def custody(
    item: Evidence, principal: Principal, action: str, ip: str | None, detail: str | None = None
) -> EvidenceAccess:
    return EvidenceAccess(
        evidence_id=item.id,
        user_id=principal.user_id or None,
        username=principal.username,
        action=action,
        ip_address=ip,
        detail=detail,
    )


async def record_custody(db: Database, entries: Sequence[EvidenceAccess]) -> None:
    """Written in a short transaction of its own: a read (a view, a download, a refused
    download) is logged even though the request itself only reads."""
    if not entries:
        return
    async with db.write_session() as session:
        session.add_all(entries)
        await session.commit()


def custody_query(evidence_id: int) -> Any:
    return (
        select(EvidenceAccess)
        .where(EvidenceAccess.evidence_id == evidence_id)
        .order_by(EvidenceAccess.id)
    )


async def stored_digest(storage: StorageBackend, key: str) -> tuple[str, int]:
    """SHA-256 and size of the object as it is in storage now."""
    digest = hashlib.sha256()
    size = 0
    async with await storage.open_reader(key) as reader:
        while chunk := await reader.read():
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def stream_checked(storage: StorageBackend, key: str, sha256: str) -> AsyncIterator[bytes]:
    """The object's bytes; if they changed since the check, the response breaks off
    instead of ending as if complete."""
    digest = hashlib.sha256()
    async with await storage.open_reader(key) as reader:
        while chunk := await reader.read():
            digest.update(chunk)
            yield chunk
    if digest.hexdigest() != sha256:
        raise Tampered("The evidence file changed while it was being sent")
