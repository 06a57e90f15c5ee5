from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints, model_validator

from opscenter.core.schemas import InputModel, OutputModel, UtcDatetime
from opscenter.users.schemas import UserOut


class LoginRequest(InputModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=254)] | None = None
    email: Annotated[str, StringConstraints(min_length=1, max_length=254)] | None = None
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]

    @model_validator(mode="after")
    def _one_identifier(self) -> LoginRequest:
        if not (self.username or self.email):
            raise ValueError("give username or email")
        return self

    @property
    def identifier(self) -> str:
        return (self.username or self.email or "").strip().lower()


class RefreshRequest(InputModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class LogoutRequest(InputModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None


class TokenPair(OutputModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth token type, not a secret)
    expires_at: UtcDatetime
    refresh_expires_at: UtcDatetime
    csrf_token: str
    user: UserOut
