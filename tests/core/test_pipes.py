"""A pipe handed to the event loop is closed once (`core/pipes.py`). uvloop closes a pipe
transport's descriptor itself and then its file object's too; a descriptor opened in
between got the same number and lost it. A command's output pipe was lost that way, its
number went to a WebSocket, and the command's page said `running` for good."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from opscenter.core.pipes import loop_file, transport_owns

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "uvloop": uvloop.run,
    "asyncio": asyncio.run,
}


class _Probe(io.FileIO):
    """A file object that, as it is closed, opens a pipe first: the kernel gives out the
    lowest free numbers, so if its own descriptor was closed already, the pipe gets it."""

    opened: tuple[int, int] | None = None

    def close(self) -> None:
        if not self.closed and self.opened is None:
            self.opened = os.pipe()
        super().close()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("direction", ["read", "write"])
def test_a_pipe_transport_closes_its_descriptor_once(loop: str, direction: str) -> None:
    async def main() -> None:
        read_end, write_end = os.pipe()
        ours = read_end if direction == "read" else write_end
        probe = _Probe(
            ours, "rb" if direction == "read" else "wb", closefd=not transport_owns(ours)
        )
        running = asyncio.get_running_loop()
        if direction == "read":
            reader = asyncio.StreamReader()
            transport, _ = await running.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), probe
            )
            os.write(write_end, b"output\n")
            os.close(write_end)
            assert await reader.read() == b"output\n"
        else:
            transport, _ = await running.connect_write_pipe(asyncio.Protocol, probe)
            transport.write(b"input\n")  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
            assert os.read(read_end, 100) == b"input\n"
            os.close(read_end)
        transport.close()
        await asyncio.sleep(0.05)
        probe.close()
        assert probe.opened is not None
        for fd in probe.opened:  # opened in between: still its owner's
            os.fstat(fd)
            os.close(fd)
        with pytest.raises(OSError):
            os.fstat(ours)  # and ours is closed

    LOOPS[loop](main())


def test_loop_file_owns_a_regular_file_and_a_pipe_only_outside_uvloop(tmp_path: Any) -> None:
    async def owners() -> tuple[bool, bool]:
        read_end, write_end = os.pipe()
        regular = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
        pipe_file, plain_file = loop_file(read_end, "rb"), loop_file(regular, "rb")
        owns = (pipe_file.closefd, plain_file.closefd)
        pipe_file.close()
        plain_file.close()
        if not owns[0]:
            os.close(read_end)
        os.close(write_end)
        return owns

    found: dict[str, tuple[bool, bool]] = {}

    async def record(name: str) -> None:
        found[name] = await owners()

    for name, run in LOOPS.items():
        run(record(name))
    assert found == {"uvloop": (False, True), "asyncio": (True, True)}
