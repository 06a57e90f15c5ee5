"""From a provider's claims to a role and teams, by the admin's rules: pure, so the
decision can be shown and audited exactly as it was made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Decision:
    role: str | None
    teams: list[str]
    matched: list[int] = field(default_factory=list)  # indexes of the rules that matched
    role_from: str = "none"  # "rule <n>", "default", "none"


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (`realm_access.roles`)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _holds(value: Any, wanted: str) -> bool:
    if isinstance(value, str):
        return value == wanted
    if isinstance(value, list):
        return any(isinstance(item, str) and item == wanted for item in value)
    if isinstance(value, bool | int):
        return str(value).lower() == wanted.lower()
    return False


def decide(
    rules: Sequence[Mapping[str, Any]],
    claims: Mapping[str, Any],
    *,
    groups_claim: str,
    default_role: str | None,
) -> Decision:
    role: str | None = None
    role_from = "none"
    teams: list[str] = []
    matched: list[int] = []
    for index, rule in enumerate(rules):
        if not _holds(claim_at(claims, rule.get("claim") or groups_claim), rule["value"]):
            continue
        matched.append(index)
        if role is None and rule.get("role"):
            role, role_from = rule["role"], f"rule {index + 1}"
        teams += [t for t in rule.get("teams", []) if t not in teams]
    if role is None and default_role:
        role, role_from = default_role, "default"
    return Decision(role, teams, matched, role_from)
