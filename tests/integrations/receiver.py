"""A real HTTP server on loopback that speaks just enough of each integration's protocol
(generic webhook, Slack, Teams, Jira REST v2, GitHub, GitLab, Jenkins) and records what
it was sent. Failures are scripted per path: `fail(path, 500, 503)` answers the next two
requests to that path with those statuses."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]
# Not 127.0.0.1: the tests allow-list exactly this address, and 127.0.0.1 in any spelling
# (localhost, decimal, hex, IPv4-mapped) must still be refused.
HOST = "127.0.0.2"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._scripted: dict[str, list[Answer]] = {}
        self._lock = threading.Lock()
        self._issues = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Received(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                status, headers, answer = receiver._answer(request)
                with receiver._lock:
                    receiver.requests.append(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, path: str, *statuses: int, body: bytes = b"", **headers: str) -> None:
        with self._lock:
            self._scripted.setdefault(path, []).extend((s, headers, body) for s in statuses)

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    async def wait_for(self, path: str, count: int, timeout: float = 15) -> list[Received]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = self.on(path)
            if len(got) >= count:
                return got
            if loop.time() > deadline:
                raise AssertionError(f"{path}: {len(got)} of {count} requests arrived")
            await asyncio.sleep(0.05)

    # -- the protocols --------------------------------------------------------------------
    def _answer(self, request: Received) -> Answer:
        path = request.path.split("?")[0]
        with self._lock:
            queue = self._scripted.get(path)
            if queue:
                return queue.pop(0)
        as_json = {"content-type": "application/json"}
        if path == "/rest/api/2/issue" and request.method == "POST":
            with self._lock:
                self._issues += 1
                number = self._issues
            key = f"OPS-{number}"
            return 201, as_json, json.dumps({"id": str(10000 + number), "key": key}).encode()
        if re.fullmatch(r"/rest/api/2/issue/[A-Z]+-\d+/comment", path):
            return 201, as_json, b'{"id": "1"}'
        if re.fullmatch(r"/rest/api/2/issue/[A-Z]+-\d+/transitions", path):
            return 204, {}, b""
        if path == "/rest/api/2/myself":
            return 200, as_json, b'{"name": "bot"}'
        if re.fullmatch(r"/repos/[^/]+/[^/]+/actions/workflows/[^/]+/dispatches", path):
            return 204, {}, b""
        if re.fullmatch(r"/api/v4/projects/[^/]+/trigger/pipeline", path):
            return 201, as_json, b'{"id": 77, "status": "created"}'
        if re.fullmatch(r"(/job/[^/]+)+/buildWithParameters", path):
            return 201, {"location": f"{self.url}/queue/item/5/"}, b""
        if path.startswith("/slack/"):
            return 200, {"content-type": "text/plain"}, b"ok"
        if path.startswith("/teams/"):
            return 202, {}, b""
        return 200, as_json, b"{}"


@contextmanager
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    try:
        yield server
    finally:
        server.close()
