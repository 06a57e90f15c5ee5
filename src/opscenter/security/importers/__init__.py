"""Scanner reports read into one shape. Each format is a module with `parse(report)`;
a report that is not what it claims raises `ReportProblem` naming the first problem."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, NamedTuple

from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError

SEVERITIES = ("critical", "high", "medium", "low", "info")
_CWE = re.compile(r"CWE-?(\d+)", re.IGNORECASE)


class ReportProblem(Exception):
    """The report breaks its format's schema; `str()` says where and how."""


class ParsedFinding(NamedTuple):
    """One finding as a report states it (a tuple: a report makes tens of thousands)."""

    identifier: str
    title: str
    severity: str
    cwe: str | None = None
    cvss_vector: str | None = None
    cvss_score: float | None = None
    component: str = ""
    version: str = ""
    fixed_version: str = ""
    location: str = ""
    attack_techniques: tuple[str, ...] = ()


@lru_cache(maxsize=4096)
def cvss_score(vector: str) -> float:
    """The base score of a CVSS v2, v3.0, v3.1 or v4.0 vector, computed from the vector
    (never taken from the report). Raises ValueError for a vector that is not valid."""
    try:
        if vector.startswith("CVSS:4.0/"):
            return float(CVSS4(vector).base_score)
        if vector.startswith(("CVSS:3.0/", "CVSS:3.1/")):
            return float(CVSS3(vector).scores()[0])
        return float(CVSS2(vector).scores()[0])
    except (CVSSError, KeyError, ValueError, IndexError) as err:
        raise ValueError(f"not a valid CVSS vector ({err})") from None


def severity_of_score(score: float) -> str:
    """CVSS v3/v4 qualitative rating (also GitHub's for SARIF `security-severity`)."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "info"


def cwe_of(values: Any) -> str | None:
    """The first CWE named in a string or list of strings, as `CWE-<n>`."""
    for value in values if isinstance(values, list) else [values]:
        cwe = _cwe_in(value) if isinstance(value, str) else None
        if cwe:
            return cwe
    return None


@lru_cache(maxsize=4096)  # a report names a few hundred CWEs over and over
def _cwe_in(text: str) -> str | None:
    match = _CWE.search(text)
    return f"CWE-{match.group(1)}" if match else None


class Reader:
    """Typed access to a JSON object of a report that names where it failed
    (`Results[3].PkgName`). The path is built only for a problem: a report has tens of
    thousands of objects and nearly all are fine."""

    __slots__ = ("_index", "_key", "_parent", "value")

    def __init__(
        self,
        value: dict[str, Any],
        parent: Reader | None = None,
        key: str = "",
        index: int | None = None,
    ) -> None:
        self.value = value
        self._parent = parent
        self._key = key  # in its parent
        self._index = index  # in the list under that key

    @property
    def where(self) -> str:
        if self._parent is None:
            return ""
        where = self._parent._at(self._key)
        return where if self._index is None else f"{where}[{self._index}]"

    def problem(self, message: str) -> ReportProblem:
        return ReportProblem(f"{self.where or 'the report'}: {message}")

    def _at(self, key: str) -> str:
        where = self.where
        return f"{where}.{key}" if where else key

    def obj(self, key: str, *, required: bool = True) -> Reader | None:
        value = self.value.get(key)
        if type(value) is not dict:
            value = self._field(key, dict, "an object", required)
        return None if value is None else Reader(value, self, key)

    def need(self, key: str) -> Reader:
        reader = self.obj(key)
        assert reader is not None
        return reader

    def items(self, key: str, *, required: bool = False) -> Iterator[Reader]:
        value = self._field(key, list, "a list", required) or []
        for i, item in enumerate(value):
            if type(item) is not dict:
                raise ReportProblem(f"{self._at(key)}[{i}]: must be an object")
            yield Reader(item, self, key, i)

    def text(self, key: str, *, required: bool = False, limit: int = 500) -> str:
        value = self.value.get(key)
        if type(value) is str and value:  # the common case, without the checks' cost
            return value[:limit]
        value = self._field(key, str, "a string", required)
        if required and not value:
            raise ReportProblem(f"{self._at(key)}: must not be empty")
        return (value or "")[:limit]

    def strings(self, key: str) -> list[str]:
        value = self._field(key, list, "a list", False) or []
        for v in value:
            if type(v) is not str:
                raise ReportProblem(f"{self._at(key)}: must be a list of strings")
        return value

    def get(self, key: str) -> Any:
        return self.value.get(key)

    def _field(self, key: str, kind: type, label: str, required: bool) -> Any:
        value = self.value.get(key)
        if value is None:
            if required:
                raise ReportProblem(f"{self._at(key)}: is missing")
            return None
        if not isinstance(value, kind):
            raise ReportProblem(f"{self._at(key)}: must be {label}")
        return value


def scored(reader: Reader, vector: str | None) -> tuple[str | None, float | None]:
    """A vector and the score computed from it, or a problem naming where it was."""
    if not vector:
        return None, None
    try:
        return vector, cvss_score(vector)
    except ValueError as err:
        raise reader.problem(f"{vector!r} is {err}") from None


def severity(reader: Reader, value: str, score: float | None) -> str:
    """The scanner's own rating when it gives one, else the score's."""
    word = value.strip().lower()
    if word in ("critical", "high", "medium", "low"):
        return word
    if word in ("negligible", "info", "informational", "none"):
        return "info"
    if word in ("moderate",):
        return "medium"
    if word in ("", "unknown"):
        return severity_of_score(score) if score is not None else "info"
    raise reader.problem(f"severity {value!r} is not one of critical, high, medium, low")
