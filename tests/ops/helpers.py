"""Helpers of the ops tests."""

from __future__ import annotations

import socket


def unused_port() -> int:
    """A loopback port where nothing listens (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
