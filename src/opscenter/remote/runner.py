"""The transport seam: where and how a dump/restore command runs.

A source never starts a process itself. It describes a :class:`Command` (argv, extra
environment, secret files it needs, secrets to scrub from messages) and a
:class:`CommandRunner` runs it. :class:`LocalRunner` runs it as a local subprocess in
its own process group. An SSH or ``docker exec`` runner can be added later by
wrapping ``argv`` (``ssh host -- <shlex.join(argv)>``), passing ``env`` through a
remote ``env`` wrapper fed on stdin, and materialising ``secret_files`` on the remote
side with mode 0600; sources and the pipeline do not change.

Secret files are referenced in ``argv`` by their placeholder (``SecretFile.ref``);
the local runner hands each to the command as an inherited in-memory file
(``/dev/fd/N``), so no secret is ever written to disk, even by a process killed mid-job.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from opscenter.core.failures import scrub

__all__ = [
    "Command",
    "CommandRunner",
    "CompletedCommand",
    "LocalProcess",
    "LocalRunner",
    "RunningCommand",
    "SecretFile",
    "StderrCallback",
]

#: Receives each chunk of a command's stderr as it arrives (exact bytes, not scrubbed:
#: the caller knows what to mask). It must not block; the tail is kept either way.
StderrCallback = Callable[[bytes], None]

_STDERR_TAIL = 64 * 1024
#: How long a probe (a tool's --version, a server's version query) may take.
PROBE_TIMEOUT = 30.0


def _own_group() -> dict[str, Any]:
    """Each command leads its own process group (so a kill reaches everything it started)
    but stays in our session: with autogroup scheduling (Linux's default on most
    distributions) a new session is a new scheduling group competing with the database
    for the CPU on equal terms; in ours, the dump tool keeps priority over our own
    lower-priority compression threads. uvloop (the server's loop) has no
    `process_group`, so there each command gets a new session instead."""
    if type(asyncio.get_running_loop()).__module__.startswith("uvloop"):
        return {"start_new_session": True}
    return {"process_group": 0}


# Variables that would silently change what a client tool connects to or how it
# authenticates; the command's own env sets what it needs explicitly.
_STRIPPED_ENV_PREFIXES = ("PG", "MYSQL", "OPSCENTER_")


@dataclass(frozen=True, slots=True)
class SecretFile:
    """A file with secret content that a command needs (e.g. a MySQL defaults file)."""

    name: str
    content: bytes

    @property
    def ref(self) -> str:
        """Placeholder to put in argv; the runner replaces it with the file's path."""
        return f"@@secret-file:{self.name}@@"


@dataclass(frozen=True, slots=True)
class Command:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    secret_files: tuple[SecretFile, ...] = ()
    #: Values that must never appear in messages derived from this command's output.
    secrets: tuple[str, ...] = ()
    #: Directory to run in (``None``: the runner's default).
    cwd: str | None = None

    @property
    def tool(self) -> str:
        return os.path.basename(self.argv[0]) if self.argv else ""

    def display(self) -> str:
        """The argv for logs: secret-file placeholders kept, secrets scrubbed."""
        return scrub(" ".join(self.argv), self.secrets)


@dataclass(frozen=True, slots=True)
class CompletedCommand:
    returncode: int
    stdout: bytes
    stderr: str  # scrubbed


@runtime_checkable
class RunningCommand(Protocol):
    """A started command. ``stdout``/``stdin`` are the file descriptors given to start()."""

    command: Command

    @property
    def pid(self) -> int | None: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int:
        """Wait for exit (and for stderr to be drained); clean up secret files."""
        ...

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group; no error if it is already gone."""
        ...

    def stderr_tail(self, limit: int = 4000) -> str:
        """The last ``limit`` characters of stderr, scrubbed of the command's secrets."""
        ...


@runtime_checkable
class CommandRunner(Protocol):
    async def start(
        self,
        command: Command,
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        on_stderr: StderrCallback | None = None,
    ) -> RunningCommand:
        """Start ``command``; ``stdin``/``stdout`` are fds (``None``: /dev/null).
        ``on_stderr`` gets the whole stderr as a stream, before ``wait()`` returns."""
        ...

    async def run(
        self, command: Command, *, input: bytes | None = None, limit_seconds: float = 60.0
    ) -> CompletedCommand:
        """Run a short command to completion and capture its (small) output."""
        ...

    async def which(self, name: str) -> str | None:
        """Path of an executable on the runner's host, or ``None``."""
        ...

    async def glob(self, pattern: str) -> list[str]:
        """Paths matching ``pattern`` on the runner's host."""
        ...


def _base_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
    # English, stable messages so failures can be classified; UTF-8 for file names.
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"
    env.update(extra)
    return env


class _SecretFds:
    """Each secret file as an anonymous in-memory file (memfd), inherited by the command
    and named ``/dev/fd/N`` in its argv: nothing on disk, so nothing outlives a crash."""

    def __init__(self, files: Sequence[SecretFile]) -> None:
        self.paths: dict[str, str] = {}
        self.fds: list[int] = []
        try:
            for f in files:
                fd = os.memfd_create(f.name, os.MFD_CLOEXEC)
                self.fds.append(fd)
                os.fchmod(fd, 0o600)  # the MySQL tools ignore a world-writable option file
                os.write(fd, f.content)
                self.paths[f.ref] = f"/dev/fd/{fd}"
        except BaseException:
            self.remove()
            raise

    def substitute(self, argv: Sequence[str]) -> list[str]:
        out = []
        for arg in argv:
            for ref, path in self.paths.items():
                arg = arg.replace(ref, path)
            out.append(arg)
        return out

    def remove(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


class LocalProcess:
    def __init__(
        self,
        command: Command,
        proc: asyncio.subprocess.Process,
        secrets: _SecretFds,
        on_stderr: StderrCallback | None = None,
    ) -> None:
        self.command = command
        self._on_stderr = on_stderr
        self._proc = proc
        self._secrets = secrets
        self._stderr: deque[bytes] = deque()
        self._stderr_len = 0
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())
        self._pgid = proc.pid  # process_group=0: the child leads its own group

    async def _drain_stderr(self) -> None:
        stream = self._proc.stderr
        if stream is None:
            return
        while True:
            chunk = await stream.read(8192)
            if not chunk:
                return
            if self._on_stderr is not None:
                self._on_stderr(chunk)
            self._stderr.append(chunk)
            self._stderr_len += len(chunk)
            while self._stderr_len - len(self._stderr[0]) > _STDERR_TAIL:
                self._stderr_len -= len(self._stderr.popleft())

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        try:
            rc = await self._proc.wait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), timeout=5)
            return rc
        finally:
            self._secrets.remove()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, sig)
        if self._proc.returncode is None:
            # In case the leader left its group. Not Popen.send_signal(): it polls with
            # waitpid() and can reap the child behind asyncio's child watcher, which
            # then reports exit status 255 instead of the signal (a wrong root cause).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._proc.pid, sig)

    def stderr_tail(self, limit: int = 4000) -> str:
        text = b"".join(self._stderr).decode("utf-8", "replace")
        return scrub(text, self.command.secrets)[-limit:].strip()

    def cleanup_now(self) -> None:
        self._secrets.remove()


