"""The framework catalogue, shipped as data (`data/*.json`) and read once: SOC 2, ISO/IEC
27001:2022 Annex A and NIST CSF 2.0 with their requirements, and our controls, each
mapped to requirements of several frameworks and naming the evidence that satisfies it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

FRAMEWORK_FILES = ("soc2.json", "iso27001.json", "nist-csf.json")


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    group: str


@dataclass(frozen=True)
class Framework:
    id: str
    name: str
    version: str
    publisher: str
    groups: dict[str, str]
    requirements: tuple[Requirement, ...]


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    #: The platform's gatherer of its evidence (`service.CHECKS`); None: uploads only.
    check: str | None
    satisfied_by: str
    maps: dict[str, tuple[str, ...]]  # framework id -> requirement ids


def _read(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath("data", name).read_text("utf-8"))


def _group_of(requirement_id: str, groups: dict[str, str]) -> str:
    """The longest group id the requirement id starts with (`CC6` of `CC6.1`, `A.8` of
    `A.8.13`, `PR.DS` of `PR.DS-11`)."""
    found = [g for g in groups if requirement_id.startswith(g) and requirement_id[len(g)] in ".-"]
    if not found:
        raise ValueError(f"requirement {requirement_id} is in no group")
    return max(found, key=len)


def _framework(data: dict[str, Any]) -> Framework:
    groups: dict[str, str] = data["groups"]
    return Framework(
        id=data["id"],
        name=data["name"],
        version=data["version"],
        publisher=data["publisher"],
        groups=groups,
        requirements=tuple(
            Requirement(rid, title, _group_of(rid, groups)) for rid, title in data["requirements"]
        ),
    )


@cache
def frameworks() -> dict[str, Framework]:
    loaded = (_framework(_read(name)) for name in FRAMEWORK_FILES)
    return {f.id: f for f in loaded}


@cache
def controls() -> dict[str, Control]:
    return {
        c["id"]: Control(
            id=c["id"],
            title=c["title"],
            check=c["check"],
            satisfied_by=c["satisfied_by"],
            maps={fw: tuple(ids) for fw, ids in c["maps"].items()},
        )
        for c in _read("controls.json")
    }


@cache
def controls_of(framework_id: str) -> dict[str, tuple[Control, ...]]:
    """Requirement id -> the controls mapped to it, in catalogue order."""
    mapped: dict[str, list[Control]] = {}
    for control in controls().values():
        for rid in control.maps.get(framework_id, ()):
            mapped.setdefault(rid, []).append(control)
    return {rid: tuple(cs) for rid, cs in mapped.items()}
