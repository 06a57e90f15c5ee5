"""API keys: prefixed, shown once, stored as sha256, never wider than their creator."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opscenter.core.clock import as_utc, utcnow
from opscenter.core.errors import Forbidden, InvalidInput, NotFound
from opscenter.core.principal import Principal
from opscenter.core.security import new_token, sha256_hex
from opscenter.models import ApiKey, User
from opscenter.tokens.schemas import TokenCreate, TokenOut
from opscenter.users.service import ensure_grantable, role_by_name

KEY_PREFIX = "ock_"


def token_out(key: ApiKey) -> TokenOut:
    return TokenOut(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        role=key.role.name,
        user_id=key.user_id,
        username=key.user.username,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
        created_at=key.created_at,
    )


def keys_query() -> Select[ApiKey]:
    return (
        select(ApiKey)
        .options(selectinload(ApiKey.role), selectinload(ApiKey.user))
        .order_by(ApiKey.id.desc())
    )


async def get_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.scalar(keys_query().where(ApiKey.id == key_id))
    if key is None:
        raise NotFound("API key", key_id)
    return key


async def create_key(
    session: AsyncSession, actor: Principal, data: TokenCreate
) -> tuple[ApiKey, str]:
    if actor.api_key_id is not None:
        raise Forbidden("An API key cannot create API keys; log in as a user")
    owner = await session.get(User, actor.user_id)
    assert owner is not None
    role = await role_by_name(session, data.role or actor.role)
    ensure_grantable(actor, role)
    now = utcnow()
    # An offset-less timestamp is read as UTC (like every timestamp of this API) instead of
    # failing the comparison below and the UTC column with a 500.
    expires_at = as_utc(data.expires_at) if data.expires_at is not None else None
    if data.expires_in_days is not None:
        if expires_at is not None:
            raise InvalidInput("Give expires_at or expires_in_days, not both")
        expires_at = now + timedelta(days=data.expires_in_days)
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at must be in the future")
    raw = new_token(KEY_PREFIX)
    key = ApiKey(
        name=data.name,
        prefix=raw[:12],
        key_hash=sha256_hex(raw),
        user_id=owner.id,
        role_id=role.id,
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return await get_key(session, key.id), raw


async def revoke_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await get_key(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key
