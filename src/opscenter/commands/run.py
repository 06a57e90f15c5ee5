"""Running one rendered command on one target, over the server's own transport.

The command runs under a small watchdog wrapper on the target itself: the target kills
the whole process group when the time is up, even if this server lost the connection
(closing an SSH channel does not stop what it started). Here, cancellation and a second,
later deadline kill the group through the runner (`RunningCommand.kill`).

stdout arrives through a pipe and stderr through the runner's `on_stderr` stream; each is
cut into lines, and each line goes to its log file (the whole output, exact bytes, secret
values masked), to the live stream (marked with its stream), and into the capped copy
kept in the database row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opscenter.core.pipes import loop_file
from opscenter.models import ResultStatus
from opscenter.remote.runner import Command, CommandRunner

#: What a database row keeps of each stream; the log file keeps everything.
ROW_CAP = 64 * 1024
#: Our own deadline comes this long after the target's watchdog.
GRACE_SECONDS = 5.0
MASK = b"********"

# $1 = seconds, $2 = the script. The watchdog subshell kills the process group (0) when the
# time is up, and stands down (TERM) when the script ends first: its trap names `$!`, so a
# TERM that comes just after the sleep started still ends it. Neither holds the output
# pipes (only fd 3, a copy of stderr, for its message), so nothing keeps them open.
WATCHDOG = (
    'sh -c "$2" & c=$!\n'
    "( trap 'kill $! 2>/dev/null; exit 0' TERM; sleep \"$1\" 3>&- & wait $!; "
    "printf '\\nopscenter: timed out after %ss, killing the command\\n' \"$1\" >&3; "
    "kill -KILL 0 ) 3>&2 >/dev/null 2>&1 & w=$!\n"
    "wait $c; rc=$?\n"
    "kill -TERM $w 2>/dev/null; wait $w 2>/dev/null\n"
    "exit $rc\n"
)


def shell_command(script: str, timeout: int, env: dict[str, str] | None = None) -> Command:
    return Command(("/bin/sh", "-c", WATCHDOG, "opscenter", str(timeout), script), env=env or {})


def watched(command: Command, timeout: int) -> Command:
    """A tool's argv (psql ...) under the same watchdog, as one quoted script."""
    script = "exec " + " ".join(shlex.quote(a) for a in command.argv)
    return Command(
        ("/bin/sh", "-c", WATCHDOG, "opscenter", str(timeout), script),
        env=command.env,
        secret_files=command.secret_files,
        secrets=command.secrets,
    )


@dataclass
class Outcome:
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    truncated: bool
    duration: float
    error: str | None = None


def _scrub(data: bytes, secrets: tuple[bytes, ...]) -> bytes:
    for s in secrets:
        data = data.replace(s, MASK)
    return data


class _Stream:
    """One output stream: cut into lines, masked, all of it to the log file, the first
    ROW_CAP bytes kept for the row, each line passed on live."""

    def __init__(
        self,
        log_dir: Path,
        name: str,
        secrets: tuple[str, ...],
        on_line: Callable[[str, str], None],
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.secrets = tuple(s.encode() for s in secrets if s)
        self.on_line = on_line
        self.head = bytearray()
        self.total = 0
        self.truncated = False
        self.timed_out = False  # the watchdog said so (its message is on stderr)
        self._pending = b""
        self._fh = open(log_dir / name, "wb")  # noqa: SIM115 (closed in close())

    def feed(self, chunk: bytes) -> None:
        if self._fh.closed:  # a straggler after the end (the runner waits only so long)
            return
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            self._add(line + b"\n")
        if len(self._pending) > 1 << 16:  # a very long line (or binary output): pass it on
            self._add(self._pending)
            self._pending = b""

    def _add(self, line: bytes) -> None:
        line = _scrub(line, self.secrets)
        self._fh.write(line)
        self.total += len(line)
        room = ROW_CAP - len(self.head)
        if room > 0:
            self.head += line[:room]
        if len(line) > room:
            self.truncated = True
        self.timed_out = self.timed_out or line.startswith(b"opscenter: timed out after ")
        self.on_line(self.name, line.removesuffix(b"\n").decode("utf-8", "replace"))

    def close(self) -> None:
        if self._pending:
            self._add(self._pending)
            self._pending = b""
        self._fh.close()

    def text(self) -> str:
        return self.head.decode("utf-8", "replace")


async def run_on(
    runner: CommandRunner,
    command: Command,
    *,
    limit_seconds: int,
    log_dir: Path,
    on_line: Callable[[str, str], None],
) -> Outcome:
    """Run `command` (already wrapped by `shell_command`/`watched`) to its end."""
    out = _Stream(log_dir, "stdout", command.secrets, on_line)
    err = _Stream(log_dir, "stderr", command.secrets, on_line)
    started = time.monotonic()
    rfd, wfd = os.pipe()
    proc = None
    try:
        try:
            proc = await runner.start(command, stdout=wfd, on_stderr=err.feed)
        finally:
            os.close(wfd)
        reader = asyncio.create_task(_pump(rfd, out))
        rfd = -1
        try:
            async with asyncio.timeout(limit_seconds + GRACE_SECONDS):
                rc = await proc.wait()
                await reader
        except TimeoutError:
            proc.kill()
            rc = await _reap(proc)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(reader, 5)
        except asyncio.CancelledError:
            proc.kill()
            await asyncio.shield(_reap(proc))
            reader.cancel()
            raise
    except FileNotFoundError as exc:
        return _failed(started, f"not found where it runs: {exc.filename or exc}")
    finally:
        if rfd >= 0:
            os.close(rfd)
        out.close()
        err.close()
    duration = time.monotonic() - started
    timed_out = duration >= limit_seconds and (rc < 0 or err.timed_out)
    if timed_out:
        status = ResultStatus.TIMED_OUT
    else:
        status = ResultStatus.COMPLETED if rc == 0 else ResultStatus.FAILED
    return Outcome(
        status=status,
        exit_code=rc,
        stdout=out.text(),
        stderr=err.text(),
        stdout_bytes=out.total,
        stderr_bytes=err.total,
        truncated=out.truncated or err.truncated,
        duration=duration,
        error=f"timed out after {limit_seconds} s; the command was killed" if timed_out else None,
    )


async def _reap(proc: object) -> int:
    wait = getattr(proc, "wait")  # noqa: B009
    try:
        return int(await asyncio.wait_for(wait(), 20))
    except TimeoutError:
        return -9


def _failed(started: float, message: str) -> Outcome:
    return Outcome(
        ResultStatus.FAILED, None, "", message, 0, 0, False, time.monotonic() - started, message
    )


async def _pump(fd: int, out: _Stream) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), loop_file(fd, "rb")
    )
    try:
        while chunk := await reader.read(1 << 16):
            out.feed(chunk)
    finally:
        transport.close()
