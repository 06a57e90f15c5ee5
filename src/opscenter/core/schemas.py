"""Base schemas: strict input (no unknown fields, no NaN, no NUL), UTC `Z` output."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from opscenter.core.clock import isoformat_z

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain NUL or control characters")
    return value


def _reject_control_deep(value: Any) -> Any:
    if isinstance(value, str):
        _no_control_chars(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_control_deep(key)
            _reject_control_deep(item)
    elif isinstance(value, list):
        for item in value:
            _reject_control_deep(item)
    return value


class InputModel(BaseModel):
    """Request bodies: unknown fields are an error, so nothing can be smuggled in."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=False)

    def model_post_init(self, context: Any, /) -> None:
        _reject_control_deep(self.model_dump())


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


UtcDatetime = Annotated[datetime, PlainSerializer(isoformat_z, return_type=str, when_used="json")]
# For text types sized to a column: Annotated[str, StringConstraints(...), NoControlChars].
NoControlChars = AfterValidator(_no_control_chars)
Text = Annotated[str, StringConstraints(max_length=10_000), NoControlChars]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
    AfterValidator(_no_control_chars),
]

# Ids are 32-bit on every backend; a larger number is a 422, never an overflow deep inside.
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
