"""Who is calling: a user through a session or token, or an API key acting for its owner."""

from __future__ import annotations

from dataclasses import dataclass

ALL_TEAMS = "scope:all-teams"


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    permissions: frozenset[str]
    team_ids: frozenset[int]
    api_key_id: int | None = None
    session_id: str | None = None
    via_cookie: bool = False
    #: The installation itself (CLI, scheduler, automatic verification): may do anything.
    is_system: bool = False

    def can(self, permission: str) -> bool:
        return self.is_system or permission in self.permissions

    @property
    def sees_all_teams(self) -> bool:
        return self.is_system or ALL_TEAMS in self.permissions


SYSTEM = Principal(
    user_id=0,
    username="system",
    role="admin",
    permissions=frozenset({ALL_TEAMS}),
    team_ids=frozenset(),
    is_system=True,
)
