"""Runs one pipeline: worker threads, asyncio tasks and child processes as one unit.

The first failure anywhere (a stage raising, a process exiting non-zero, a stall, the
wall-clock limit, a cancel) kills every process group and aborts every channel, so
no stage is left blocked; the run then waits for all of them to stop before it
reports. The caller turns the collected facts into one classified error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from opscenter.core.failures import ErrorCode
from opscenter.remote.runner import RunningCommand
from opscenter.streaming.streams import Aborted, Channel

__all__ = ["ProcessExit", "RunFacts", "StageRunner", "lower_thread_priority"]

_CLEANUP_TIMEOUT = 30.0
#: Long-running stage threads plus the short ``in_thread`` calls, with room to spare
#: (a stage queued behind a full executor would deadlock the run).
_MAX_THREADS = 8


def lower_thread_priority(nice: int) -> None:
    """Add ``nice`` to the calling thread's niceness (Linux: a per-thread attribute;
    threads it starts, such as zstd's workers, inherit it). Best effort."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(19, current + nice))


class ProcessExit(Exception):
    def __init__(self, name: str, returncode: int) -> None:
        super().__init__(f"{name} exited with status {returncode}")
        self.name = name
        self.returncode = returncode


@dataclass
class RunFacts:
    #: Failures in the order they happened: (stage name, exception).
    failures: list[tuple[str, BaseException]] = field(default_factory=list)
    returncodes: dict[str, int] = field(default_factory=dict)
    #: Set when the run ended itself: ``stalled`` or ``time_limit``.
    abort_reason: ErrorCode | None = None
    #: True once this run killed the processes (then a signal exit is not "killed").
    killed: bool = False
    cancelled: bool = False

    def first_failure(self, *, ignore_aborted: bool = True) -> tuple[str, BaseException] | None:
        for name, exc in self.failures:
            if ignore_aborted and isinstance(exc, Aborted):
                continue
            return name, exc
        return None


class StageRunner:
    def __init__(
        self,
        *,
        stall_timeout: float | None = None,
        time_limit: float | None = None,
        tick: float = 0.25,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.stall_timeout = stall_timeout
        self.time_limit = time_limit
        self.tick = tick
        self.on_tick = on_tick
        self.facts = RunFacts()
        self.started = time.monotonic()
        self.last_activity = self.started
        self._channels: list[Channel[Any]] = []
        self._procs: list[RunningCommand] = []
        self._futures: dict[asyncio.Future[Any], str] = {}
        # Dedicated to this run (and shut down after it): a thread lowered in priority
        # never serves anyone else.
        self._executor = ThreadPoolExecutor(
            max_workers=_MAX_THREADS, thread_name_prefix="opscenter-stage"
        )
        self._abort_hooks: list[Callable[[], None]] = []

    # ----------------------------------------------------------------- registration
    def channel(self, maxsize: int = 4) -> Channel[Any]:
        ch: Channel[Any] = Channel(maxsize)
        self._channels.append(ch)
        return ch

    def activity(self) -> None:
        """Stages call this whenever bytes move (stall detection)."""
        self.last_activity = time.monotonic()

    def on_abort(self, hook: Callable[[], None]) -> None:
        self._abort_hooks.append(hook)

    def thread(self, name: str, fn: Callable[[], Any], *, nice: int = 0) -> asyncio.Future[Any]:
        """Run ``fn`` on a thread of this run; ``nice`` lowers that thread's CPU priority."""

        def body() -> Any:
            lower_thread_priority(nice)
            return fn()

        fut = asyncio.get_running_loop().run_in_executor(self._executor, body)
        self._futures[fut] = name
        return fut

    def task(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        fut = asyncio.ensure_future(coro)
        self._futures[fut] = name
        return fut

    def process(self, name: str, proc: RunningCommand, *, check: bool = True) -> None:
        self._procs.append(proc)

        async def _wait() -> int:
            rc = await proc.wait()
            self.facts.returncodes[name] = rc
            if check and rc != 0:
                raise ProcessExit(name, rc)
            return rc

        self.task(name, _wait())

    async def in_thread(self, fn: Callable[[], Any]) -> Any:
        """Run a short blocking call (e.g. ``channel.get``) on this run's executor."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # ----------------------------------------------------------------- control
    def abort(self) -> None:
        """Kill every process group and wake every blocked stage (idempotent)."""
        if self._procs and not self.facts.killed:
            self.facts.killed = any(p.returncode is None for p in self._procs)
        for proc in self._procs:
            proc.kill()
        for ch in self._channels:
            ch.abort()
        for hook in self._abort_hooks:
            with contextlib.suppress(Exception):
                hook()

    def _check_limits(self) -> None:
        now = time.monotonic()
        if self.facts.abort_reason is not None:
            return
        if self.time_limit is not None and now - self.started > self.time_limit:
            self.facts.abort_reason = ErrorCode.TIME_LIMIT
            self.abort()
        elif self.stall_timeout is not None and now - self.last_activity > self.stall_timeout:
            self.facts.abort_reason = ErrorCode.STALLED
            self.abort()

    async def run(self) -> RunFacts:
        pending: set[asyncio.Future[Any]] = set(self._futures)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=self.tick, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in done:
                    exc = fut.exception()
                    if exc is not None:
                        self.facts.failures.append((self._futures[fut], exc))
                        self.abort()
                self._check_limits()
                if self.on_tick is not None:
                    self.on_tick()
        except asyncio.CancelledError:
            self.facts.cancelled = True
            self.abort()
            await self._drain(pending)
            raise
        finally:
            self._executor.shutdown(wait=False)
        return self.facts

    async def _drain(self, pending: set[asyncio.Future[Any]]) -> None:
        """After an abort: wait (bounded) for every stage and process to stop."""
        if not pending:
            return
        with contextlib.suppress(BaseException):
            await asyncio.wait(pending, timeout=_CLEANUP_TIMEOUT)
        for fut in pending:
            if fut.done() and not fut.cancelled():
                fut.exception()  # mark retrieved
            elif not fut.done():
                fut.cancel()
