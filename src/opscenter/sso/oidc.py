"""The OpenID Connect relying party, through Authlib: discovery and JWKS (cached, the keys
fetched again when an id_token names a key id we do not know), the authorization request
with PKCE (S256), the code exchange, and the id_token checks (signature, iss, aud, exp,
iat, nonce, at_hash, azp). No database here: the service keeps state and users."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client.errors import OAuthError
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry, extract_compact

with warnings.catch_warnings():
    # Authlib would rather use the httpx2 fork; httpx, which this project pins, works alike.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

#: How long discovery documents and key sets are reused before being fetched again.
METADATA_TTL = 3600.0
#: An unknown key id fetches the key set again, but at most this often per key id, so a
#: stream of forged tokens cannot make us hammer the provider.
UNKNOWN_KID_RETRY = 60.0
TIMEOUT = httpx.Timeout(10.0)
#: Asymmetric signatures only: "none" and HMAC (keyed with the client secret) are refused.
SIGNING_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: Clock skew tolerated on exp, iat and nbf.
LEEWAY = 60


class OidcError(Exception):
    """A step of the protocol failed. `code` names it for people and the audit trail."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def valid_issuer(url: str) -> bool:
    """https, or plain http on a loopback host (a provider on this machine, as in tests)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.query or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")


@dataclass
class _Entry:
    metadata: dict[str, Any]
    fetched: float
    keys: dict[str, Any] | None = None
    keys_fetched: float = 0.0
    missed_kids: dict[str, float] = field(default_factory=dict)


class Discovery:
    """Discovery documents and key sets per issuer, shared by the requests of a process."""

    def __init__(self) -> None:
        # No lock: two requests that both find the cache cold fetch twice, harmlessly.
        self._entries: dict[str, _Entry] = {}

    def forget(self, issuer: str) -> None:
        self._entries.pop(issuer, None)

    async def metadata(self, issuer: str) -> dict[str, Any]:
        entry = self._entries.get(issuer)
        if entry is not None and time.monotonic() - entry.fetched < METADATA_TTL:
            return entry.metadata
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await _get_json(url, "discovery document")
        if document.get("issuer") != issuer:
            raise OidcError(
                "DISCOVERY_FAILED",
                f"The discovery document names the issuer {document.get('issuer')!r}, "
                f"not {issuer!r}: check the provider's issuer URL",
            )
        for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(needed), str):
                raise OidcError("DISCOVERY_FAILED", f"The discovery document lacks {needed}")
        self._entries[issuer] = _Entry(document, time.monotonic())
        return document

    async def keys(self, issuer: str, *, unknown_kid: str | None = None) -> KeySet:
        metadata = await self.metadata(issuer)
        entry = self._entries[issuer]
        now = time.monotonic()
        stale = entry.keys is None or now - entry.keys_fetched >= METADATA_TTL
        if unknown_kid is not None and now - entry.missed_kids.get(unknown_kid, -1e9) >= (
            UNKNOWN_KID_RETRY
        ):
            entry.missed_kids[unknown_kid] = now
            stale = True
        if stale:
            entry.keys = await _get_json(metadata["jwks_uri"], "key set (JWKS)")
            entry.keys_fetched = now
        assert entry.keys is not None
        try:
            return KeySet.import_key_set(entry.keys)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as err:
            raise OidcError(
                "DISCOVERY_FAILED", f"The provider's key set is unusable: {err}"
            ) from None


async def _get_json(url: str, what: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
            response = await client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as err:
        raise OidcError(
            "PROVIDER_UNAVAILABLE",
            f"The identity provider did not answer for its {what} ({type(err).__name__})",
        ) from None
    if response.status_code != 200:
        raise OidcError(
            "PROVIDER_UNAVAILABLE",
            f"The identity provider answered {response.status_code} for its {what}",
        )
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise OidcError("DISCOVERY_FAILED", f"The provider's {what} is not a JSON object")
    return data


@dataclass(frozen=True)
class Client:
    """One provider's client registration, as the service hands it over."""

    issuer: str
    client_id: str
    client_secret: str | None
    scopes: str

    def oauth(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self.client_secret else "none",
            timeout=TIMEOUT,
            follow_redirects=False,
        )


def new_request_secrets() -> tuple[str, str, str]:
    """state, nonce and PKCE code verifier (48 characters of [A-Za-z0-9])."""
    return generate_token(43), generate_token(32), generate_token(48)


