"""Login timing: an unknown user must cost the same as a known user with a wrong
password (no account enumeration by timing). Prints both medians and their ratio.

    .venv/bin/python bench/login_timing.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from opscenter.app import create_app
from opscenter.config import Settings


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            OPSCENTER_DATA_DIR=Path(tmp),
            OPSCENTER_ADMIN_PASSWORD="bench-password-1",
            OPSCENTER_RATE_LIMIT_ENABLED=False,
            OPSCENTER_LOG_LEVEL="WARNING",
            OPSCENTER_HEALTH_INTERVAL=0,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def timed(username: str) -> float:
                    started = time.perf_counter()
                    r = await client.post(
                        "/api/v1/auth/login",
                        json={"username": username, "password": "wrong-password"},
                    )
                    assert r.status_code == 401
                    return time.perf_counter() - started

                known, unknown = [], []
                for _ in range(rounds):  # interleaved, so drift hits both alike
                    known.append(await timed("admin"))
                    unknown.append(await timed("nobody-by-this-name"))
    k, u = statistics.median(known), statistics.median(unknown)
    print(f"known user, wrong password: median {k * 1000:.1f} ms")
    print(f"unknown user:               median {u * 1000:.1f} ms")
    print(f"ratio unknown/known: {u / k:.3f} (1.0 = indistinguishable)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(parser.parse_args().rounds))
