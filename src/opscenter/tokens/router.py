"""API tokens for machines (seeds 000 and 004): `/admin/tokens`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import SessionDep
from opscenter.core.errors import Forbidden, InvalidInput, NotFound, responses
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.tokens import service
from opscenter.tokens.schemas import TokenCreate, TokenCreated, TokenOut

router = APIRouter(prefix="/admin/tokens", tags=["API tokens"])
ReadTokens = Annotated[Principal, Depends(require("read:tokens"))]
WriteTokens = Annotated[Principal, Depends(require("write:tokens"))]


@router.get("", response_model=Page[TokenOut])
async def list_tokens(_: ReadTokens, session: SessionDep, paging: Paging) -> Page[TokenOut]:
    rows, total = await paginate(session, service.keys_query(), paging)
    return Page.of([service.token_out(k) for k in rows], total, paging)


@router.post(
    "",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, InvalidInput),
)
async def create_token(
    body: TokenCreate, principal: WriteTokens, session: SessionDep, request: Request
) -> TokenCreated:
    """The key is in this response only; afterwards only its prefix is shown."""
    key, raw = await service.create_key(session, principal, body)
    await audit.record(
        session,
        action="token.create",
        actor=principal,
        resource_type="api_key",
        resource_id=key.id,
        details={"name": key.name, "role": key.role.name, "prefix": key.prefix},
        origin=origin_of(request),
    )
    return TokenCreated(**service.token_out(key).model_dump(), key=raw)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound))
async def revoke_token(
    token_id: PathId, principal: WriteTokens, session: SessionDep, request: Request
) -> None:
    key = await service.revoke_key(session, token_id)
    await audit.record(
        session,
        action="token.revoke",
        actor=principal,
        resource_type="api_key",
        resource_id=key.id,
        details={"prefix": key.prefix},
        origin=origin_of(request),
    )
