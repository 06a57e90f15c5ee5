"""Run dump/restore tools inside a container with ``docker exec``.

:class:`DockerRunner` is a :class:`~opscenter.remote.runner.CommandRunner` that wraps
another runner: :class:`~opscenter.remote.runner.LocalRunner` for containers on this
host, :class:`~opscenter.remote.ssh.SshRunner` for containers on an SSH host. Each
command becomes ``docker exec -i CONTAINER /bin/sh -c <boot loop>`` on that host, fed
the wrapper script of :mod:`opscenter.remote.shell` on stdin, followed by the tool's
own input. So, as over SSH, passwords and secret files never appear in any argv (a
``docker exec -e PGPASSWORD=...`` would show them to ``ps`` on the host).

Killing the ``docker exec`` client does not stop what it started in the container, so
:meth:`DockerProcess.kill` signals the tool's process group inside the container (the
wrapper's marker names it; ``docker exec`` makes the wrapper a session leader) with a
second ``docker exec``, removes its secret files there, and only then ends the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import signal
import threading
from typing import TYPE_CHECKING

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.remote.runner import (
    Command,
    CommandRunner,
    CompletedCommand,
    RunningCommand,
    StderrCallback,
)
from opscenter.remote.shell import (
    Marker,
    boot_loop,
    glob_on,
    kill_script,
    new_sentinel,
    parse_marker,
    which_on,
    wrapper_script,
)

__all__ = ["CONTAINER_NAME", "DockerProcess", "DockerRunner"]

#: Docker's own rule for container names (an id is a name of hex digits).
CONTAINER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CHUNK = 1 << 20
_POLL = 0.01
_MAPPED_SIGNALS = range(129, 128 + 65)


def _feed(dst: int, head: bytes, src: int | None) -> None:
    """Write ``head`` then copy ``src`` to ``dst`` until EOF; closes both fds.

    Runs in a thread: the reader (the docker client) may take its time. A reader that
    went away (EPIPE) ends the copy; closing ``src`` then lets the writer on the other
    side of it see EPIPE too, as it would with a local tool.
    """
    try:
        view = memoryview(head)
        while view:
            view = view[os.write(dst, view) :]
        if src is None:
            return
        while True:
            try:
                n = os.splice(src, dst, _CHUNK)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                data = os.read(src, _CHUNK)  # not a pipe: copy through user space
                n = len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(dst, view) :]
            if n == 0:
                return
    except OSError:
        return
    finally:
        os.close(dst)
        if src is not None:
            os.close(src)


def _read_all(fd: int) -> bytes:
    parts = []
    try:
        while chunk := os.read(fd, _CHUNK):
            parts.append(chunk)
    finally:
        os.close(fd)
    return b"".join(parts)


class _WithoutMarker:
    """Passes the client's stderr on without the wrapper's marker line: lines are held
    back only until the marker went by, then chunks flow through as they come."""

    def __init__(self, sentinel: str, on_stderr: StderrCallback) -> None:
        self._sentinel = sentinel.encode()
        self._on_stderr = on_stderr
        self._head = b""
        self._seen = False

    def __call__(self, chunk: bytes) -> None:
        if self._seen:
            self._on_stderr(chunk)
            return
        *lines, self._head = (self._head + chunk).split(b"\n")
        for line in lines:
            if self._seen:
                self._on_stderr(line + b"\n")
            elif self._sentinel in line:
                self._seen = True
            else:
                self._on_stderr(line + b"\n")
        if self._seen and self._head:
            self._on_stderr(self._head)
            self._head = b""

    def flush(self) -> None:
        head, self._head = self._head, b""
        if head and self._sentinel not in head:
            self._on_stderr(head)


class DockerProcess:
    """A command running in the container. ``pid`` is the wrapper's pid in there."""

    def __init__(
        self,
        command: Command,
        runner: DockerRunner,
        client: RunningCommand,
        sentinel: str,
        stderr_filter: _WithoutMarker | None = None,
    ) -> None:
        self.command = command
        self._stderr_filter = stderr_filter
        self._runner = runner
        self._client = client
        self._sentinel = sentinel
        self._marker: Marker | None = None
        self._kill_task: asyncio.Task[None] | None = None
        self._killed_with: int | None = None

    def _client_stderr(self) -> str:
        return self._client.stderr_tail(64 * 1024)

    def _scan(self) -> Marker | None:
        if self._marker is None:
            for line in self._client_stderr().splitlines():
                marker = parse_marker(line.encode(), self._sentinel.encode())
                if marker is not None:
                    self._marker = marker
                    break
        return self._marker

    async def started(self, limit: float) -> Marker:
        """Wait for the wrapper's marker (or the client's exit: ``Marker("none")``)."""
        deadline = asyncio.get_running_loop().time() + limit
        while (marker := self._scan()) is None:
            if self._client.returncode is not None:
                await self._client.wait()  # the stderr is complete now
                return self._scan() or Marker("none")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError
            await asyncio.sleep(_POLL)
        return marker

    @property
    def pid(self) -> int | None:
        return self._marker.pid if self._marker else None

    def _map(self, rc: int | None) -> int | None:
        # The wrapper shell reports a tool killed by signal N as 128 + N.
        marker = self._marker
        if rc is not None and rc in _MAPPED_SIGNALS and marker is not None and marker.state == "ok":
            with contextlib.suppress(ValueError):
                return -int(signal.Signals(rc - 128))
        return rc

    @property
    def returncode(self) -> int | None:
        return self._map(self._client.returncode)

    async def wait(self) -> int:
        rc = await self._client.wait()
        if self._stderr_filter is not None:
            self._stderr_filter.flush()
        task = self._kill_task
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), self._runner.kill_timeout * 2)
        mapped = self._map(rc)
        assert mapped is not None
        return mapped

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self._client.returncode is not None:
            return
        if self._killed_with is None:
            self._killed_with = int(sig)
        if self._kill_task is None or self._kill_task.done():
            self._kill_task = asyncio.ensure_future(self._kill(int(sig)))

    async def _signal_inside(self, sig: int) -> bool:
        marker = self._scan()
        if marker is None or marker.state != "ok" or not marker.pid:
            return False
        script = kill_script(marker, signal.Signals(sig).name[3:])
        try:
            res = await self._runner.host.run(
                self._runner.exec_command(("/bin/sh", "-c", script), interactive=False),
                limit_seconds=self._runner.kill_timeout / 2,
            )
        except Exception:
            return False
        return res.returncode == 0

    async def _kill(self, sig: int) -> None:
        signalled = await self._signal_inside(sig)
        if signalled and sig != signal.SIGKILL:
            return  # the tool decides how to end; the client follows it
        if signalled:
            # The client exits once it has passed on the output already on its way; a
            # reader that stopped reading would hold it forever.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._client.wait()), 2.0)
        self._client.kill(sig)
        if not signalled:
            # The signal did not get in (the engine busy, the marker not seen yet): with
            # the client gone, once more; killing only the client leaves the tool running.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._client.wait()), 2.0)
            await self._signal_inside(sig)

    def stderr_tail(self, limit: int = 4000) -> str:
        lines = [ln for ln in self._client_stderr().splitlines() if self._sentinel not in ln]
        return "\n".join(lines)[-limit:].strip()


