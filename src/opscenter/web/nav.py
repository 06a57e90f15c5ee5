"""The sidebar as data: groups of links, each with the permission it needs.

A new area adds its link (and, for a new group, its group) here and nowhere else; a group
shows only when the user may open at least one of its links."""

from __future__ import annotations

from dataclasses import dataclass

from opscenter.core.principal import Principal


@dataclass(frozen=True)
class Link:
    href: str
    label: str
    permission: str
    badge_id: str | None = None  # a counter that app.js fills in (unread notifications)

    def is_current(self, path: str) -> bool:
        """This page or one under it (`/backups/7/restore` is in Backups)."""
        return path == self.href or (self.href != "/" and path.startswith(f"{self.href}/"))


@dataclass(frozen=True)
class Group:
    label: str
    links: tuple[Link, ...]


NAV: tuple[Group, ...] = (
    Group(
        "Backups",
        (
            Link("/", "Dashboard", "read:backups"),
            Link("/backups", "Backups", "read:backups"),
            Link("/schedules", "Schedules", "read:schedules"),
            Link("/verification", "Verification", "read:verification"),
            Link("/retention", "Retention", "read:retention"),
            Link("/storage", "Storage", "read:storage"),
        ),
    ),
    Group(
        "Operations",
        (
            Link("/servers", "Servers", "read:servers"),
            Link("/notifications", "Notifications", "read:notifications", "nav-unread"),
        ),
    ),
    Group("Security and compliance", (Link("/audit", "Audit log", "read:audit"),)),
    Group(
        "Administration",
        (
            Link("/users", "Users and teams", "read:users"),
            Link("/tokens", "API tokens", "read:tokens"),
        ),
    ),
)


def nav_for(principal: Principal) -> list[Group]:
    """The groups and links this user may open, in order; empty groups left out."""
    groups = (
        Group(g.label, tuple(link for link in g.links if principal.can(link.permission)))
        for g in NAV
    )
    return [g for g in groups if g.links]
