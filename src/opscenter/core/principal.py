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

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def sees_all_teams(self) -> bool:
        return ALL_TEAMS in self.permissions
