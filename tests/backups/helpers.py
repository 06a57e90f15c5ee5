"""Test doubles that wrap the real runner and storage (fault injection, observation)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.remote.runner import (
    Command,
    CommandRunner,
    CompletedCommand,
    LocalProcess,
    LocalRunner,
)
from opscenter.stores.backends import LocalStorage, StorageError
from opscenter.streaming.manifest import Manifest, read_manifest
from opscenter.streaming.sources import DumpPlan, Engine
from opscenter.streaming.verification import deep_verify, quick_verify


class RecordingRunner(LocalRunner):
    """A LocalRunner that remembers every process it started or ran."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[LocalProcess] = []
        self.commands: list[Command] = []
        self.ran: list[Command] = []  # short commands run to completion

    async def start(
        self, command: Command, *, stdin: int | None = None, stdout: int | None = None
    ) -> LocalProcess:
        self.commands.append(command)
        proc = await super().start(command, stdin=stdin, stdout=stdout)
        self.started.append(proc)
        return proc

    async def run(
        self, command: Command, *, input: bytes | None = None, limit_seconds: float = 60.0
    ) -> CompletedCommand:
        self.ran.append(command)
        return await super().run(command, input=input, limit_seconds=limit_seconds)


class _HookedWriter:
    def __init__(self, inner: Any, storage: HookedStorage) -> None:
        self._inner = inner
        self._storage = storage
        self.key = inner.key

    @property
    def bytes_written(self) -> int:
        return int(self._inner.bytes_written)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        s = self._storage
        if s.fail_after is not None and self._inner.bytes_written + len(data) > s.fail_after:
            raise StorageError("disk_full", "injected: no space left on device")
        stalled = s.stall_key is not None and s.stall_key in self.key
        if stalled or (s.stall_after is not None and self._inner.bytes_written >= s.stall_after):
            s.stalls += 1
            await asyncio.Event().wait()  # never set: a server that stopped answering
        if s.delay:
            await asyncio.sleep(s.delay)
        if s.paused is not None:
            await s.paused.wait()
        await self._inner.write(data)
        if s.on_write is not None:
            s.on_write(self._inner.bytes_written)

    async def commit(self) -> Any:
        return await self._inner.commit()

    async def abort(self) -> None:
        await self._inner.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._inner.__aexit__(et, e, tb)


class HookedStorage(LocalStorage):
    """LocalStorage whose writers can be slowed, observed, or made to fail."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.delay = 0.0
        self.on_write: Callable[[int], None] | None = None
        self.fail_after: int | None = None
        #: Once a writer holds this many bytes, its writes hang until cancelled.
        self.stall_after: int | None = None
        #: The writes of an object whose key contains this hang from the first one.
        self.stall_key: str | None = None
        self.stalls = 0  # writes hanging (or that hung) on stall_after or stall_key
        #: When set, writes wait until it is set again (the pipeline backs up to the dump).
        self.paused: asyncio.Event | None = None

    async def open_writer(self, key: str, *, overwrite: bool = False) -> Any:  # type: ignore[override]
        inner = await super().open_writer(key, overwrite=overwrite)
        if key.endswith(".manifest.json"):
            return inner
        return _HookedWriter(inner, self)


@dataclass(frozen=True)
class ShellSource:
    """A fake dump source running a shell snippet (slow, stalling or failing dumps)."""

    script: str
    engine: Engine = Engine.FILES

    @property
    def label(self) -> str:
        return "shell"

    async def plan(self, runner: CommandRunner) -> DumpPlan:
        return DumpPlan(
            command=Command(("sh", "-c", self.script)),
            engine=self.engine,
            database="shell",
            tool="sh",
            tool_version="sh",
            server_version=None,
            extension="tar",
            dump_format="tar",
        )

    def classify_failure(self, returncode: int, stderr: str) -> ErrorCode:
        return ErrorCode.DUMP_FAILED


def process_gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    import os

    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pg = fields[0], int(fields[2])
        if pg == pgid and state not in ("Z", "X"):
            out.append(int(entry))
    return out


def group_gone(pgid: int, wait: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + wait
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pgrep(pattern: str) -> list[str]:
    """Processes on this host whose command line contains ``pattern`` (this host also
    sees the loopback SSH host's and the containers' processes)."""
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def damage_a_data_part(storage: LocalStorage, key: str) -> Manifest:
    """Flip one byte in the middle of a parallel backup's first data part (same size), and
    check that quick and deep verification both refuse it. The backup's manifest."""
    manifest = await read_manifest(storage, key)
    damaged = storage.path_for(manifest.parts[2].key)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupError) as err:
        await quick_verify(storage, manifest)
    assert err.value.code is ErrorCode.CHECKSUM_MISMATCH
    with pytest.raises(BackupError) as err:  # the codec may see the damage before the hash
        await deep_verify(storage, manifest)
    assert err.value.code in (ErrorCode.CHECKSUM_MISMATCH, ErrorCode.VERIFY_FAILED)
    return manifest
