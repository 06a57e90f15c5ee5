"""Escrow recipients: every new encrypted backup is encrypted to the installation's key
and to each of them (age allows many recipients per file), so an admin holding an
escrow identity offline can decrypt with `age -d -i` even if this server and its data
directory are gone. Removing one affects only backups made afterwards."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.failures import BackupError
from opscenter.core.principal import Principal
from opscenter.encryption.schemas import RecipientCreate, RecipientOut
from opscenter.models.encryption import EscrowRecipient
from opscenter.streaming.crypto import key_id
from opscenter.streaming.keys import BackupKeys


def installation_out(keys: BackupKeys) -> RecipientOut:
    return RecipientOut(
        id=None,
        name="installation",
        kind="installation",
        recipient=keys.recipient,
        key_id=keys.key_id,
    )


def escrow_out(row: EscrowRecipient) -> RecipientOut:
    return RecipientOut(
        id=row.id,
        name=row.name,
        kind="escrow",
        recipient=row.recipient,
        key_id=row.key_id,
        created_by=row.created_by,
        created_at=row.created_at,
    )


async def escrow_recipients(session: AsyncSession) -> list[EscrowRecipient]:
    return list((await session.scalars(select(EscrowRecipient).order_by(EscrowRecipient.id))).all())


def _valid_recipient(text: str) -> str:
    from opscenter.streaming.crypto import parse_recipients

    recipient = text.strip()
    if recipient.startswith("AGE-SECRET-KEY-"):
        raise InvalidInput(
            "that is a private age identity: give its public key (age1...), "
            "printed by `age-keygen -y`, and keep the identity offline"
        )
    try:
        parse_recipients([recipient])
    except BackupError as exc:
        raise InvalidInput(
            "recipient: not an age X25519 public key (age1... as printed by age-keygen)"
        ) from exc
    return recipient


async def add_escrow(
    session: AsyncSession, principal: Principal, keys: BackupKeys, data: RecipientCreate
) -> EscrowRecipient:
    recipient = _valid_recipient(data.recipient)
    if recipient == keys.recipient:
        raise Conflict("that is the installation's own key, which every backup has already")
    row = EscrowRecipient(
        name=data.name,
        recipient=recipient,
        key_id=key_id(recipient),
        created_by=principal.username,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("an escrow recipient with this name or key exists already") from exc
    return row


async def get_escrow(session: AsyncSession, recipient_id: int) -> EscrowRecipient:
    row = await session.get(EscrowRecipient, recipient_id)
    if row is None:
        raise NotFound("escrow recipient not found")
    return row
