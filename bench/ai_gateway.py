"""AI model registry: what a call through the registry costs beyond the provider's own
time, and how fast a model's metrics are aggregated over many recorded calls.

A local server on 127.0.0.1 speaks OpenAI's chat-completions protocol. Alternating in
each round: the same request sent to it directly (httpx), the API request without a call
(`POST /ai-models/prompts/render`: authentication, prompt lookup, rendering), and
`POST /ai-models/run` (that, plus budget, chain, address check, the call, the recorded
attempt and the audit entry) on SQLite; the registry's own cost is the difference.
Then `--calls` attempts are written and `GET /ai-models/{id}/metrics?hours=720` is
timed. Prints medians, limits and ratios, and the load average (a shared machine).

    .venv/bin/python bench/ai_gateway.py [--rounds 200] [--calls 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from common import admin_client, running_app

from opscenter.core.clock import utcnow
from opscenter.models import AiCall

# What the registry may add to a call beyond the provider's time and the API's own request
# handling (auth, parsing, prompt lookup): budget, chain, address check, record, audit.
OVERHEAD_LIMIT_MS = 25.0
METRICS_LIMIT_MS = 1000.0  # a 30-day metrics page over --calls attempts


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        raw = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def main(rounds: int, calls: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1"
    async with (
        running_app(OPSCENTER_OUTBOUND_ALLOWLIST="127.0.0.1") as app,
        admin_client(app, base_url="http://bench") as client,
        httpx.AsyncClient() as direct,
    ):
        base = "/api/v1/ai-models"
        model = (
            await client.post(
                f"{base}/",
                json={
                    "name": "bench",
                    "provider": "local",
                    "model": "m",
                    "endpoint": endpoint,
                },
            )
        ).json()
        await client.put(
            f"{base}/fallback-config",
            json={"chains": [{"purpose": "default", "model_ids": [model["id"]]}]},
        )
        await client.post(
            f"{base}/prompts",
            json={"name": "p", "template": "Say {{x}}", "labels": ["production"]},
        )
        request = {"model": "m", "messages": [{"role": "user", "content": "Say hi"}]}
        run = {"prompt": "p", "variables": {"x": "hi"}}
        render = {"name": "p", "variables": {"x": "hi"}}
        alone: list[float] = []
        request_only: list[float] = []
        through: list[float] = []
        for _ in range(rounds):
            started = time.perf_counter()
            await direct.post(f"{endpoint}/chat/completions", json=request)
            alone.append(time.perf_counter() - started)
            started = time.perf_counter()
            await client.post(f"{base}/prompts/render", json=render)
            request_only.append(time.perf_counter() - started)
            started = time.perf_counter()
            r = await client.post(f"{base}/run", json=run)
            through.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
        own = ms(through) - ms(alone) - ms(request_only)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"provider alone (httpx):         median {ms(alone):7.2f} ms, {rounds} calls")
        print(f"API request alone (render):     median {ms(request_only):7.2f} ms")
        print(f"call through the registry:      median {ms(through):7.2f} ms")
        print(
            f"the registry's own cost:        {own:7.2f} ms"
            f"  limit {OVERHEAD_LIMIT_MS:.0f} ms  ratio {own / OVERHEAD_LIMIT_MS:.2f}"
        )

        ctx = app.state.ctx
        now = utcnow()
        async with ctx.db.write_session() as session:
            team = (await client.get(f"{base}/{model['id']}")).json()["team_id"]
            for start in range(0, calls, 10_000):
                session.add_all(
                    AiCall(
                        team_id=team,
                        request_id=uuid.uuid4().hex,
                        model_id=model["id"],
                        model_name="bench",
                        purpose="default",
                        outcome="success" if i % 10 else "timeout",
                        latency_ms=float(i % 900),
                        tokens_in=50,
                        tokens_out=20,
                        cost_usd=0.0001,
                        final=True,
                        created_at=now - timedelta(seconds=(i * 2_592_000) // calls),
                    )
                    for i in range(start, min(calls, start + 10_000))
                )
                await session.flush()
            await session.commit()
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            r = await client.get(f"{base}/{model['id']}/metrics", params={"hours": 720})
            timings.append(time.perf_counter() - started)
        assert r.json()["calls"] >= calls, r.text
        took = ms(timings)
        print(
            f"metrics, 30 days over {r.json()['calls']} calls: median {took:7.1f} ms  "
            f"limit {METRICS_LIMIT_MS:.0f} ms  ratio {took / METRICS_LIMIT_MS:.2f}"
        )
    server.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))
