"""Single sign-on login cost: the callback leg of a returning user's login (claim the
state, exchange the code with the PKCE verifier at the provider on loopback, verify the
id_token against the cached key set, map the claims, start the session), timed against a
limit, with a password login beside it for scale. Prints the medians, the limit and the
ratio.

    PYTHONPATH=src .venv/bin/python bench/sso_login.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test provider

from tests.sso.provider import OpenIdProvider

from opscenter.app import create_app
from opscenter.config import Settings

#: What a person may wait for our side of the redirect back from the provider.
LIMIT_MS = 250.0
PASSWORD = "bench-password-1"


async def main(rounds: int) -> None:
    idp = OpenIdProvider()
    idp.add_client("bench", "bench-secret", "http://bench/sso/bench/callback")
    idp.add_account("pat", groups=["dba"])
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            OPSCENTER_DATA_DIR=Path(tmp),
            OPSCENTER_ADMIN_PASSWORD=PASSWORD,
            OPSCENTER_RATE_LIMIT_ENABLED=False,
            OPSCENTER_LOG_LEVEL="WARNING",
            OPSCENTER_HEALTH_INTERVAL=0,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as admin:
                r = await admin.post(
                    "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
                )
                admin.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
                r = await admin.post(
                    "/api/v1/sso/providers",
                    json={
                        "slug": "bench",
                        "name": "Bench",
                        "issuer": idp.issuer,
                        "client_id": "bench",
                        "client_secret": "bench-secret",
                        "rules": [{"value": "dba", "role": "operator"}],
                    },
                )
                assert r.status_code == 201, r.text

            async def sso_callback() -> float:
                async with (
                    httpx.AsyncClient(transport=transport, base_url="http://bench") as browser,
                    httpx.AsyncClient() as person,
                ):
                    authorize = (await browser.get("/sso/bench/login")).headers["location"]
                    signed = await person.post(
                        authorize, data={"username": "pat", "password": "pw-pat"}
                    )
                    callback = signed.headers["location"].removeprefix("http://bench")
                    started = time.perf_counter()
                    r = await browser.get(callback)
                    elapsed = time.perf_counter() - started
                    assert r.status_code == 303 and r.headers["location"] == "/", r.text
                    return elapsed

            async def password_login() -> float:
                async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
                    started = time.perf_counter()
                    r = await c.post(
                        "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
                    )
                    assert r.status_code == 200
                    return time.perf_counter() - started

            await sso_callback()  # the first login creates the user and fetches the keys
            sso, local = [], []
            for _ in range(rounds):
                sso.append(await sso_callback())
                local.append(await password_login())
    idp.stop()
    s, p = statistics.median(sso) * 1000, statistics.median(local) * 1000
    print(f"SSO callback (code exchange + id_token checks + session): median {s:.1f} ms")
    print(f"password login (argon2id), for scale:                     median {p:.1f} ms")
    print(f"limit {LIMIT_MS:.0f} ms; ratio median/limit: {s / LIMIT_MS:.3f} (below 1 passes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(parser.parse_args().rounds))