class LocalRunner:
    """Runs commands as local subprocesses, each in a new process group."""

    name = "local"

    def __init__(self, *, extra_path: Sequence[str] = ()) -> None:
        self._extra_path = list(extra_path)

    def _env(self, command: Command) -> dict[str, str]:
        env = _base_env(command.env)
        if self._extra_path:
            env["PATH"] = os.pathsep.join([*self._extra_path, env.get("PATH", "")])
        return env

    async def start(
        self,
        command: Command,
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        on_stderr: StderrCallback | None = None,
    ) -> LocalProcess:
        secrets = _SecretFds(command.secret_files)
        try:
            argv = secrets.substitute(command.argv)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self._env(command),
                cwd=command.cwd,
                pass_fds=secrets.fds,
                **_own_group(),
            )
        except BaseException:
            secrets.remove()
            raise
        return LocalProcess(command, proc, secrets, on_stderr)

    async def run(
        self, command: Command, *, input: bytes | None = None, limit_seconds: float = 60.0
    ) -> CompletedCommand:
        secrets = _SecretFds(command.secret_files)
        try:
            proc = await asyncio.create_subprocess_exec(
                *secrets.substitute(command.argv),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env(command),
                cwd=command.cwd,
                pass_fds=secrets.fds,
                **_own_group(),
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(input), limit_seconds)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(proc.wait(), 5)
                raise
            assert proc.returncode is not None
            return CompletedCommand(
                proc.returncode, out, scrub(err.decode("utf-8", "replace"), command.secrets)
            )
        finally:
            secrets.remove()

    async def which(self, name: str) -> str | None:
        path = os.environ.get("PATH", "")
        if self._extra_path:
            path = os.pathsep.join([*self._extra_path, path])
        return shutil.which(name, path=path)

    async def glob(self, pattern: str) -> list[str]:
        return sorted(glob.glob(pattern))


if TYPE_CHECKING:  # static proof that the local runner satisfies the protocols

    def _conforms(r: LocalRunner, p: LocalProcess) -> None:
        _r: CommandRunner = r
        _p: RunningCommand = p


async def start_piped(runner: CommandRunner, command: Command) -> tuple[RunningCommand, int, int]:
    """Start `command` with a pipe into its stdin and one out of its stdout, for a client
    kept open as a session (a snapshot, a lock): the process, the write end of its input
    and the read end of its output (the caller closes both)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        proc = await runner.start(command, stdin=in_r, stdout=out_w)
    except BaseException:
        for fd in (in_w, out_r):
            os.close(fd)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    return proc, in_w, out_r


def read_lines_until(fd: int, marker: str) -> list[str]:
    """Lines read from `fd` (blocking) up to and including the line `marker`, or to EOF."""
    data = b""
    end = marker.encode() + b"\n"
    while not data.endswith(end):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").splitlines()
