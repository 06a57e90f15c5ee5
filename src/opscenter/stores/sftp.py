"""Backup objects on an SFTP server (asyncssh's SFTP client).

Key ``a/b/c`` is the file ``<root>/a/b/c`` on the server. A write goes to a hidden
``.<name>.<random>.partial`` beside the final name (unique per writer, so two writers of
one key never share a temp file), is fsync'ed (``fsync@openssh.com``, when offered) and
closed, then renamed: a plain SFTP rename for a new object (OpenSSH does ``link()`` +
``unlink()``, which refuses an existing name atomically), ``posix-rename@openssh.com``
to overwrite. :meth:`StorageWriter.abort` removes the partial; :meth:`cleanup_partials`
removes those left by interrupted runs. SFTP cannot fsync a directory, so the rename
itself is as durable as the server's file system makes it.

Connection, authentication and host-key pinning are those of
:func:`opscenter.remote.ssh.connect_ssh` (pinned on first use, fails closed on a
changed key). Errors are :class:`~opscenter.stores.backends.StorageError`:
``not_found``, ``exists``, ``disk_full`` (SFTPv5+ codes, a server message naming it, or
an OpenSSH ``Failure`` while ``statvfs`` shows the file system full), ``io_error``
(``retryable=True`` for a lost or unreachable connection), ``auth_failed`` and
``host_key_mismatch`` (permanent), ``invalid_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import asyncssh

from opscenter.core.closing import ClosesOnExit
from opscenter.core.failures import BackupError, ErrorCode, scrub
from opscenter.remote.ssh import (
    HostKeyInfo,
    HostKeyMismatch,
    SshConfig,
    close_connection,
    connect_ssh,
)
from opscenter.stores.backends import (
    PARTIAL_SUFFIX,
    AbortsUnlessCommitted,
    ObjectInfo,
    SpaceInfo,
    StorageBackend,
    StorageError,
    StorageReader,
    StorageWriter,
    _validate_prefix,
    exists_by_stat,
    validate_key,
)

__all__ = ["SftpStorage"]

_READ_CHUNK = 1 << 20
_T = TypeVar("_T")
_DISK_FULL_TEXT = ("no space", "disk full", "quota", "disk quota")
_CONNECTION_ERRORS = (
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    ConnectionError,
    TimeoutError,
)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.SFTPError):
        return str(exc.reason or type(exc).__name__)
    return str(exc) or type(exc).__name__


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, (asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)):
        return True
    return isinstance(exc, asyncssh.SFTPError) and any(
        t in _reason(exc).lower() for t in _DISK_FULL_TEXT
    )


class _SftpWriter(AbortsUnlessCommitted):
    def __init__(
        self,
        storage: SftpStorage,
        sftp: asyncssh.SFTPClient,
        key: str,
        final: str,
        tmp: str,
        fh: asyncssh.SFTPClientFile,
        overwrite: bool,
    ) -> None:
        self.key = key
        self._storage = storage
        self._sftp = sftp
        self._final = final
        self._tmp = tmp
        self._fh: asyncssh.SFTPClientFile | None = fh
        self._overwrite = overwrite
        self._written = 0
        self._done = False

    @property
    def bytes_written(self) -> int:
        return self._written

    @property
    def temp_path(self) -> str:
        return self._tmp

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._done or self._fh is None:
            raise StorageError("closed", f"writer for {self.key!r} is closed")
        if not data:
            return
        block = bytes(data)
        try:
            await self._fh.write(block, self._written)
        except (asyncssh.Error, OSError) as exc:
            err = await self._storage._failure(exc, f"writing {self.key!r}", need=len(block))
            await self.abort()
            raise err from None
        self._written += len(block)

    async def _commit(self) -> ObjectInfo:
        fh, self._fh = self._fh, None
        assert fh is not None
        try:
            if self._storage.fsync:
                with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                    await fh.fsync()
        finally:
            await fh.close()
        if self._overwrite:
            try:
                await self._sftp.posix_rename(self._tmp, self._final)
            except asyncssh.SFTPOpUnsupported:
                # No atomic replace offered: remove, then rename (a short window
                # where the key is absent; never a partial object under the key).
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                    await self._sftp.remove(self._final)
                await self._sftp.rename(self._tmp, self._final)
        else:
            try:
                await self._sftp.rename(self._tmp, self._final)
            except asyncssh.SFTPError as exc:
                if not isinstance(exc, _CONNECTION_ERRORS) and await _exists(
                    self._sftp, self._final
                ):
                    raise StorageError("exists", f"object {self.key!r} already exists") from None
                raise
        attrs = await self._sftp.stat(self._final)
        return ObjectInfo(self.key, int(attrs.size or 0), float(attrs.mtime or 0))

    async def commit(self) -> ObjectInfo:
        if self._done or self._fh is None:
            raise StorageError("closed", f"writer for {self.key!r} is closed")
        try:
            info = await self._commit()
        except StorageError:
            await self.abort()
            raise
        except (asyncssh.Error, OSError) as exc:
            err = await self._storage._failure(exc, f"committing {self.key!r}")
            await self.abort()
            raise err from None
        except BaseException:
            await self.abort()
            raise
        self._done = True
        return info

    async def _abort_remote(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fh.close(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._sftp.remove(self._tmp), 10)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        # Shielded: the partial is removed even when the caller is being cancelled.
        # (If the connection is gone, cleanup_partials removes it later.)
        await asyncio.shield(self._abort_remote())

    @property
    def finished(self) -> bool:
        return self._done


class _SftpReader(ClosesOnExit):
    def __init__(
        self,
        storage: SftpStorage,
        key: str,
        fh: asyncssh.SFTPClientFile,
        offset: int,
        length: int | None,
    ) -> None:
        self.key = key
        self._storage = storage
        self._fh: asyncssh.SFTPClientFile | None = fh
        self._offset = offset
        self._remaining = length

    async def read(self, size: int = _READ_CHUNK) -> bytes:
        if self._fh is None:
            raise StorageError("closed", f"reader for {self.key!r} is closed")
        if self._remaining is not None:
            size = min(size, self._remaining)
            if size <= 0:
                return b""
        try:
            data = await self._fh.read(size, self._offset)
        except (asyncssh.Error, OSError) as exc:
            raise await self._storage._failure(exc, f"reading {self.key!r}") from None
        assert isinstance(data, bytes)  # opened with encoding=None
        self._offset += len(data)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    async def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(Exception):
                await fh.close()


async def _exists(sftp: asyncssh.SFTPClient, path: str) -> bool:
    try:
        await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return False
    return True


def _is_file(attrs: asyncssh.SFTPAttrs) -> bool:
    return attrs.permissions is not None and stat.S_ISREG(attrs.permissions)


def _is_dir(attrs: asyncssh.SFTPAttrs) -> bool:
    return attrs.permissions is not None and stat.S_ISDIR(attrs.permissions)


class SftpStorage(ClosesOnExit):
    """Objects as files under ``root`` on an SFTP server (one reused connection)."""

    name = "sftp"

    def __init__(
        self,
        config: SshConfig,
        root: str = ".",
        *,
        fsync: bool = True,
        on_host_key: Callable[[HostKeyInfo], None] | None = None,
    ) -> None:
        if not root or "\x00" in root:
            raise StorageError("invalid_config", "the SFTP root must be a directory path")
        self.config = config
        self.root = root.rstrip("/") or "/"
        self.fsync = fsync
        self.on_host_key = on_host_key
        self._pinned: str | None = config.host_key
        self._host_key: HostKeyInfo | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ connection
    @property
    def host_key(self) -> HostKeyInfo | None:
        """The server's host key from the last connection (store it when not pinned)."""
        return self._host_key

    async def connect(self) -> HostKeyInfo:
        await self._client()
        assert self._host_key is not None
        return self._host_key

    async def _client(self) -> asyncssh.SFTPClient:
        async with self._lock:
            conn, sftp = self._conn, self._sftp
            if conn is not None and sftp is not None and not conn.is_closed():
                return sftp
            self._reset()
            try:
                conn, info = await connect_ssh(self.config, expected_host_key=self._pinned)
            except BackupError as exc:
                raise self._connect_error(exc) from None
            try:
                sftp = await asyncio.wait_for(
                    conn.start_sftp_client(), self.config.connect_timeout * 2
                )
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                conn.abort()
                raise StorageError(
                    "io_error",
                    f"no SFTP service on {self.config.label}: {_reason(exc)}",
                    retryable=True,
                ) from None
            self._conn, self._sftp, self._host_key = conn, sftp, info
            if self._pinned is None:
                self._pinned = info.public_key
                if self.on_host_key is not None:
                    self.on_host_key(info)
            return sftp

    def _connect_error(self, exc: BackupError) -> StorageError:
        if isinstance(exc, HostKeyMismatch):
            return StorageError("host_key_mismatch", exc.message)
        if exc.code is ErrorCode.AUTH_FAILED:
            return StorageError("auth_failed", exc.message)
        if exc.code is ErrorCode.INVALID_CONFIG:
            return StorageError("invalid_config", exc.message)
        return StorageError("io_error", exc.message, retryable=True)

    def _reset(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.abort()

    async def close(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        await close_connection(conn)

    # ------------------------------------------------------------------ errors
    async def _failure(self, exc: BaseException, what: str, *, need: int = 0) -> StorageError:
        """Classify ``exc``; an opaque OpenSSH ``Failure`` is checked against statvfs."""
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, asyncssh.SFTPFailure) and not _is_disk_full(exc):
            with contextlib.suppress(Exception):
                space = await asyncio.wait_for(self.space(), 10)
                if space.free_bytes is not None and space.free_bytes < need + (1 << 20):
                    return StorageError(
                        "disk_full", f"{what}: no space left on the SFTP server's file system"
                    )
        return self._error(exc, what)

    def _error(self, exc: BaseException, what: str) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        reason = scrub(_reason(exc), self.config.secrets())
        if _is_disk_full(exc):
            return StorageError("disk_full", f"{what}: no space left ({reason})")
        if isinstance(exc, (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath)):
            return StorageError("not_found", f"{what}: not found")
        if isinstance(exc, asyncssh.SFTPFileAlreadyExists):
            return StorageError("exists", f"{what}: already exists")
        if isinstance(exc, (asyncssh.SFTPPermissionDenied, asyncssh.SFTPWriteProtect)):
            return StorageError("io_error", f"{what}: permission denied")
        if isinstance(exc, _CONNECTION_ERRORS) or (
            isinstance(exc, OSError) and not isinstance(exc, asyncssh.SFTPError)
        ):
            self._reset()
            return StorageError(
                "io_error", f"{what}: connection to {self.config.label} lost", retryable=True
            )
        return StorageError("io_error", f"{what}: {reason}")

    async def _op(self, what: str, fn: Callable[[asyncssh.SFTPClient], Awaitable[_T]]) -> _T:
        """Run one short request; a connection that died while idle is replaced once."""
        for attempt in (1, 2):
            sftp = await self._client()
            try:
                return await fn(sftp)
            except StorageError:
                raise
            except (asyncssh.Error, OSError) as exc:
                err = self._error(exc, what)
                if attempt == 1 and err.retryable:
                    continue  # _error() dropped the connection; the next one re-checks the pin
                raise err from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ paths
    def path_for(self, key: str) -> str:
        return posixpath.join(self.root, *validate_key(key).split("/"))

    def _key_of(self, path: str) -> str:
        prefix = "" if self.root == "/" else self.root
        return path[len(prefix) :].lstrip("/")

    # ------------------------------------------------------------------ protocol
    async def open_writer(self, key: str, *, overwrite: bool = False) -> _SftpWriter:
        final = self.path_for(key)
        directory, name = posixpath.split(final)
        tmp = posixpath.join(directory, f".{name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")

        async def _open(sftp: asyncssh.SFTPClient) -> asyncssh.SFTPClientFile:
            if not overwrite and await _exists(sftp, final):
                raise StorageError("exists", f"object {key!r} already exists")
            await sftp.makedirs(directory, exist_ok=True)
            return await sftp.open(
                tmp,
                asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL,
                asyncssh.SFTPAttrs(permissions=0o600),
                encoding=None,
            )

        fh = await self._op(f"creating {key!r}", _open)
        assert self._sftp is not None
        return _SftpWriter(self, self._sftp, key, final, tmp, fh, overwrite)

    async def open_reader(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> _SftpReader:
        if offset < 0 or (length is not None and length < 0):
            raise StorageError("invalid_range", "offset and length must be >= 0")
        path = self.path_for(key)

        async def _open(sftp: asyncssh.SFTPClient) -> asyncssh.SFTPClientFile:
            fh = await sftp.open(path, asyncssh.FXF_READ, encoding=None)
            try:
                attrs = await fh.stat()
            except BaseException:
                await fh.close()
                raise
            if not _is_file(attrs):
                await fh.close()
                raise StorageError("not_found", f"{key!r} is not an object")
            return fh

        fh = await self._op(f"opening {key!r}", _open)
        return _SftpReader(self, key, fh, offset, length)

    async def stat(self, key: str) -> ObjectInfo:
        path = self.path_for(key)
        attrs = await self._op(f"stat {key!r}", lambda sftp: sftp.stat(path))
        if not _is_file(attrs):
            raise StorageError("not_found", f"{key!r} is not an object")
        return ObjectInfo(key, int(attrs.size or 0), float(attrs.mtime or 0))

    async def exists(self, key: str) -> bool:
        return await exists_by_stat(self, key)

    async def delete(self, key: str) -> None:
        path = self.path_for(key)

        async def _delete(sftp: asyncssh.SFTPClient) -> None:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(path)

        await self._op(f"deleting {key!r}", _delete)

    async def _scan(self, directory: str) -> tuple[list[asyncssh.SFTPName], list[str]]:
        """(regular files, subdirectory paths) of ``directory``, sorted; absent: empty."""

        async def _readdir(sftp: asyncssh.SFTPClient) -> list[asyncssh.SFTPName]:
            try:
                return list(await sftp.readdir(directory))
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                return []

        names = await self._op(f"listing {self._key_of(directory) or '/'!r}", _readdir)
        files: list[asyncssh.SFTPName] = []
        dirs: list[str] = []
        for entry in sorted(names, key=lambda n: str(n.filename)):
            fname = str(entry.filename)
            if fname in (".", ".."):
                continue
            if _is_dir(entry.attrs):
                dirs.append(posixpath.join(directory, fname))
            elif _is_file(entry.attrs):
                files.append(entry)
        return files, dirs

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        _validate_prefix(prefix)
        head, _, _ = prefix.rpartition("/")
        base = posixpath.join(self.root, *head.split("/")) if head else self.root
        stack = [base]
        while stack:
            directory = stack.pop()
            files, dirs = await self._scan(directory)
            for entry in files:
                fname = str(entry.filename)
                if fname.startswith(".") or fname.endswith(PARTIAL_SUFFIX):
                    continue
                key = self._key_of(posixpath.join(directory, fname))
                if key.startswith(prefix):
                    yield ObjectInfo(key, int(entry.attrs.size or 0), float(entry.attrs.mtime or 0))
            stack.extend(reversed([d for d in dirs if not posixpath.basename(d).startswith(".")]))

    async def signed_url(
        self, key: str, expires_seconds: int, *, download_name: str | None = None
    ) -> str | None:
        return None  # no URL of its own: the API streams the object

    async def space(self) -> SpaceInfo:
        async def _space(sftp: asyncssh.SFTPClient) -> SpaceInfo:
            await sftp.makedirs(self.root, exist_ok=True)
            try:
                st = await sftp.statvfs(self.root)
            except asyncssh.SFTPOpUnsupported:
                return SpaceInfo(None, None, None)
            total = st.blocks * st.frsize
            return SpaceInfo(total, total - st.bfree * st.frsize, st.bavail * st.frsize)

        return await self._op("statvfs", _space)

    async def cleanup_partials(self, older_than_seconds: float = 0.0) -> int:
        """Remove ``.*.partial`` files; ages use the server's mtimes against our clock."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        stack = [self.root]
        while stack:
            directory = stack.pop()
            files, dirs = await self._scan(directory)
            for entry in files:
                fname = str(entry.filename)
                if not (fname.startswith(".") and fname.endswith(PARTIAL_SUFFIX)):
                    continue
                if float(entry.attrs.mtime or 0) > cutoff:
                    continue
                path = posixpath.join(directory, fname)

                async def _remove(sftp: asyncssh.SFTPClient, path: str = path) -> bool:
                    try:
                        await sftp.remove(path)
                    except asyncssh.SFTPNoSuchFile:
                        return False
                    return True

                if await self._op(f"removing {self._key_of(path)!r}", _remove):
                    removed += 1
            stack.extend(dirs)
        return removed


if TYPE_CHECKING:  # static proof that the SFTP backend satisfies the protocols

    def _conforms(s: SftpStorage, w: _SftpWriter, r: _SftpReader) -> None:
        _b: StorageBackend = s
        _w: StorageWriter = w
        _r: StorageReader = r
