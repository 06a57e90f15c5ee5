"""The ATT&CK Enterprise catalogue, seed 004's `/secops/mitre/tactics` and `techniques`:
read-only reference data, the same for every team."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from opscenter.attack.catalogue import catalogue, technique
from opscenter.attack.schemas import TacticOut, TechniqueOut, tactic_out, technique_out
from opscenter.auth.deps import require
from opscenter.core.errors import NotFound, responses
from opscenter.core.pagination import Page, Paging
from opscenter.core.principal import Principal

router = APIRouter(prefix="/secops/mitre", tags=["Security"])
ReadSecurity = Annotated[Principal, Depends(require("read:security"))]


@router.get("/tactics", response_model=Page[TacticOut])
async def list_tactics(principal: ReadSecurity) -> Page[TacticOut]:
    """The 14 Enterprise tactics in the matrix's order, each with its number of
    techniques and sub-techniques."""
    known = catalogue()
    out = []
    for tactic in known.tactics:
        under = [t for t in known.techniques.values() if tactic.shortname in t.tactics]
        subs = sum(t.is_subtechnique for t in under)
        out.append(tactic_out(tactic, len(under) - subs, subs))
    return Page.whole(out)


@router.get("/techniques", response_model=Page[TechniqueOut])
async def list_techniques(
    principal: ReadSecurity,
    paging: Paging,
    tactic: Annotated[
        str | None, Query(max_length=64, description="A tactic's shortname or id (TA0002)")
    ] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Words in the id, name or description")
    ] = None,
    include_subtechniques: bool = False,
) -> Page[TechniqueOut]:
    """Techniques by id (revoked and deprecated ones are not in the catalogue); with
    `include_subtechniques=true` the sub-techniques too."""
    known = catalogue()
    shortname = None
    if tactic:
        found = next(
            (t for t in known.tactics if tactic.lower() in (t.shortname, t.id.lower())), None
        )
        if found is None:
            raise NotFound(f"No ATT&CK tactic {tactic}")
        shortname = found.shortname
    words = (q or "").lower().split()
    chosen = [
        t
        for t in known.techniques.values()
        if (include_subtechniques or not t.is_subtechnique)
        and (shortname is None or shortname in t.tactics)
        and all(w in f"{t.id} {t.name} {t.description}".lower() for w in words)
    ]
    page = chosen[paging.offset : paging.offset + paging.limit]
    return Page.of([technique_out(t) for t in page], len(chosen), paging)


@router.get(
    "/techniques/{technique_id}", response_model=TechniqueOut, responses=responses(NotFound)
)
async def get_technique(
    principal: ReadSecurity,
    technique_id: Annotated[str, Path(max_length=16)],
) -> TechniqueOut:
    return technique_out(technique(technique_id))
