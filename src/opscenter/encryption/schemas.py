from __future__ import annotations

from typing import Literal

from pydantic import Field

from opscenter.core.schemas import InputModel, Name, OutputModel, UtcDatetime


class RecipientCreate(InputModel):
    name: Name
    recipient: str = Field(
        min_length=10,
        max_length=100,
        description="An age X25519 public key (age1...), e.g. from `age-keygen` on an "
        "offline machine; its private half never comes here",
    )


class RecipientOut(OutputModel):
    id: int | None = Field(description="None for the installation's own key")
    name: str
    kind: Literal["installation", "escrow"]
    recipient: str
    key_id: str
    created_by: str | None = None
    created_at: UtcDatetime | None = None
