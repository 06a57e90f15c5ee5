from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import Api
from tests.sso.provider import OpenIdProvider

PROVIDERS = "/api/v1/sso/providers"


@pytest.fixture(scope="session")
def idp() -> Iterator[OpenIdProvider]:
    provider = OpenIdProvider()
    yield provider
    provider.stop()


@dataclass
class Configured:
    id: int
    slug: str
    client_id: str
    secret: str


async def configure(
    admin: httpx.AsyncClient, idp: OpenIdProvider, *, public: bool = False, **fields: Any
) -> Configured:
    """A provider in opscenter and its client at the test provider."""
    slug = fields.pop("slug", f"idp-{uuid.uuid4().hex[:8]}")
    client_id, secret = f"client-{slug}", f"secret-{uuid.uuid4().hex}"
    idp.add_client(client_id, None if public else secret, f"http://testserver/sso/{slug}/callback")
    body = {
        "slug": slug,
        "name": f"Company login {slug}",
        "issuer": idp.issuer,
        "client_id": client_id,
        **({} if public else {"client_secret": secret}),
        **fields,
    }
    r = await admin.post(PROVIDERS, json=body)
    assert r.status_code == 201, r.text
    return Configured(r.json()["id"], slug, client_id, secret)


async def start(browser: httpx.AsyncClient, slug: str, next_path: str = "/") -> str:
    """The browser's first leg: the provider's authorization URL."""
    r = await browser.get(f"/sso/{slug}/login", params={"next": next_path})
    assert r.status_code == 303, r.text
    return r.headers["location"]


async def sign_in(authorize_url: str, username: str, password: str | None = None) -> str:
    """The person signs in at the provider (real HTTP): the callback URL it sends back."""
    async with httpx.AsyncClient() as client:
        r = await client.post(
            authorize_url, data={"username": username, "password": password or f"pw-{username}"}
        )
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith("http://testserver/sso/"), location
    return location.removeprefix("http://testserver")


async def sso_login(
    api: Api, slug: str, username: str, *, next_path: str = "/"
) -> tuple[httpx.AsyncClient, httpx.Response]:
    """The whole flow in one browser-like client: its callback answer (the client keeps
    the cookies; close it)."""
    browser = api.client()
    callback = await sign_in(await start(browser, slug, next_path), username)
    return browser, await browser.get(callback)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
