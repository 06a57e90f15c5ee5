from __future__ import annotations

from typing import Annotated

from pydantic import EmailStr, Field, StringConstraints, field_validator

from opscenter.core.schemas import Id, InputModel, NoControlChars, OutputModel, UtcDatetime

Username = Annotated[
    str, StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Password = Annotated[str, StringConstraints(min_length=12, max_length=256)]
RoleName = Annotated[
    str, StringConstraints(min_length=2, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
]
# Sized to their columns (teams.name, teams/roles.description): longer is a 422, not a
# database error.
TeamName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), NoControlChars
]
Description = Annotated[str, StringConstraints(max_length=500), NoControlChars]


class TeamRef(OutputModel):
    id: int
    name: str


class UserOut(OutputModel):
    id: int
    username: str
    email: str
    full_name: str
    role: str
    permissions: list[str]
    teams: list[TeamRef]
    team: str | None = Field(description="The first team's name (seed 004's single `team`)")
    is_active: bool
    last_login: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    # Seed 004's front end reads these names.
    name: str = Field(description="Seed 004's display name: the full name, else the username")
    createdAt: UtcDatetime = Field(description="Seed 004's name of `created_at`")
    lastLogin: UtcDatetime | None = Field(description="Seed 004's name of `last_login`")
    avatar: str | None = Field(None, description="Seed 004's avatar URL; none is kept")


class UserCreate(InputModel):
    username: Username
    email: EmailStr
    password: Password
    full_name: Annotated[str, StringConstraints(max_length=200)] = ""
    role: RoleName = "viewer"
    team_ids: list[Id] | None = Field(None, max_length=100)
    is_active: bool = True


class UserUpdate(InputModel):
    email: EmailStr | None = None
    password: Password | None = None
    full_name: Annotated[str, StringConstraints(max_length=200)] | None = None
    role: RoleName | None = None
    team_ids: list[Id] | None = Field(None, max_length=100)
    is_active: bool | None = None


class TeamOut(OutputModel):
    id: int
    name: str
    description: str
    members: list[TeamMemberOut]
    created_at: UtcDatetime


class TeamMemberOut(OutputModel):
    id: int
    username: str
    full_name: str


class TeamCreate(InputModel):
    name: TeamName
    description: Description = ""
    member_ids: list[Id] = Field(default_factory=list, max_length=1000)


class TeamMembersUpdate(InputModel):
    member_ids: list[Id] = Field(max_length=1000)

    @field_validator("member_ids")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


class RoleOut(OutputModel):
    id: int
    name: str
    description: str
    permissions: list[str]
    is_builtin: bool
    user_count: int = 0


class RoleCreate(InputModel):
    name: RoleName
    description: Description = ""
    permissions: list[str] = Field(min_length=1, max_length=200)


class PermissionOut(OutputModel):
    name: str
    description: str
