"""The sidebar, built from the links the domains register (`registry.nav(...)`).

The shell's own link (the dashboard) is here; every other link is in its domain's
`plugin.py`. A group shows only when the user may open at least one of its links."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from opscenter.core.pages import NavLink
from opscenter.core.principal import Principal
from opscenter.domains import registry

DASHBOARD = NavLink("Backups", "Dashboard", "/", "read:backups", rank=0)


@dataclass(frozen=True)
class Group:
    label: str
    links: tuple[NavLink, ...]


@cache
def sidebar() -> tuple[Group, ...]:
    """Every group with its links, ordered by rank (a group by its first link's)."""
    links = sorted((DASHBOARD, *registry().nav_links), key=lambda link: link.rank)
    labels = dict.fromkeys(link.group for link in links)
    return tuple(
        Group(label, tuple(link for link in links if link.group == label)) for label in labels
    )


def nav_for(principal: Principal) -> list[Group]:
    """The groups and links this user may open, in order; empty groups left out."""
    groups = (
        Group(g.label, tuple(link for link in g.links if principal.can(link.permission)))
        for g in sidebar()
    )
    return [g for g in groups if g.links]
