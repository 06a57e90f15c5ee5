from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from opscenter.core.schemas import InputModel, Name, NoControlChars, OutputModel, UtcDatetime
from opscenter.sso.oidc import valid_issuer
from opscenter.users.schemas import RoleName, TeamName

Slug = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
]
IssuerUrl = Annotated[str, StringConstraints(min_length=8, max_length=500), NoControlChars]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=255), NoControlChars]
ClientSecret = Annotated[str, StringConstraints(min_length=1, max_length=1000), NoControlChars]
Scopes = Annotated[
    str, StringConstraints(min_length=6, max_length=500, pattern=r"^[\x21\x23-\x5b\x5d-\x7e ]+$")
]
# A claim name, or a dotted path into nested claims (Keycloak's `realm_access.roles`).
ClaimPath = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_:/-]+(\.[A-Za-z0-9_:/-]+)*$"
    ),
]
ClaimValue = Annotated[str, StringConstraints(min_length=1, max_length=200), NoControlChars]


def _issuer(value: str) -> str:
    if not valid_issuer(value):
        raise ValueError(
            "must be the provider's https:// issuer URL (plain http only on a loopback host), "
            "without query or fragment"
        )
    return value


def _scopes(value: str) -> str:
    if "openid" not in value.split():
        raise ValueError("must include 'openid'")
    return " ".join(value.split())


class MappingRule(InputModel):
    """When the claim (the provider's groups claim unless named) equals `value`, or is a
    list holding it, the user gets `role` (the first matching rule with a role wins) and
    joins `teams` (of every matching rule)."""

    claim: ClaimPath | None = Field(None, description="Defaults to the provider's groups_claim")
    value: ClaimValue
    role: RoleName | None = None
    teams: list[TeamName] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _gives_something(self) -> MappingRule:
        if self.role is None and not self.teams:
            raise ValueError("a rule gives a role, teams, or both")
        return self


class ProviderBase(InputModel):
    name: Name | None = None
    issuer: IssuerUrl | None = None
    client_id: ClientId | None = None
    client_secret: ClientSecret | None = Field(
        None, description="Stored encrypted, never returned; leave out to keep the current one"
    )
    scopes: Scopes | None = None
    enabled: bool | None = None
    create_users: bool | None = Field(None, description="Create accounts on first login")
    match_verified_email: bool | None = Field(
        None, description="Link a first login to the local user with the same verified e-mail"
    )
    groups_claim: ClaimPath | None = None
    rules: list[MappingRule] | None = Field(None, max_length=100)
    default_role: RoleName | None = Field(
        None, description="The role when no rule gives one; none: such users are refused"
    )

    @field_validator("issuer")
    @classmethod
    def _check_issuer(cls, value: str | None) -> str | None:
        return None if value is None else _issuer(value)

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: str | None) -> str | None:
        return None if value is None else _scopes(value)


class ProviderCreate(ProviderBase):
    slug: Slug = Field(description="In the login and callback URLs: /sso/<slug>/login")
    name: Name
    issuer: IssuerUrl
    client_id: ClientId


class ProviderUpdate(ProviderBase):
    """Fields left out keep their value; `clear_client_secret` makes it a public client."""

    clear_client_secret: bool = False


class ProviderOut(OutputModel):
    id: int
    slug: str
    name: str
    issuer: str
    client_id: str
    has_client_secret: bool
    scopes: str
    enabled: bool
    create_users: bool
    match_verified_email: bool
    groups_claim: str
    rules: list[MappingRule]
    default_role: str | None
    login_url: str = Field(description="Where the login page's button leads")
    redirect_uri: str = Field(description="Register this callback URL at the provider")
    created_at: UtcDatetime
    updated_at: UtcDatetime


class LoginOption(OutputModel):
    name: str
    login_url: str


class LogoutOut(OutputModel):
    end_session_url: str | None = Field(
        description="The provider's logout page to visit next, when the session came from "
        "single sign-on and the provider offers one"
    )
