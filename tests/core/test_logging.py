"""Lines that libraries write through the standard logging module are redacted too."""

from __future__ import annotations

import logging

import pytest

from opscenter.core.logging import REDACTED, configure_logging

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl"


def test_a_websocket_url_with_a_token_is_logged_without_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_logging("INFO")
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        # what uvicorn writes when a client connects to /ws?token=...
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:51040", f"/ws?token={JWT}"
        )
        logging.getLogger("procrastinate").info("api key ock_%s used", "A" * 24)
    assert JWT not in caplog.text and "ock_AAAA" not in caplog.text
    assert f"/ws?token={REDACTED}" in caplog.text
