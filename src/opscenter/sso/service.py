"""Single sign-on: providers an admin configures, and the login through one of them.

A login is two requests. `begin_login` asks the provider's discovery document for its
authorization endpoint, keeps a login row (state hashed, nonce, PKCE verifier encrypted)
and sends the browser there. `finish_login` claims that row once (a replayed state finds
it used), exchanges the code with the verifier, checks the id_token, maps its claims to a
role and teams by the provider's rules, finds or creates the user, and starts the same
session a password login starts. Every outcome, and every mapping decision, is audited.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.audit import service as audit
from opscenter.auth import service as auth
from opscenter.auth.deps import load_user
from opscenter.config import Settings
from opscenter.core.clock import as_utc, utcnow
from opscenter.core.db import release
from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.principal import Principal
from opscenter.core.security import InvalidToken, Keyring, hash_password, sha256_hex
from opscenter.models import Role, SsoIdentity, SsoLogin, SsoProvider, Team, User
from opscenter.sso import mapping, oidc
from opscenter.sso.schemas import (
    LoginOption,
    MappingRule,
    ProviderCreate,
    ProviderOut,
    ProviderUpdate,
)
from opscenter.users.service import DEFAULT_TEAM

#: Discovery documents and key sets of this process, shared by its requests.
DISCOVERY = oidc.Discovery()
#: How long a login may take at the provider before its state stops working.
LOGIN_TTL = timedelta(minutes=10)
STATE_COOKIE = "sso_state"

#: Why a login was refused, in words for the person who tried, and what to do next.
REFUSALS: dict[str, str] = {
    "UNKNOWN_PROVIDER": "This single sign-on provider does not exist or is switched off. "
    "Log in with your local account, or ask an administrator.",
    "PROVIDER_UNAVAILABLE": "The identity provider could not be reached. Local accounts and "
    "API keys still work: log in with your password, or try again later.",
    "DISCOVERY_FAILED": "The identity provider's configuration could not be used. "
    "An administrator should check the provider's issuer URL.",
    "STATE_INVALID": "This login link is unknown or belongs to another provider. "
    "Start again from the login page.",
    "STATE_REPLAYED": "This login answer was already used once and cannot be used again. "
    "Start again from the login page.",
    "STATE_EXPIRED": "The login took too long. Start again from the login page.",
    "STATE_MISMATCH": "This login was started in another browser. Start again from the login "
    "page in this browser.",
    "PROVIDER_ERROR": "The identity provider did not sign you in. Start again, or log in "
    "with your local account.",
    "TOKEN_REFUSED": "The identity provider refused to complete the login. Start again from "
    "the login page.",
    "ID_TOKEN_INVALID": "The identity provider's answer failed our checks, so it was not "
    "trusted. An administrator should look at the audit trail.",
    "NO_ROLE": "You were recognised, but no mapping rule gives you a role here. Ask an "
    "administrator to add a rule for one of your groups.",
    "NOT_REGISTERED": "You were recognised, but this provider may not create accounts and "
    "none is linked to you. Ask an administrator to create your account.",
    "EMAIL_IN_USE": "A local account already uses your e-mail address, and the provider did "
    "not confirm the address is verified. Ask an administrator to link the accounts.",
    "EMAIL_MISSING": "The identity provider sent no e-mail address. An administrator should "
    "add the 'email' scope to the provider.",
    "DISABLED": "Your account here is disabled. Ask an administrator.",
}


class Refused(Exception):
    """A login that does not go through; `message` says why, for the person."""

    def __init__(self, code: str, message: str | None = None, *, login_id: int | None = None):
        super().__init__(code)
        self.code = code
        self.message = message or REFUSALS[code]
        self.login_id = login_id


# -- providers ----------------------------------------------------------------------------


def secret_context(provider_id: int) -> str:
    return f"sso_providers.client_secret:{provider_id}"


def provider_out(provider: SsoProvider, base_url: str) -> ProviderOut:
    base = base_url.rstrip("/")
    return ProviderOut(
        id=provider.id,
        slug=provider.slug,
        name=provider.name,
        issuer=provider.issuer,
        client_id=provider.client_id,
        has_client_secret=provider.client_secret_enc is not None,
        scopes=provider.scopes,
        enabled=provider.enabled,
        create_users=provider.create_users,
        match_verified_email=provider.match_verified_email,
        groups_claim=provider.groups_claim,
        rules=[MappingRule.model_validate(r) for r in provider.rules],
        default_role=provider.default_role,
        login_url=f"/sso/{provider.slug}/login",
        redirect_uri=f"{base}/sso/{provider.slug}/callback",
        created_at=provider.created_at,
        updated_at=provider.updated_at,
    )


def providers_query() -> Select[SsoProvider]:
    return select(SsoProvider).order_by(SsoProvider.name, SsoProvider.id)


async def get_provider(session: AsyncSession, provider_id: int) -> SsoProvider:
    provider = await session.get(SsoProvider, provider_id)
    if provider is None:
        raise NotFound("SSO provider", provider_id)
    return provider


async def _check_references(
    session: AsyncSession, rules: Sequence[MappingRule], default_role: str | None
) -> None:
    """Every role and team a rule names exists now (a later deletion is audited at login)."""
    roles = {r.role for r in rules if r.role} | ({default_role} if default_role else set())
    teams = {t for r in rules for t in r.teams}
    known_roles = set((await session.scalars(select(Role.name).where(Role.name.in_(roles)))).all())
    if missing := sorted(roles - known_roles):
        raise InvalidInput(
            f"Unknown role(s) {', '.join(missing)}; see GET /api/v1/users/roles/list"
        )
    known_teams = set((await session.scalars(select(Team.name).where(Team.name.in_(teams)))).all())
    if missing := sorted(teams - known_teams):
        raise InvalidInput(f"Unknown team(s) {', '.join(missing)}; create them first")


async def create_provider(
    session: AsyncSession, keyring: Keyring, data: ProviderCreate
) -> SsoProvider:
    if await session.scalar(select(SsoProvider.id).where(SsoProvider.slug == data.slug)):
        raise Conflict(f"An SSO provider with the slug '{data.slug}' already exists")
    rules = data.rules or []
    await _check_references(session, rules, data.default_role)
    provider = SsoProvider(
        slug=data.slug,
        name=data.name,
        issuer=data.issuer,
        client_id=data.client_id,
        scopes=data.scopes or "openid email profile",
        enabled=True if data.enabled is None else data.enabled,
        create_users=True if data.create_users is None else data.create_users,
        match_verified_email=True
        if data.match_verified_email is None
        else data.match_verified_email,
        groups_claim=data.groups_claim or "groups",
        rules=[r.model_dump() for r in rules],
        default_role=data.default_role,
    )
    session.add(provider)
    await session.flush()
    if data.client_secret:
        provider.client_secret_enc = keyring.encrypt_secret(
            data.client_secret, context=secret_context(provider.id)
        )
        await session.flush()
    return provider


async def update_provider(
    session: AsyncSession, keyring: Keyring, provider_id: int, data: ProviderUpdate
) -> tuple[SsoProvider, list[str]]:
    """The provider and the names of the fields that changed (for the audit trail)."""
    provider = await get_provider(session, provider_id)
    given = data.model_dump(exclude_unset=True, exclude={"client_secret", "clear_client_secret"})
    if data.client_secret and data.clear_client_secret:
        raise InvalidInput("Give client_secret or clear_client_secret, not both")
    rules = (
        data.rules
        if data.rules is not None
        else [MappingRule.model_validate(r) for r in provider.rules]
    )
    await _check_references(session, rules, given.get("default_role", provider.default_role))
    changed = []
    for name, value in given.items():
        if value is None and name != "default_role":
            continue  # null means "keep" for the fields that cannot be empty
        if name == "rules":
            value = [r.model_dump() for r in rules]
        if getattr(provider, name) != value:
            setattr(provider, name, value)
            changed.append(name)
    if data.client_secret:
        provider.client_secret_enc = keyring.encrypt_secret(
            data.client_secret, context=secret_context(provider.id)
        )
        changed.append("client_secret")
    elif data.clear_client_secret and provider.client_secret_enc is not None:
        provider.client_secret_enc = None
        changed.append("client_secret")
    if "issuer" in changed:
        DISCOVERY.forget(provider.issuer)
    await session.flush()
    return provider, changed


async def delete_provider(session: AsyncSession, provider_id: int) -> SsoProvider:
    provider = await get_provider(session, provider_id)
    await session.delete(provider)
    await session.flush()
    return provider


async def login_options(session: AsyncSession, next_path: str = "/") -> list[LoginOption]:
    """The enabled providers' login links (from the database only: a provider that is
    down never keeps the login page from showing)."""
    rows = (await session.scalars(providers_query().where(SsoProvider.enabled))).all()
    query = "" if next_path == "/" else f"?{urlencode({'next': next_path})}"
    return [LoginOption(name=p.name, login_url=f"/sso/{p.slug}/login{query}") for p in rows]


def client_of(keyring: Keyring, provider: SsoProvider) -> oidc.Client:
    secret = None
    if provider.client_secret_enc is not None:
        secret = keyring.decrypt_secret(
            provider.client_secret_enc, context=secret_context(provider.id)
        )
    return oidc.Client(provider.issuer, provider.client_id, secret, provider.scopes)


# -- login --------------------------------------------------------------------------------


def safe_next(path: str | None) -> str:
    """Only a path of this site: "//host" and "/\\host" would leave it."""
    if not path or not re.match(r"^/(?![/\\])", path) or len(path) > 1000:
        return "/"
    return path


async def _enabled_provider(session: AsyncSession, slug: str) -> SsoProvider:
    provider = await session.scalar(
        select(SsoProvider).where(SsoProvider.slug == slug, SsoProvider.enabled)
    )
    if provider is None:
        raise Refused("UNKNOWN_PROVIDER")
    return provider


async def begin_login(
    session: AsyncSession,
    keyring: Keyring,
    settings: Settings,
    slug: str,
    *,
    redirect_uri: str,
    next_path: str,
) -> tuple[str, str]:
    """The provider's authorization URL for a new login, and its state (for the cookie)."""
    provider = await _enabled_provider(session, slug)
    client = client_of(keyring, provider)
    provider_id = provider.id
    state, nonce, verifier = oidc.new_request_secrets()
    await release(session)  # discovery calls out
    try:
        url = await oidc.authorization_url(
            DISCOVERY, client, redirect_uri, state=state, nonce=nonce, verifier=verifier
        )
    except oidc.OidcError as err:
        raise Refused(err.code, f"{REFUSALS[err.code]} ({err.message})") from None
    now = utcnow()
    # Login rows outlive the sessions they started (logout reads them), then go.
    kept = timedelta(hours=settings.jwt_expiration_hours) + LOGIN_TTL
    await session.execute(delete(SsoLogin).where(SsoLogin.created_at < now - kept))
    state_hash = sha256_hex(state)
    session.add(
        SsoLogin(
            provider_id=provider_id,
            state_hash=state_hash,
            nonce=nonce,
            verifier_enc=keyring.encrypt_secret(verifier, context=f"sso_logins:{state_hash}"),
            redirect_uri=redirect_uri,
            next_path=safe_next(next_path),
            created_at=now,
            expires_at=now + LOGIN_TTL,
        )
    )
    await session.flush()
    return url, state


