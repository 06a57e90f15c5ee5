"""`/encryption/recipients`: who can decrypt new backups. Public keys only: the
installation's private identity leaves this server only through `opscenter keys
export` on its console."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.pagination import Page, PathId
from opscenter.core.principal import Principal
from opscenter.encryption import service
from opscenter.encryption.schemas import RecipientCreate, RecipientOut
from opscenter.streaming import keys as backup_keys

router = APIRouter(prefix="/encryption/recipients", tags=["Encryption"])
ReadKeys = Annotated[Principal, Depends(require("read:encryption"))]
WriteKeys = Annotated[Principal, Depends(require("write:encryption"))]


@router.get("", response_model=Page[RecipientOut])
async def list_recipients(_: ReadKeys, session: SessionDep, ctx: Ctx) -> Page[RecipientOut]:
    """The installation's key first, then the escrow recipients: every new encrypted
    backup is encrypted to all of them."""
    keys = backup_keys.load_or_create(ctx.keyring, ctx.settings.keys_dir)
    items = [service.installation_out(keys)]
    items += [service.escrow_out(r) for r in await service.escrow_recipients(session)]
    return Page.whole(items)


@router.post(
    "",
    response_model=RecipientOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, InvalidInput, Conflict),
)
async def add_recipient(
    body: RecipientCreate, principal: WriteKeys, session: SessionDep, ctx: Ctx, request: Request
) -> RecipientOut:
    """Add an offline escrow key (`age-keygen -o escrow.key` on a machine you trust, then
    paste the `age1...` line it prints). Backups made from now on include it."""
    keys = backup_keys.load_or_create(ctx.keyring, ctx.settings.keys_dir)
    row = await service.add_escrow(session, principal, keys, body)
    await audit.record(
        session,
        action="encryption.escrow_add",
        actor=principal,
        resource_type="escrow_recipient",
        resource_id=row.id,
        details={"name": row.name, "key_id": row.key_id},
        origin=origin_of(request),
    )
    return service.escrow_out(row)


@router.delete(
    "/{recipient_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Forbidden),
)
async def remove_recipient(
    recipient_id: PathId, principal: WriteKeys, session: SessionDep, request: Request
) -> None:
    """Backups made from now on leave it out; existing ones stay decryptable with it."""
    row = await service.get_escrow(session, recipient_id)
    await session.delete(row)
    await audit.record(
        session,
        action="encryption.escrow_remove",
        actor=principal,
        resource_type="escrow_recipient",
        resource_id=row.id,
        details={"name": row.name, "key_id": row.key_id},
        origin=origin_of(request),
    )
