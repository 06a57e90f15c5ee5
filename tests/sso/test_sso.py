"""Single sign-on against a real OpenID provider on loopback (Authlib's server side, which
enforces PKCE): providers through the API, the whole login, and every refusal."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from opscenter.core.clock import utcnow
from opscenter.core.events import Event
from opscenter.core.security import sha256_hex
from opscenter.models import AuditLog, SsoIdentity, SsoLogin, SsoProvider, User
from opscenter.realtime.service import channels_of
from opscenter.sso import service
from tests.conftest import ADMIN_PASSWORD, Api, UserFactory, admin_client, make_settings
from tests.sso.conftest import PROVIDERS, configure, query_of, sign_in, sso_login, start
from tests.sso.provider import OpenIdProvider, new_key

ME = "/api/v1/auth/me"


async def scalar(api: Api, stmt: Any) -> Any:
    async with api.app.state.ctx.db.read_session() as s:
        return await s.scalar(stmt)


async def audit_of(api: Api, action: str) -> list[AuditLog]:
    async with api.app.state.ctx.db.read_session() as s:
        rows = await s.scalars(select(AuditLog).where(AuditLog.action == action))
        return list(rows.all())


async def refusal_text(browser: httpx.AsyncClient, answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].startswith("/sso/refused"), answer.headers["location"]
    page = await browser.get(answer.headers["location"])
    assert page.status_code == 200
    return page.text


# -- providers through the API ------------------------------------------------------------


async def test_provider_lifecycle_keeps_the_secret(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider
) -> None:
    made = await configure(admin, idp, rules=[{"value": "dba", "role": "operator"}])
    r = await admin.get(f"{PROVIDERS}/{made.id}")
    assert r.status_code == 200
    body = r.json()
    assert body["has_client_secret"] is True and "client_secret" not in body
    assert body["redirect_uri"] == f"http://testserver/sso/{made.slug}/callback"
    assert body["login_url"] == f"/sso/{made.slug}/login"
    assert body["rules"] == [{"claim": None, "value": "dba", "role": "operator", "teams": []}]
    listed = (await admin.get(PROVIDERS, params={"limit": 1000})).text
    assert made.secret not in listed and made.slug in listed
    stored = await scalar(
        api, select(SsoProvider.client_secret_enc).where(SsoProvider.id == made.id)
    )
    assert made.secret not in stored
    keyring = api.app.state.ctx.keyring
    assert keyring.decrypt_secret(stored, context=service.secret_context(made.id)) == made.secret

    r = await admin.put(
        f"{PROVIDERS}/{made.id}",
        json={"default_role": "viewer", "rules": [], "client_secret": "another-secret"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["default_role"] == "viewer" and r.json()["rules"] == []
    assert "another-secret" not in r.text
    (entry,) = [
        e for e in await audit_of(api, "sso.provider_update") if e.resource_id == str(made.id)
    ]
    assert set(entry.details["changed"]) == {"default_role", "rules", "client_secret"}
    assert "another-secret" not in str(entry.details)

    assert (await admin.delete(f"{PROVIDERS}/{made.id}")).status_code == 204
    r = await admin.get(f"{PROVIDERS}/{made.id}")
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    assert [e.action for e in await audit_of(api, "sso.provider_delete")]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"issuer": "ftp://idp.example.com"}, "VALIDATION_ERROR"),
        ({"issuer": "http://idp.example.com"}, "VALIDATION_ERROR"),  # http off loopback
        ({"scopes": "email profile"}, "VALIDATION_ERROR"),  # no openid
        ({"rules": [{"value": "dba"}]}, "VALIDATION_ERROR"),  # gives nothing
        ({"rules": [{"value": "dba", "role": "no-such-role"}]}, "VALIDATION_ERROR"),
        ({"rules": [{"value": "dba", "teams": ["no such team"]}]}, "VALIDATION_ERROR"),
        ({"default_role": "nobody"}, "VALIDATION_ERROR"),
        ({"slug": "Has Spaces"}, "VALIDATION_ERROR"),
        ({"role": "admin"}, "VALIDATION_ERROR"),  # unknown field
    ],
)
async def test_bad_provider_input_writes_nothing(
    api: Api, admin: httpx.AsyncClient, change: dict[str, Any], code: str
) -> None:
    before = await scalar(api, select(func.count(SsoProvider.id)))
    body = {"slug": "bad", "name": "Bad", "issuer": "https://idp.example.com", "client_id": "c"}
    r = await admin.post(PROVIDERS, json={**body, **change})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    assert await scalar(api, select(func.count(SsoProvider.id))) == before


async def test_conflict_and_missing(admin: httpx.AsyncClient, idp: OpenIdProvider) -> None:
    made = await configure(admin, idp)
    r = await admin.post(
        PROVIDERS,
        json={"slug": made.slug, "name": "Again", "issuer": idp.issuer, "client_id": "x"},
    )
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
    for method in ("GET", "PUT", "DELETE"):
        r = await admin.request(method, f"{PROVIDERS}/999999", json={} if method == "PUT" else None)
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", method
    r = await admin.put(f"{PROVIDERS}/{made.id}", json={"rules": [{"value": "x", "role": "nope"}]})
    assert r.status_code == 422
    assert (await admin.get(f"{PROVIDERS}/{made.id}")).json()["rules"] == []


async def test_roles_and_authentication(api: Api, make_user: UserFactory) -> None:
    viewer, operator = await make_user("viewer"), await make_user("operator")
    body = {"slug": "x", "name": "X", "issuer": "https://idp.example.com", "client_id": "c"}
    async with viewer.client(api) as c:
        r = await c.get(PROVIDERS)
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    async with operator.client(api) as c:  # configuring logins is user administration
        for method, path in (
            ("GET", PROVIDERS),
            ("POST", PROVIDERS),
            ("PUT", f"{PROVIDERS}/1"),
            ("DELETE", f"{PROVIDERS}/1"),
        ):
            r = await c.request(method, path, json=body if method in ("POST", "PUT") else None)
            assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN", (method, r.text)
    async with api.client() as anonymous:
        for method in ("GET", "POST"):
            r = await anonymous.request(method, PROVIDERS, json=body if method == "POST" else None)
            assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
        assert (await anonymous.post("/api/v1/sso/logout")).status_code == 401


# -- the login ------------------------------------------------------------------------------


async def test_first_login_creates_the_user_with_mapped_role_and_teams(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider
) -> None:
    team = f"dbas-{time.monotonic_ns()}"
    assert (await admin.post("/api/v1/users/teams", json={"name": team})).status_code == 201
    made = await configure(
        admin,
        idp,
        rules=[
            {"value": "ops-admins", "role": "admin"},
            {"value": "dba", "role": "operator", "teams": [team]},
            {"claim": "email_verified", "value": "true", "teams": [team]},
        ],
    )
    name = f"ann{time.monotonic_ns()}"
    idp.add_account(name, groups=["dba", "staff"], name="Ann Example")
    browser, answer = await sso_login(api, made.slug, name, next_path="/backups")
    async with aclosing(browser):
        assert answer.status_code == 303 and answer.headers["location"] == "/backups"
        assert "sso_state" not in browser.cookies or not browser.cookies["sso_state"]
        me = await browser.get(ME)  # the session cookie a password login also sets
        assert me.status_code == 200, me.text
        user = me.json()
        assert user["username"] == name and user["role"] == "operator"
        assert user["email"] == f"{name}@idp.example.com"
        assert [t["name"] for t in user["teams"]] == [team]

        (mapping,) = [
            e for e in await audit_of(api, "sso.mapping") if e.details["subject"] == f"sub-{name}"
        ]
        assert mapping.outcome == "success"
        assert mapping.details["matched_rules"] == [2, 3] and mapping.details["role"] == "operator"
        assert mapping.details["role_from"] == "rule 2" and mapping.details["groups"] == [
            "dba",
            "staff",
        ]
        (login,) = [e for e in await audit_of(api, "auth.sso_login") if e.user_id == user["id"]]
        assert login.details["created"] is True and login.details["provider"] == made.slug

        # Logout ends this session here and names the provider's end-session page.
        session_cookie, csrf = browser.cookies["session_token"], browser.cookies["csrf_token"]
        r = await browser.post("/api/v1/sso/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        end = r.json()["end_session_url"]
        assert end.startswith(f"{idp.issuer}/logout?")
        params = query_of(end)
        assert params["client_id"] == made.client_id and params["id_token_hint"].count(".") == 2
        assert params["post_logout_redirect_uri"] == "http://testserver/login"
        async with api.client({"Cookie": f"session_token={session_cookie}"}) as stolen:
            assert (await stolen.get(ME)).status_code == 401  # the session is revoked

    # A second login is the same user; the provider's groups changed, so does the role.
    idp.accounts[name].groups = ["ops-admins"]
    browser, answer = await sso_login(api, made.slug, name)
    async with aclosing(browser):
        assert answer.status_code == 303, answer.text
        again = (await browser.get(ME)).json()
        assert again["id"] == user["id"] and again["role"] == "admin"
    assert await scalar(api, select(func.count(User.id)).where(User.username == name)) == 1


async def test_no_role_is_refused_with_a_page_that_says_why(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider
) -> None:
    made = await configure(admin, idp, rules=[{"value": "dba", "role": "operator"}])
    name = f"bob{time.monotonic_ns()}"
    idp.add_account(name, groups=["marketing"])
    browser, answer = await sso_login(api, made.slug, name)
    async with aclosing(browser):
        page = await refusal_text(browser, answer)
        assert "no mapping rule gives you a role" in page and "marketing" in page
        assert "NO_ROLE" in page
        assert (await browser.get(ME)).status_code == 401
    assert await scalar(api, select(User.id).where(User.username == name)) is None
    (decision,) = [
        e for e in await audit_of(api, "sso.mapping") if e.details["subject"] == f"sub-{name}"
    ]
    assert decision.outcome == "denied" and decision.details["role"] is None
    refusals = [
        e for e in await audit_of(api, "auth.sso_refused") if e.details["provider"] == made.slug
    ]
    assert [e.details["reason"] for e in refusals] == ["NO_ROLE"]


async def test_a_replayed_state_is_refused(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider
) -> None:
    made = await configure(admin, idp, default_role="viewer")
    name = f"cy{time.monotonic_ns()}"
    idp.add_account(name)
    async with api.client() as browser:
        callback = await sign_in(await start(browser, made.slug), name)
        assert (await browser.get(callback)).status_code == 303
        replay = await browser.get(callback)
        assert replay.headers["location"] == "/sso/refused?code=STATE_REPLAYED"
        page = await browser.get(replay.headers["location"])
        assert "already used once" in page.text
        # A state this server never issued, and a callback without the browser's cookie.
        r = await browser.get(f"/sso/{made.slug}/callback", params={"state": "forged", "code": "x"})
        assert r.headers["location"] == "/sso/refused?code=STATE_INVALID"
    async with api.client() as other_browser:
        first = api.client()
        async with first:
            callback = await sign_in(await start(first, made.slug), name)
        r = await other_browser.get(callback)  # login CSRF: someone else's answer
        assert r.headers["location"] == "/sso/refused?code=STATE_MISMATCH"
        assert (await other_browser.get(ME)).status_code == 401


async def test_a_wrong_pkce_verifier_is_refused(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider
) -> None:
    made = await configure(admin, idp, default_role="viewer")
    name = f"dee{time.monotonic_ns()}"
    idp.add_account(name)
    async with api.client() as browser:
        authorize = await start(browser, made.slug)
        state = query_of(authorize)["state"]
        assert query_of(authorize)["code_challenge_method"] == "S256"
        # Someone holding the code but not the verifier: the provider refuses the exchange.
        state_hash = sha256_hex(state)
        forged = api.app.state.ctx.keyring.encrypt_secret(
            "x" * 48, context=f"sso_logins:{state_hash}"
        )
        async with api.app.state.ctx.db.write_session() as s:
            await s.execute(
                update(SsoLogin)
                .where(SsoLogin.state_hash == state_hash)
                .values(verifier_enc=forged)
            )
            await s.commit()
        answer = await browser.get(await sign_in(authorize, name))
        page = await refusal_text(browser, answer)
        assert "TOKEN_REFUSED" in page and "invalid_grant" in page
        assert (await browser.get(ME)).status_code == 401
    # And the provider takes no authorization request without a PKCE challenge at all.
    plain = authorize.replace("code_challenge=", "x=")
    async with httpx.AsyncClient() as client:
        r = await client.post(plain, data={"username": name, "password": f"pw-{name}"})
    assert "error=invalid_request" in r.headers.get("location", "") or r.status_code == 400


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"exp": 1_000_000_000}, "has expired"),
        ({"iss": "http://127.0.0.1:1/other"}, "'iss' claim"),
        ({"aud": ["someone-else"]}, "'aud' claim"),
        ({"nonce": "not-the-nonce"}, "'nonce' claim"),
    ],
)
async def test_id_token_claims_are_checked(
    api: Api,
    admin: httpx.AsyncClient,
    idp: OpenIdProvider,
    overrides: dict[str, Any],
    said: str,
) -> None:
    made = await configure(admin, idp, default_role="viewer")
    name = f"eve{time.monotonic_ns()}"
    idp.add_account(name)
    idp.overrides = overrides
    try:
        browser, answer = await sso_login(api, made.slug, name)
    finally:
        idp.overrides = {}
    async with aclosing(browser):
        page = await refusal_text(browser, answer)
        assert "ID_TOKEN_INVALID" in page and said in page.replace("&#39;", "'")
        assert (await browser.get(ME)).status_code == 401
    assert await scalar(api, select(User.id).where(User.username == name)) is None


async def test_signatures_and_key_rotation(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider
) -> None:
    made = await configure(admin, idp, default_role="viewer")
    name = f"fay{time.monotonic_ns()}"
    idp.add_account(name)
    published = idp.signing_key
    # Signed by a key the provider does not publish, under a published key id: refused.
    idp.signing_key = new_key(str(published.kid))
    try:
        browser, answer = await sso_login(api, made.slug, name)
    finally:
        idp.signing_key = published
    async with aclosing(browser):
        assert "signature does not verify" in await refusal_text(browser, answer)
    # The provider rotates: an unknown key id fetches the key set again, once.
    idp.rotate(f"key-{time.monotonic_ns()}")
    fetches = idp.jwks_fetches
    browser, answer = await sso_login(api, made.slug, name)
    async with aclosing(browser):
        assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
        assert (await browser.get(ME)).status_code == 200
    assert idp.jwks_fetches == fetches + 1


async def test_email_matching_links_only_verified_addresses(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider, make_user: UserFactory
) -> None:
    made = await configure(admin, idp, default_role="viewer")
    local = await make_user("operator")
    email = f"{local.username}@example.com"
    idp.add_account(f"{local.username}-u", email=email, email_verified=False)
    browser, answer = await sso_login(api, made.slug, f"{local.username}-u")
    async with aclosing(browser):
        assert "EMAIL_IN_USE" in await refusal_text(browser, answer)
    idp.add_account(f"{local.username}-v", email=email, email_verified=True)
    browser, answer = await sso_login(api, made.slug, f"{local.username}-v")
    async with aclosing(browser):
        assert answer.status_code == 303, answer.text
        me = (await browser.get(ME)).json()
        assert me["id"] == local.id and me["role"] == "viewer"  # the provider's mapping rules
    linked = await scalar(
        api, select(SsoIdentity.user_id).where(SsoIdentity.subject == f"sub-{local.username}-v")
    )
    assert linked == local.id


async def test_provider_outage_leaves_local_login_and_api_keys_working(
    api: Api, admin: httpx.AsyncClient
) -> None:
    down = OpenIdProvider()
    down.stop()  # nothing listens at its issuer any more
    made = await configure(admin, down, default_role="viewer")
    r = await admin.post("/api/v1/admin/tokens", json={"name": "ci", "role": "viewer"})
    key = r.json()["key"]
    async with api.client() as browser:
        r = await browser.get(f"/sso/{made.slug}/login")
        assert r.headers["location"] == "/sso/refused?code=PROVIDER_UNAVAILABLE"
        page = await browser.get(r.headers["location"])
        assert "could not be reached" in page.text and "log in with your password" in page.text
        login = await browser.get("/login")
        assert login.status_code == 200
        options = await browser.get("/sso/options")
        assert f"/sso/{made.slug}/login" in options.text  # the button stays: it costs no call
        r = await browser.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert r.status_code == 200
    async with api.client({"X-API-Key": key}) as machine:
        assert (await machine.get(ME)).status_code == 200
    assert await audit_of(api, "auth.sso_refused")


async def test_provider_changes_are_announced_on_the_sso_channel(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider
) -> None:
    events = api.app.state.ctx.events
    async with events.subscribe() as queue:
        made = await configure(admin, idp)
        assert (
            await admin.put(f"{PROVIDERS}/{made.id}", json={"enabled": False})
        ).status_code == 200
        assert (await admin.delete(f"{PROVIDERS}/{made.id}")).status_code == 204
        seen = []
        while len(seen) < 3:
            event = await asyncio.wait_for(queue.get(), 5)
            if event.data.get("provider_id") == made.id:
                seen.append(event.type)
    assert seen == ["sso.provider_created", "sso.provider_updated", "sso.provider_deleted"]
    assert channels_of(Event("sso.provider_created", {})) == {"sso"}


async def test_an_expired_login_is_refused_and_old_logins_are_swept(
    api: Api, admin: httpx.AsyncClient, idp: OpenIdProvider
) -> None:
    made = await configure(admin, idp, default_role="viewer")
    name = f"gus{time.monotonic_ns()}"
    idp.add_account(name)
    long_ago = utcnow() - timedelta(days=400)
    async with api.app.state.ctx.db.write_session() as s:
        s.add(
            SsoLogin(
                provider_id=made.id,
                state_hash=sha256_hex(f"old-{name}"),
                nonce="n",
                verifier_enc="v",
                redirect_uri="http://testserver/x",
                created_at=long_ago,
                expires_at=long_ago,
            )
        )
        await s.commit()
    async with api.client() as browser:
        authorize = await start(browser, made.slug)
        state_hash = sha256_hex(query_of(authorize)["state"])
        async with api.app.state.ctx.db.write_session() as s:
            await s.execute(
                update(SsoLogin)
                .where(SsoLogin.state_hash == state_hash)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            await s.commit()
        answer = await browser.get(await sign_in(authorize, name))
        assert "took too long" in await refusal_text(browser, answer)
    swept = select(SsoLogin.id).where(SsoLogin.state_hash == sha256_hex(f"old-{name}"))
    assert await scalar(api, swept) is None


async def test_the_last_admin_is_never_demoted_by_a_mapping(
    tmp_path: Path, idp: OpenIdProvider
) -> None:
    async with admin_client(make_settings(tmp_path)) as admin:
        made = await configure(admin, idp, default_role="viewer")
        idp.add_account(f"root{time.monotonic_ns()}", email="admin@example.com")
        username = list(idp.accounts)[-1]
        transport = httpx.ASGITransport(app=admin.app)  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
            answer = await browser.get(await sign_in(await start(browser, made.slug), username))
            assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
            me = (await browser.get(ME)).json()
        assert me["username"] == "admin" and me["role"] == "admin"
