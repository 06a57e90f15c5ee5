from __future__ import annotations

from pydantic import Field

from opscenter.core.schemas import InputModel, Name, OutputModel, UtcDatetime
from opscenter.users.schemas import RoleName


class TokenCreate(InputModel):
    name: Name
    role: RoleName | None = Field(None, description="Defaults to the creator's own role")
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    expires_at: UtcDatetime | None = None


class TokenOut(OutputModel):
    id: int
    name: str
    prefix: str
    role: str
    user_id: int
    username: str
    expires_at: UtcDatetime | None
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    created_at: UtcDatetime


class TokenCreated(TokenOut):
    key: str = Field(description="The key itself: shown this once, store it now")