@dataclass(frozen=True)
class LoggedIn:
    issued: auth.IssuedSession
    next_path: str
    created: bool


@dataclass(frozen=True)
class Callback:
    slug: str
    state: str | None
    cookie_state: str | None
    code: str | None
    error: str | None


async def finish_login(
    session: AsyncSession,
    keyring: Keyring,
    settings: Settings,
    answer: Callback,
    origin: audit.Origin,
) -> LoggedIn:
    """The provider's answer to a login: a session, or `Refused`, after which the caller
    calls `record_refusal` and commits: what was written before it (the state claimed, the
    mapping decision audited) is meant to stay."""
    provider = await _enabled_provider(session, answer.slug)
    if not answer.state:
        raise Refused("STATE_INVALID")
    login = await session.scalar(
        select(SsoLogin).where(
            SsoLogin.state_hash == sha256_hex(answer.state), SsoLogin.provider_id == provider.id
        )
    )
    if login is None:
        raise Refused("STATE_INVALID")
    # Claim the state: of two requests presenting it, exactly one gets through.
    claimed = await session.execute(
        update(SsoLogin)
        .where(SsoLogin.id == login.id, SsoLogin.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise Refused("STATE_REPLAYED")
    if as_utc(login.expires_at) <= utcnow():
        raise Refused("STATE_EXPIRED", login_id=login.id)
    if not answer.cookie_state or not hmac.compare_digest(answer.cookie_state, answer.state):
        raise Refused("STATE_MISMATCH", login_id=login.id)
    if answer.error:
        raise Refused(
            "PROVIDER_ERROR",
            f"{REFUSALS['PROVIDER_ERROR']} (the provider answered '{answer.error[:100]}')",
            login_id=login.id,
        )
    if not answer.code:
        raise Refused("PROVIDER_ERROR", login_id=login.id)
    client = client_of(keyring, provider)
    try:
        verifier = keyring.decrypt_secret(
            login.verifier_enc, context=f"sso_logins:{login.state_hash}"
        )
    except InvalidToken:
        raise Refused("STATE_INVALID", login_id=login.id) from None
    await release(session)  # the state stays claimed; the provider is called next
    try:
        token = await oidc.exchange_code(
            DISCOVERY, client, login.redirect_uri, code=answer.code, verifier=verifier
        )
        claims = await oidc.verified_claims(
            DISCOVERY,
            client,
            token["id_token"],
            nonce=login.nonce,
            access_token=token.get("access_token"),
        )
    except oidc.OidcError as err:
        raise Refused(
            err.code, f"{REFUSALS[err.code]} ({err.message})", login_id=login.id
        ) from None
    # Again: it may have changed, or gone, while the provider was asked.
    current = await session.get(SsoProvider, provider.id, populate_existing=True)
    if current is None or not current.enabled:
        raise Refused("UNKNOWN_PROVIDER", login_id=login.id)
    provider = current
    user, created = await _admit(session, provider, claims, login.id, origin)
    issued = await auth.start_session(session, keyring, settings, user)
    row = await session.get(SsoLogin, login.id)
    assert row is not None
    row.outcome, row.user_id, row.family_id = "success", user.id, issued.family_id
    row.id_token_enc = keyring.encrypt_secret(
        token["id_token"], context=f"sso_logins:{login.state_hash}"
    )
    await audit.record(
        session,
        action="auth.sso_login",
        user_id=user.id,
        username=user.username,
        resource_type="user",
        resource_id=user.id,
        details={
            "provider": provider.slug,
            "subject": str(claims["sub"])[:255],
            "created": created,
            "session": issued.family_id,
        },
        origin=origin,
    )
    return LoggedIn(issued, login.next_path, created)


async def _admit(
    session: AsyncSession,
    provider: SsoProvider,
    claims: dict[str, Any],
    login_id: int,
    origin: audit.Origin,
) -> tuple[User, bool]:
    """Map the claims to a role and teams (audited), then find, link or create the user."""
    subject = str(claims["sub"])[:255]
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    decision = mapping.decide(
        provider.rules,
        claims,
        groups_claim=provider.groups_claim,
        default_role=provider.default_role,
    )
    role = (
        await session.scalar(select(Role).where(Role.name == decision.role))
        if decision.role
        else None
    )
    teams = list((await session.scalars(select(Team).where(Team.name.in_(decision.teams)))).all())
    groups = mapping.claim_at(claims, provider.groups_claim)
    await audit.record(
        session,
        action="sso.mapping",
        username=(email or subject)[:64],
        outcome="success" if role else "denied",
        resource_type="sso_provider",
        resource_id=provider.id,
        details={
            "provider": provider.slug,
            "subject": subject,
            "groups": groups[:50] if isinstance(groups, list) else groups,
            "matched_rules": [i + 1 for i in decision.matched],
            "role": decision.role,
            "role_from": decision.role_from,
            "teams": [t.name for t in teams],
            "missing": sorted(
                ({decision.role} if decision.role and role is None else set())
                | (set(decision.teams) - {t.name for t in teams})
            ),
        },
        origin=origin,
    )
    await session.flush()
    if role is None:
        shown = (
            ", ".join(map(str, groups[:20])) if isinstance(groups, list) else str(groups or "none")
        )
        raise Refused(
            "NO_ROLE",
            f"{REFUSALS['NO_ROLE']} The groups {provider.name} sent: {shown}.",
            login_id=login_id,
        )
    identity = await session.scalar(
        select(SsoIdentity).where(
            SsoIdentity.provider_id == provider.id, SsoIdentity.subject == subject
        )
    )
    created = False
    if identity is not None:
        user = await load_user(session, identity.user_id)
        assert user is not None
    else:
        user, created = await _link_or_create(session, provider, claims, email, role, login_id)
    if not user.is_active:
        raise Refused("DISABLED", login_id=login_id)
    if identity is None:
        identity = SsoIdentity(provider_id=provider.id, subject=subject, user_id=user.id)
        session.add(identity)
    # The provider is the source of truth for an SSO user's role and (named) teams, except
    # that it never demotes the last active admin: that would lock everyone out.
    if user.role_id != role.id and not await _last_admin(session, user):
        user.role = role
        user.session_version += 1  # sessions with the old role end, as on a role change
    if decision.teams and {t.id for t in user.teams} != {t.id for t in teams}:
        user.teams = teams
    identity.email = email
    identity.last_login_at = utcnow()
    await session.flush()
    refreshed = await load_user(session, user.id)
    assert refreshed is not None
    return refreshed, created


async def _last_admin(session: AsyncSession, user: User) -> bool:
    if user.role.name != "admin" or not user.is_active:
        return False
    admins = await session.scalar(
        select(func.count(User.id))
        .join(User.role)
        .where(Role.name == "admin", User.is_active.is_(True))
    )
    return admins == 1


async def _link_or_create(
    session: AsyncSession,
    provider: SsoProvider,
    claims: dict[str, Any],
    email: str | None,
    role: Role,
    login_id: int,
) -> tuple[User, bool]:
    if email is None:
        raise Refused("EMAIL_MISSING", login_id=login_id)
    existing = await session.scalar(
        select(User.id).where(func.lower(User.email) == email.lower()).limit(1)
    )
    if existing is not None:
        if claims.get("email_verified") is True and provider.match_verified_email:
            user = await load_user(session, existing)
            assert user is not None
            return user, False
        raise Refused("EMAIL_IN_USE", login_id=login_id)
    if not provider.create_users:
        raise Refused("NOT_REGISTERED", login_id=login_id)
    default_team = await session.scalar(select(Team).where(Team.name == DEFAULT_TEAM))
    user = User(
        username=await _free_username(session, claims, email),
        email=email.lower()[:254],
        full_name=str(claims.get("name") or "")[:200],
        # Nobody knows this password: the account logs in through its provider only.
        password_hash=await asyncio.to_thread(hash_password, secrets.token_urlsafe(32)),
        role=role,
        teams=[default_team] if default_team else [],
    )
    session.add(user)
    await session.flush()
    return user, True


async def _free_username(session: AsyncSession, claims: dict[str, Any], email: str) -> str:
    wanted = claims.get("preferred_username")
    base = wanted if isinstance(wanted, str) and wanted else email.split("@", 1)[0]
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("._-")[:56] or "sso-user"
    if len(base) < 3:
        base = f"{base}-sso"
    for candidate in [base, *(f"{base}-{n}" for n in range(2, 10))]:
        taken = await session.scalar(
            select(User.id).where(func.lower(User.username) == candidate.lower())
        )
        if taken is None:
            return candidate
    return f"{base}-{secrets.token_hex(3)}"


async def record_refusal(
    session: AsyncSession, slug: str, refused: Refused, origin: audit.Origin
) -> None:
    """Keep why a login was refused: on its login row (for the refusal page) and in the
    audit trail."""
    if refused.login_id is not None:
        row = await session.get(SsoLogin, refused.login_id)
        if row is not None and row.outcome is None:
            row.outcome, row.message = refused.code, refused.message[:1000]
    await audit.record(
        session,
        action="auth.sso_refused",
        outcome="denied",
        resource_type="sso_provider",
        resource_id=await session.scalar(select(SsoProvider.id).where(SsoProvider.slug == slug)),
        details={"provider": slug[:64], "reason": refused.code, "message": refused.message[:500]},
        origin=origin,
    )


async def refusal(session: AsyncSession, state: str | None, code: str | None) -> tuple[str, str]:
    """What the refusal page says: the code and the words of this browser's last login
    (its state cookie), or the generic words of a known code."""
    if state:
        row = await session.scalar(select(SsoLogin).where(SsoLogin.state_hash == sha256_hex(state)))
        if row is not None and row.outcome not in (None, "success"):
            return row.outcome or "", row.message or REFUSALS.get(row.outcome or "", "")
    if code in REFUSALS:
        return code, REFUSALS[code]
    return "UNKNOWN", "No refused login is known for this browser. Start again from the login page."


# -- logout -------------------------------------------------------------------------------


async def logout(
    session: AsyncSession, keyring: Keyring, principal: Principal, *, post_logout_redirect_uri: str
) -> str | None:
    """End the caller's session here; the provider's logout URL when it came from single
    sign-on and the provider offers one (None when it cannot be reached: the local
    session has ended anyway)."""
    if principal.session_id is None:
        return None
    await auth.revoke_family(session, principal.session_id)
    login = await session.scalar(
        select(SsoLogin)
        .where(SsoLogin.family_id == principal.session_id, SsoLogin.outcome == "success")
        .limit(1)
    )
    provider = await session.get(SsoProvider, login.provider_id) if login else None
    if login is None or provider is None:
        return None
    client = client_of(keyring, provider)
    hint = None
    if login.id_token_enc:
        hint = keyring.decrypt_secret(login.id_token_enc, context=f"sso_logins:{login.state_hash}")
    await release(session)  # the revocation is committed before the provider is asked
    try:
        return await oidc.end_session_url(
            DISCOVERY, client, id_token_hint=hint, post_logout_redirect_uri=post_logout_redirect_uri
        )
    except oidc.OidcError:
        return None
