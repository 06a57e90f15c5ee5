"""Base schemas: strict input (no unknown fields, no NaN, no NUL), UTC `Z` output."""

from __future__ import annotations

import re
import types
import typing
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

from opscenter.core.clock import isoformat_z

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_OR_LINE_BREAK = re.compile(r"[\x00-\x1f\x7f]")


def _no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain NUL or control characters")
    return value


def _single_line(value: str) -> str:
    if _CONTROL_OR_LINE_BREAK.search(value):
        raise ValueError("must be one line without tabs or control characters")
    return value


def _not_bool(value: Any) -> Any:
    # bool is an int in Python, and pydantic takes JSON true for 1: refuse it.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any or annotation is object:
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(arg, bool) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_admits_bool(arg) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    return False


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

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """A boolean only where the field takes one (JSON true is not 1)."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(field.alias or name)
                if isinstance(value, bool) and not _admits_bool(field.annotation):
                    raise ValueError(f"{field.alias or name} must not be a boolean")
        return data


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

# Names that reach the database tools (databases, tables, users): one line, no control
# character, so they never split a command or come back as forged lines in a message.
SingleLine = AfterValidator(_single_line)

# Ids are 32-bit on every backend; a larger number is a 422, never an overflow deep inside.
MAX_ID = 2**31 - 1
Id = Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=MAX_ID)]