class DockerRunner:
    """Runs commands in ``container`` through ``host`` (where the docker CLI runs)."""

    name = "docker"

    def __init__(
        self,
        host: CommandRunner,
        container: str,
        *,
        docker: str = "docker",
        kill_timeout: float = 10.0,
        start_timeout: float = 30.0,
    ) -> None:
        if not CONTAINER_NAME.match(container):
            raise ValueError(f"invalid container name {container!r}")
        self.host = host
        self.container = container
        self.docker = docker
        self.kill_timeout = kill_timeout
        self.start_timeout = start_timeout

    def exec_command(
        self, argv: tuple[str, ...], *, interactive: bool = True, secrets: tuple[str, ...] = ()
    ) -> Command:
        flags = ("-i",) if interactive else ()
        return Command((self.docker, "exec", *flags, self.container, *argv), secrets=secrets)

    async def _spawn(
        self,
        command: Command,
        *,
        stdin: int | None,
        stdout: int | None,
        input: bytes | None = None,
        on_stderr: StderrCallback | None = None,
    ) -> DockerProcess:
        sentinel = new_sentinel()
        script = wrapper_script(
            command,
            sentinel,
            stdin_null=stdin is None and input is None,
            stdout_null=stdout is None,
            extra_path=(),
        )
        client_command = self.exec_command(
            ("/bin/sh", "-c", boot_loop(sentinel)), secrets=command.secrets
        )
        stderr_filter = _WithoutMarker(sentinel, on_stderr) if on_stderr is not None else None
        rfd, wfd = os.pipe()
        src = os.dup(stdin) if stdin is not None else None
        feeder = threading.Thread(
            target=_feed, args=(wfd, script + (input or b""), src), daemon=True
        )
        try:
            client = await self.host.start(
                client_command, stdin=rfd, stdout=stdout, on_stderr=stderr_filter
            )
        except FileNotFoundError:
            for fd in (wfd, src):
                if fd is not None:
                    os.close(fd)
            raise BackupError(
                ErrorCode.TOOL_MISSING,
                f"the docker command is not installed where container {self.container} runs",
                stage="connect",
            ) from None
        except BaseException:
            for fd in (wfd, src):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            os.close(rfd)
        feeder.start()
        proc = DockerProcess(command, self, client, sentinel, stderr_filter)
        try:
            marker = await proc.started(self.start_timeout)
        except BaseException:
            proc.kill()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(proc.wait(), self.kill_timeout)
            raise
        if marker.state == "ok":
            return proc
        await proc.wait()
        where = f"in container {self.container}"
        if marker.state == "missing":
            raise FileNotFoundError(errno.ENOENT, f"Not found {where}", command.argv[0])
        if marker.state == "nocwd":
            raise FileNotFoundError(errno.ENOENT, f"No such directory {where}", command.cwd)
        if marker.state == "nosecret":
            raise OSError(errno.EIO, f"cannot create a private temp directory {where}")
        said = proc.stderr_tail(500)
        raise BackupError(
            ErrorCode.UNREACHABLE,
            f"cannot run commands in container {self.container}"
            + (f": {said.splitlines()[-1]}" if said else "")
            + "; check that the container exists and is running",
            stage="connect",
            detail=said,
        )

    async def start(
        self,
        command: Command,
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        on_stderr: StderrCallback | None = None,
    ) -> DockerProcess:
        return await self._spawn(command, stdin=stdin, stdout=stdout, on_stderr=on_stderr)

    async def run(
        self, command: Command, *, input: bytes | None = None, limit_seconds: float = 60.0
    ) -> CompletedCommand:
        rfd, wfd = os.pipe()
        try:
            proc = await self._spawn(command, stdin=None, stdout=wfd, input=input)
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        reader = asyncio.ensure_future(asyncio.to_thread(_read_all, rfd))
        try:
            rc = await asyncio.wait_for(proc.wait(), limit_seconds)
            out = await reader
        except BaseException:
            proc.kill()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(proc.wait(), self.kill_timeout)
            raise
        return CompletedCommand(rc, out, proc.stderr_tail(64 * 1024))

    async def which(self, name: str) -> str | None:
        return await which_on(self, name)

    async def glob(self, pattern: str) -> list[str]:
        return await glob_on(self, pattern)


if TYPE_CHECKING:  # static proof that the docker runner satisfies the protocols

    def _conforms(r: DockerRunner, p: DockerProcess) -> None:
        _r: CommandRunner = r
        _p: RunningCommand = p
