"""Command templates: `{{variable}}` placeholders, typed definitions, and rendering where
every value becomes exactly one quoted word (a shell word, or an SQL literal).

Nothing a user types at run time ever runs as syntax: a value is checked against its
definition, then quoted. A placeholder may only stand where a quoted word means what it
looks like: not inside quotes, a here-document or a comment of the template (there a
quoted value would be read differently), which is refused when the template is saved.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opscenter.engines import mysql, postgres

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
#: A value without a pattern of its own: one plain word that cannot be read as an option.
DEFAULT_PATTERN = r"[A-Za-z0-9_.][A-Za-z0-9_.:@%+=,/-]{0,254}"
PATH_PATTERN = re.compile(r"/[^\x00-\x1f\x7f]{0,4095}")
MAX_VALUE = 4096
MASK = "********"
VARIABLE_TYPES = ("string", "int", "enum", "path")


class TemplateError(ValueError):
    """A template or a value that breaks the rules; the message says what to change."""


@dataclass(frozen=True)
class Variable:
    name: str
    type: str = "string"
    pattern: str | None = None
    allowed_values: tuple[str, ...] = ()
    default: str | None = None
    secret: bool = False
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Variable:
        default = data.get("default")
        return cls(
            name=str(data["name"]),
            type=str(data.get("type") or "string"),
            pattern=data.get("pattern"),
            allowed_values=tuple(str(v) for v in data.get("allowed_values") or ()),
            default=None if default is None else str(default),
            secret=bool(data.get("secret", False)),
            description=str(data.get("description") or ""),
            minimum=data.get("minimum"),
            maximum=data.get("maximum"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "pattern": self.pattern,
            "allowed_values": list(self.allowed_values),
            "default": self.default,
            "secret": self.secret,
            "description": self.description,
            "minimum": self.minimum,
            "maximum": self.maximum,
        }

    def check(self, raw: object) -> str:
        """The value as text if it fits this definition; TemplateError otherwise."""
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise TemplateError(f"{self.name}: give a string or a number")
        value = str(raw)
        if len(value) > MAX_VALUE:
            raise TemplateError(f"{self.name}: at most {MAX_VALUE} characters")
        if "\x00" in value:
            raise TemplateError(f"{self.name}: must not contain a NUL byte")
        if self.type == "int":
            if not re.fullmatch(r"-?[0-9]{1,18}", value):
                raise TemplateError(f"{self.name}: must be a whole number")
            number = int(value)
            if self.minimum is not None and number < self.minimum:
                raise TemplateError(f"{self.name}: must be at least {self.minimum}")
            if self.maximum is not None and number > self.maximum:
                raise TemplateError(f"{self.name}: must be at most {self.maximum}")
            return str(number)
        if self.type == "enum":
            if value not in self.allowed_values:
                allowed = ", ".join(self.allowed_values)
                raise TemplateError(f"{self.name}: must be one of {allowed}")
            return value
        if self.type == "path" and (not PATH_PATTERN.fullmatch(value) or "/../" in f"{value}/"):
            raise TemplateError(
                f"{self.name}: must be an absolute path (starting with /) on one line, without '..'"
            )
        if self.pattern is not None:
            if not re.fullmatch(self.pattern, value):
                raise TemplateError(f"{self.name}: does not match the pattern {self.pattern}")
        elif self.type == "string" and not re.fullmatch(DEFAULT_PATTERN, value):
            raise TemplateError(
                f"{self.name}: only letters, digits and . _ : @ % + = , / - are allowed, and "
                "it must not start with '-' (give the variable a pattern to allow more)"
            )
        return value


def placeholders(template: str) -> list[str]:
    """Placeholder names in order of first use."""
    seen: dict[str, None] = {}
    for match in PLACEHOLDER.finditer(template):
        seen.setdefault(match.group(1), None)
    return list(seen)


def check_shell_template(template: str) -> None:
    """Refuse placeholders where a quoted word would not be one literal word: inside
    single or double quotes, backquotes, a here-document or a comment."""
    if "<<" in template and PLACEHOLDER.search(template):
        raise TemplateError(
            "placeholders cannot be used with here-documents (<<): the shell would expand "
            "the value there; pass it as an argument instead"
        )
    state = ""  # "", "'", '"', "`", "#"
    i = 0
    while i < len(template):
        ch = template[i]
        if state == "" or state == "`":
            if template.startswith("{{", i) and PLACEHOLDER.match(template, i):
                if state == "`":
                    raise TemplateError("a placeholder cannot stand inside backquotes; use $(...)")
            elif ch == "\\":
                i += 1
            elif ch in "'\"":
                state = ch if state == "" else state
            elif ch == "`":
                state = "" if state == "`" else "`"
            elif ch == "#" and state == "" and (i == 0 or template[i - 1] in " \t\n;&|("):
                state = "#"
        elif state == "'":
            if ch == "'":
                state = ""
            elif template.startswith("{{", i) and PLACEHOLDER.match(template, i):
                raise _quoted(template, i)
        elif state == '"':
            if ch == "\\":
                i += 1
            elif ch == '"':
                state = ""
            elif template.startswith("{{", i) and PLACEHOLDER.match(template, i):
                raise _quoted(template, i)
        elif state == "#":
            if ch == "\n":
                state = ""
            elif template.startswith("{{", i) and PLACEHOLDER.match(template, i):
                raise TemplateError("a placeholder cannot stand in a comment")
        i += 1
    if state in ("'", '"', "`"):
        raise TemplateError(f"the template has an unclosed {state}")


def _quoted(template: str, at: int) -> TemplateError:
    match = PLACEHOLDER.match(template, at)
    name = match.group(1) if match else "?"
    return TemplateError(
        f"placeholder {{{{{name}}}}} stands inside quotes; write it unquoted: its value is "
        "quoted for you as one word"
    )


def complete_definitions(template: str, given: list[Variable]) -> list[Variable]:
    """The definitions of a template: the given ones, plus a conservative string for each
    placeholder without one. A definition no placeholder uses is refused."""
    names = placeholders(template)
    by_name = {v.name: v for v in given}
    if len(by_name) != len(given):
        raise TemplateError("two variable definitions have the same name")
    unused = [v.name for v in given if v.name not in names]
    if unused:
        raise TemplateError(f"variables not used in the template: {', '.join(unused)}")
    for v in given:
        if v.type == "enum" and not v.allowed_values:
            raise TemplateError(f"{v.name}: an enum needs allowed_values")
        if v.pattern is not None:
            try:
                re.compile(v.pattern)
            except re.error as exc:
                raise TemplateError(f"{v.name}: the pattern is not a valid regex ({exc})") from None
        if v.default is not None:
            v.check(v.default)
    return [by_name.get(n) or Variable(n) for n in names]


@dataclass(frozen=True)
class Rendered:
    text: str  # what runs
    shown: str  # secret values masked
    values: dict[str, str]  # what was used, secret values masked
    secrets: tuple[str, ...]


def resolve(definitions: list[Variable], given: Mapping[str, object]) -> dict[str, str]:
    known = {v.name for v in definitions}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TemplateError(f"unknown variables: {', '.join(unknown)}")
    values: dict[str, str] = {}
    for v in definitions:
        if v.name in given:
            values[v.name] = v.check(given[v.name])
        elif v.default is not None:
            values[v.name] = v.check(v.default)
        else:
            raise TemplateError(f"{v.name}: a value is required")
    return values


def _render(template: str, values: Mapping[str, str], quote: Callable[[str], str]) -> str:
    return PLACEHOLDER.sub(lambda m: quote(values[m.group(1)]), template)


def render(
    template: str, definitions: list[Variable], given: Mapping[str, object], *, kind: str
) -> Rendered:
    """Fill the placeholders: shell words for shell and docker, SQL literals for sql
    (`engine` picks the dialect through `kind`: "sql:postgresql" or "sql:mysql")."""
    values = resolve(definitions, given)
    quote: Callable[[str], str] = shlex.quote
    if kind == "sql:postgresql":
        quote = postgres.quote_literal
    elif kind == "sql:mysql":
        quote = mysql.quote_literal
    secret = {v.name for v in definitions if v.secret}
    masked = {k: (MASK if k in secret else val) for k, val in values.items()}
    return Rendered(
        text=_render(template, values, quote),
        shown=_render(template, masked, lambda s: s if s == MASK else quote(s)),
        values=masked,
        secrets=tuple(values[k] for k in secret if values[k]),
    )
