"""Local stand-ins for LLM APIs: HTTP servers on 127.0.0.1 speaking OpenAI chat
completions and Anthropic Messages (real HTTP, real JSON, usage fields). Each follows a
script of what to do with the next requests: answer, fail (500), answer 429, stall past
the caller's timeout, or refuse the key (echoing it, as some providers do)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OK, FAIL, RATE_LIMITED, SLOW, BAD_KEY = "ok", "fail", "429", "slow", "bad_key"


@dataclass
class LlmServer:
    protocol: str  # "openai" | "anthropic"
    api_key: str | None = None
    name: str = "fake"
    script: list[str] = field(default_factory=list)
    slow_seconds: float = 2.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        suffix = "/v1" if self.protocol == "openai" else ""
        return f"http://{host}:{port}{suffix}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                action = fake.script.pop(0) if fake.script else OK
                status, payload, headers = fake.answer(action, self.path, dict(self.headers), body)
                if action == SLOW:
                    time.sleep(fake.slow_seconds)
                raw = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up (a timeout): that is the point

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _key_of(self, headers: dict[str, str]) -> str | None:
        if self.protocol == "anthropic":
            return headers.get("x-api-key")
        auth = headers.get("Authorization") or ""
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def answer(
        self, action: str, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        expected_path = "/v1/chat/completions" if self.protocol == "openai" else "/v1/messages"
        if path != expected_path:
            return 404, self._error("not_found", f"no route {path}"), {}
        given = self._key_of(headers)
        if action == BAD_KEY or (self.api_key and given != self.api_key):
            return 401, self._error("authentication_error", f"Incorrect API key: {given}"), {}
        if action == FAIL:
            return 500, self._error("api_error", "internal error, try again"), {}
        if action == RATE_LIMITED:
            return 429, self._error("rate_limit_error", "rate limit reached"), {"Retry-After": "1"}
        if self.protocol == "anthropic" and headers.get("anthropic-version") != "2023-06-01":
            return 400, self._error("invalid_request_error", "anthropic-version missing"), {}
        words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        words += len(str(body.get("system", "")).split())
        text = f"{self.name} says: the answer"
        if self.protocol == "anthropic":
            return (
                200,
                {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model"),
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": words, "output_tokens": len(text.split())},
                },
                {},
            )
        return (
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": words,
                    "completion_tokens": len(text.split()),
                    "total_tokens": words + len(text.split()),
                },
            },
            {},
        )

    def _error(self, kind: str, message: str) -> dict[str, Any]:
        if self.protocol == "anthropic":
            return {"type": "error", "error": {"type": kind, "message": message}}
        return {"error": {"message": message, "type": kind, "code": None}}


@contextmanager
def llm_server(protocol: str, **kwargs: Any) -> Iterator[LlmServer]:
    server = LlmServer(protocol, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