async def authorization_url(
    discovery: Discovery,
    client: Client,
    redirect_uri: str,
    *,
    state: str,
    nonce: str,
    verifier: str,
) -> str:
    metadata = await discovery.metadata(client.issuer)
    async with client.oauth(redirect_uri) as oauth:
        url, _ = oauth.create_authorization_url(
            metadata["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier
        )
    return str(url)


async def exchange_code(
    discovery: Discovery, client: Client, redirect_uri: str, *, code: str, verifier: str
) -> dict[str, Any]:
    """The token response; an OAuth error (a wrong PKCE verifier is `invalid_grant`) or an
    unreachable provider is an OidcError."""
    metadata = await discovery.metadata(client.issuer)
    try:
        async with client.oauth(redirect_uri) as oauth:
            token = await oauth.fetch_token(
                metadata["token_endpoint"], code=code, code_verifier=verifier
            )
    except OAuthError as err:
        raise OidcError(
            "TOKEN_REFUSED",
            f"The identity provider refused the code exchange: {err.error}"
            + (f" ({err.description})" if err.description else ""),
        ) from None
    except httpx.HTTPError as err:
        raise OidcError(
            "PROVIDER_UNAVAILABLE",
            f"The identity provider did not answer the code exchange ({type(err).__name__})",
        ) from None
    if not isinstance(token.get("id_token"), str):
        raise OidcError(
            "ID_TOKEN_INVALID", "The provider sent no id_token: is 'openid' among the scopes?"
        )
    return dict(token)


async def verified_claims(
    discovery: Discovery,
    client: Client,
    id_token: str,
    *,
    nonce: str,
    access_token: str | None,
) -> dict[str, Any]:
    """The id_token's claims once its signature and every check of OIDC Core 3.1.3.7 pass."""
    metadata = await discovery.metadata(client.issuer)
    offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [a for a in offered if a in SIGNING_ALGORITHMS]
    registry = JWSRegistry(algorithms=algorithms)
    try:
        try:
            token = jwt.decode(id_token, await discovery.keys(client.issuer), registry=registry)
        except InvalidKeyIdError:
            kid = _kid_of(id_token)
            keys = await discovery.keys(client.issuer, unknown_kid=kid)
            token = jwt.decode(id_token, keys, registry=registry)
    except InvalidKeyIdError:
        raise OidcError(
            "ID_TOKEN_INVALID", "The id_token is signed with a key the provider does not publish"
        ) from None
    except BadSignatureError:
        raise OidcError("ID_TOKEN_INVALID", "The id_token's signature does not verify") from None
    except JoseError as err:
        raise OidcError("ID_TOKEN_INVALID", f"The id_token cannot be read ({err.error})") from None
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": client.issuer},
        "aud": {"essential": True, "value": client.client_id},
        "sub": {"essential": True},
    }
    params: dict[str, Any] = {"nonce": nonce, "client_id": client.client_id}
    if access_token:
        params["access_token"] = access_token
    claims = CodeIDToken(token.claims, token.header, options, params)
    try:
        claims.validate(leeway=LEEWAY)
    except ExpiredTokenError:
        raise OidcError("ID_TOKEN_INVALID", "The id_token has expired") from None
    except ClaimError as err:
        claim = getattr(err, "claim", None) or err.description
        raise OidcError("ID_TOKEN_INVALID", f"The id_token's '{claim}' claim is wrong") from None
    return dict(claims)


def _kid_of(id_token: str) -> str:
    try:
        return str(extract_compact(id_token.encode()).headers().get("kid", ""))
    except (JoseError, ValueError):  # an unreadable header is just "no kid"
        return ""


async def end_session_url(
    discovery: Discovery,
    client: Client,
    *,
    id_token_hint: str | None,
    post_logout_redirect_uri: str,
) -> str | None:
    """RP-initiated logout at the provider, when its discovery document offers it."""
    metadata = await discovery.metadata(client.issuer)
    if not isinstance(metadata.get("end_session_endpoint"), str):
        return None
    params = [
        ("client_id", client.client_id),
        ("post_logout_redirect_uri", post_logout_redirect_uri),
    ]
    if id_token_hint:
        params.append(("id_token_hint", id_token_hint))
    return str(add_params_to_uri(metadata["end_session_endpoint"], params))
