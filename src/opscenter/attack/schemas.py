"""Response models of the ATT&CK catalogue (seed 004 `/secops/mitre`)."""

from __future__ import annotations

from opscenter.attack.catalogue import Tactic, Technique
from opscenter.core.schemas import OutputModel


class TacticOut(OutputModel):
    id: str
    shortname: str
    name: str
    url: str
    order: int
    techniques: int
    subtechniques: int


class TechniqueOut(OutputModel):
    id: str
    name: str
    description: str
    tactics: list[str]
    is_subtechnique: bool
    parent_id: str | None
    platforms: list[str]
    url: str


def tactic_out(tactic: Tactic, techniques: int, subtechniques: int) -> TacticOut:
    return TacticOut(
        id=tactic.id,
        shortname=tactic.shortname,
        name=tactic.name,
        url=tactic.url,
        order=tactic.order,
        techniques=techniques,
        subtechniques=subtechniques,
    )


def technique_out(t: Technique) -> TechniqueOut:
    return TechniqueOut(
        id=t.id,
        name=t.name,
        description=t.description,
        tactics=list(t.tactics),
        is_subtechnique=t.is_subtechnique,
        parent_id=t.parent_id,
        platforms=list(t.platforms),
        url=t.url,
    )
