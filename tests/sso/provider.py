"""A real OpenID Connect provider on 127.0.0.1, built on Authlib's server side (the same
library as our client): discovery, JWKS, an authorization endpoint with a login form, a
token endpoint that enforces PKCE (S256) for every client, and an end-session endpoint.

Tests steer it: `users` it knows, `overrides` merged into the next id_tokens (a wrong
`iss`, `aud`, `nonce`, a past `exp`), `signing_key` (a key it does not publish signs a
forged token), `rotate()` (a new published key with a new key id)."""

from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from flask import Flask, jsonify, redirect, request
from joserfc.jwk import RSAKey
from werkzeug.serving import BaseWSGIServer, make_server


@dataclass
class Account:
    username: str
    password: str
    sub: str
    email: str | None
    email_verified: bool = True
    groups: list[str] = field(default_factory=list)
    name: str = ""


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str | None
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "email", "profile", "groups"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and client_secret == self.client_secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client_secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    account: Account
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


class StrictChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE for every client, confidential ones too, and only S256."""

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with code_challenge_method=S256 is required")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


def new_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


class OpenIdProvider:
    def __init__(self, *, with_end_session: bool = True) -> None:
        self.accounts: dict[str, Account] = {}
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, Code] = {}
        self.published: list[RSAKey] = [new_key("key-1")]
        self.signing_key = self.published[0]
        self.overrides: dict[str, Any] = {}
        self.logouts: list[dict[str, str]] = []
        self.jwks_fetches = 0
        self.with_end_session = with_end_session
        self.app = self._build()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- steering -----------------------------------------------------------------------
    def add_account(self, username: str, **fields: Any) -> Account:
        fields.setdefault("sub", f"sub-{username}")
        fields.setdefault("email", f"{username}@idp.example.com")
        account = Account(username, fields.pop("password", f"pw-{username}"), **fields)
        self.accounts[username] = account
        return account

    def add_client(self, client_id: str, secret: str | None, *redirect_uris: str) -> Client:
        client = Client(client_id, secret, list(redirect_uris))
        self.clients[client_id] = client
        return client

    def rotate(self, kid: str) -> None:
        """A new key signs from now on; the old one stays published."""
        self.signing_key = new_key(kid)
        self.published.append(self.signing_key)

    # -- the provider -------------------------------------------------------------------
    def _build(self) -> Flask:
        provider = self
        app = Flask("test-openid-provider")
        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": 300}

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                provider.codes[code] = Code(
                    code=code,
                    client_id=req.client.get_client_id(),
                    redirect_uri=req.payload.redirect_uri,
                    scope=req.scope or "",
                    account=req.user,
                    nonce=data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                item = provider.codes.get(code)
                return item if item and item.client_id == client.client_id else None

            def delete_authorization_code(self, item: Code) -> None:
                provider.codes.pop(item.code, None)

            def authenticate_user(self, item: Code) -> Account:
                return item.account

        class OpenID(OpenIDCode):  # type: ignore[misc]
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return provider.signing_key

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_encode_header(self, client: Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": str(provider.signing_key.kid)}

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                return {"iss": provider.issuer, "aud": [client.client_id]}

            def generate_user_info(self, user: Account, scope: str) -> UserInfo:
                info = UserInfo(sub=user.sub, name=user.name, preferred_username=user.username)
                if user.email is not None:
                    info.update(email=user.email, email_verified=user.email_verified)
                info["groups"] = user.groups
                info.update(provider.overrides)  # a misbehaving provider, on request
                return info

        server = AuthorizationServer(
            app,
            query_client=lambda cid: provider.clients.get(cid),
            save_token=lambda token, req: None,
        )
        server.register_grant(CodeGrant, [OpenID(require_nonce=True), StrictChallenge()])

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            document = {
                "issuer": provider.issuer,
                "authorization_endpoint": f"{provider.issuer}/authorize",
                "token_endpoint": f"{provider.issuer}/token",
                "jwks_uri": f"{provider.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
            if provider.with_end_session:
                document["end_session_endpoint"] = f"{provider.issuer}/logout"
            return jsonify(document)

        @app.get("/jwks")
        def jwks() -> Any:
            provider.jwks_fetches += 1
            return jsonify({"keys": [k.as_dict(private=False) for k in provider.published]})

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            try:
                grant = server.get_consent_grant(end_user=None)
            except OAuth2Error as error:
                return server.handle_error_response(None, error)
            if request.method == "GET":
                return _login_form(request.full_path)
            account = provider.accounts.get(request.form.get("username", ""))
            if account is None or account.password != request.form.get("password"):
                return _login_form(request.full_path, "Wrong user name or password"), 401
            return server.create_authorization_response(grant_user=account, grant=grant)

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        @app.get("/logout")
        def logout() -> Any:
            provider.logouts.append(dict(request.args))
            target = request.args.get("post_logout_redirect_uri")
            return redirect(target) if target else "Logged out"

        return app


def _login_form(action: str, error: str = "") -> str:
    notice = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html><title>Test provider</title><h1>Test provider login</h1>{notice}
<form method="post" action="{html.escape(action)}">
<label>User <input name="username" id="idp-user"></label>
<label>Password <input name="password" type="password" id="idp-password"></label>
<button type="submit" id="idp-submit">Sign in</button></form>"""


def authorize_query(**params: str) -> str:
    return urlencode(params)
