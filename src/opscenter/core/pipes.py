"""File objects for descriptors that an event loop's pipe transport will own.

uvloop (the server's event loop) hands a pipe's descriptor itself to libuv, which closes
it when the transport closes, and closes the file object too: the same number is closed
twice (MagicStack/uvloop#763, open). In between, another thread or the loop itself may
have been given that number, and loses it to the second close. That is how a command's
output pipe was closed under it, its number taken by a WebSocket, and its reader left
waiting for an end that never came (`tests/core/test_pipes.py` holds the case).

`loop_file` answers a file object that closes the descriptor exactly once, whoever closes
it: under uvloop the transport alone owns it; under asyncio's own loop the transport
closes the file object, which owns it. A regular file is never given to a pipe transport
(asyncssh reads those itself), so it owns its descriptor everywhere.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat


def transport_owns(fd: int) -> bool:
    """Whether the running loop's pipe transport closes `fd` itself (uvloop's does)."""
    uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    return uvloop and not stat.S_ISREG(os.fstat(fd).st_mode)


def loop_file(fd: int, mode: str) -> io.FileIO:
    """`fd` as an unbuffered binary file object, for `connect_read_pipe` or
    `connect_write_pipe` (or a library that calls them): it closes `fd` once."""
    file = os.fdopen(fd, mode, buffering=0, closefd=not transport_owns(fd))
    assert isinstance(file, io.FileIO)
    return file
