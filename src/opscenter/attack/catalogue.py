"""The MITRE ATT&CK Enterprise catalogue (tactics, techniques, sub-techniques), read once
from the JSON that `scripts/build_attack_data.py` derives from MITRE's STIX data
(`ATTACK-LICENSE.md` holds MITRE's copyright and terms). Its own package, below
the domains that tag things with technique ids (incidents, security)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from opscenter.core.errors import InvalidInput, NotFound

#: A technique (`T1059`) or sub-technique (`T1059.001`) id, as ATT&CK writes them.
TECHNIQUE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")


class UnknownTechnique(InvalidInput):
    code = "UNKNOWN_ATTACK_TECHNIQUE"


@dataclass(frozen=True, slots=True)
class Tactic:
    id: str
    shortname: str
    name: str
    url: str
    order: int


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    description: str
    tactics: tuple[str, ...]  # tactic shortnames
    is_subtechnique: bool
    parent_id: str | None
    platforms: tuple[str, ...]
    url: str


@dataclass(frozen=True, slots=True)
class Catalogue:
    version: str
    tactics: tuple[Tactic, ...]  # in the matrix's order
    techniques: dict[str, Technique]  # by id, in id order


@cache
def catalogue() -> Catalogue:
    raw = json.loads(
        resources.files("opscenter.attack").joinpath("attack-enterprise.json").read_text()
    )
    return Catalogue(
        version=raw["attack_version"],
        tactics=tuple(Tactic(**t) for t in sorted(raw["tactics"], key=lambda t: t["order"])),
        techniques={
            t["id"]: Technique(
                **{**t, "tactics": tuple(t["tactics"]), "platforms": tuple(t["platforms"])}
            )
            for t in raw["techniques"]
        },
    )


def technique(technique_id: str) -> Technique:
    found = catalogue().techniques.get(technique_id.upper())
    if found is None:
        raise NotFound(f"No ATT&CK technique {technique_id}")
    return found


def checked(ids: list[str]) -> list[str]:
    """Technique ids as given (upper-cased, each once, in order), every one in the
    catalogue; else UnknownTechnique (422) naming the first that is not."""
    known = catalogue().techniques
    out: list[str] = []
    for raw in ids:
        tid = raw.strip().upper()
        if tid not in known:
            raise UnknownTechnique(f"{raw!r} is not an ATT&CK Enterprise technique id")
        if tid not in out:
            out.append(tid)
    return out
