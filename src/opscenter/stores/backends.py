"""Storage backends for backup artifacts.

A backend stores opaque objects under string keys (``"pg/prod/2024-05-01T0300Z.dump.zst.age"``).
The protocol is async and streaming: a writer receives chunks and makes the object
visible only on :meth:`StorageWriter.commit`; :meth:`StorageWriter.abort` (or any error)
leaves nothing behind.  The shape fits the backends planned next:

* local disk (here): temp name in the same directory, fsync, atomic rename, fsync dir;
* S3: ``open_writer`` starts a multipart upload, ``write`` buffers to part size and
  uploads parts, ``commit`` completes the upload, ``abort`` aborts it;
  ``cleanup_partials`` aborts stale multipart uploads;
* SFTP: write ``<key>.partial``, rename on commit, remove on abort.

Keys are ``/``-separated relative paths of safe segments; anything else is refused
with ``StorageError(code="invalid_key")`` before touching the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from opscenter.core.closing import ClosesOnExit

__all__ = [
    "PARTIAL_SUFFIX",
    "LocalStorage",
    "ObjectInfo",
    "SpaceInfo",
    "StorageBackend",
    "StorageError",
    "StorageReader",
    "StorageWriter",
    "validate_key",
]

PARTIAL_SUFFIX = ".partial"
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@,-]*$")
_MAX_KEY = 1024
_READ_CHUNK = 1 << 20


class StorageError(Exception):
    """A storage failure with a stable machine code.

    Codes: ``invalid_key``, ``not_found``, ``exists``, ``disk_full``, ``io_error``,
    ``closed``.  ``retryable`` tells transient failures (network, 5xx) from permanent.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # POSIX timestamp


@dataclass(frozen=True, slots=True)
class SpaceInfo:
    """Capacity of the backend; ``None`` where the backend cannot tell (S3)."""

    total_bytes: int | None
    used_bytes: int | None
    free_bytes: int | None


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``invalid_key``."""
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise StorageError("invalid_key", "key must be a non-empty string of at most 1024 chars")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError("invalid_key", f"invalid key {key!r}: absolute or illegal characters")
    for seg in key.split("/"):
        if seg in ("", ".", "..") or not _SEGMENT.match(seg):
            raise StorageError("invalid_key", f"invalid key {key!r}: bad segment {seg!r}")
        if seg.endswith(PARTIAL_SUFFIX):
            raise StorageError("invalid_key", f"invalid key {key!r}: reserved suffix")
    return key


def _validate_prefix(prefix: str) -> str:
    if prefix == "":
        return prefix
    stripped = prefix.rstrip("/")
    validate_key(stripped)
    return prefix


@runtime_checkable
class StorageWriter(Protocol):
    """A streaming upload. Use as ``async with``: an exception aborts it."""

    key: str

    @property
    def bytes_written(self) -> int: ...

    async def write(self, data: bytes | bytearray | memoryview) -> None: ...

    async def commit(self) -> ObjectInfo:
        """Make the whole object durable and visible; idempotent failures abort."""
        ...

    async def abort(self) -> None:
        """Discard everything written; safe to call more than once or after commit fails."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class StorageReader(Protocol):
    """A streaming download of a whole object or a byte range."""

    key: str

    async def read(self, size: int = _READ_CHUNK) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of the object or range."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class StorageBackend(Protocol):
    name: str

    async def open_writer(self, key: str, *, overwrite: bool = False) -> StorageWriter: ...

    async def open_reader(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> StorageReader: ...

    async def stat(self, key: str) -> ObjectInfo:
        """Raise ``StorageError("not_found")`` if absent."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; absent objects are not an error (idempotent)."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Committed objects whose key starts with ``prefix`` (partials never listed)."""
        ...

    async def space(self) -> SpaceInfo: ...

    async def signed_url(
        self, key: str, expires_seconds: int, *, download_name: str | None = None
    ) -> str | None:
        """A time-limited URL a browser can download the object from directly, or None if
        this store has none. ``download_name`` names the saved file."""
        ...

    async def cleanup_partials(self, older_than_seconds: float = 0.0) -> int:
        """Remove leftovers of interrupted writes; return how many were removed."""
        ...


async def exists_by_stat(backend: StorageBackend, key: str) -> bool:
    """`exists` through `stat`, whose StorageError("not_found") means: no such object."""
    try:
        await backend.stat(key)
    except StorageError as exc:
        if exc.code == "not_found":
            return False
        raise
    return True


class AbortsUnlessCommitted(ABC):
    """`async with` aborts a writer that is left on an error or without a commit."""

    @property
    @abstractmethod
    def finished(self) -> bool:
        """Committed or aborted."""

    @abstractmethod
    async def abort(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is not None or not self.finished:
            await self.abort()


def _os_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError("disk_full", f"{what}: no space left on the storage device")
    if exc.errno == errno.ENOENT:
        return StorageError("not_found", f"{what}: not found")
    if exc.errno == errno.EROFS:
        return StorageError("io_error", f"{what}: read-only file system")
    return StorageError("io_error", f"{what}: {exc.strerror or exc}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalWriter(AbortsUnlessCommitted):
    def __init__(self, storage: LocalStorage, key: str, final: Path, overwrite: bool) -> None:
        self.key = key
        self._storage = storage
        self._final = final
        self._overwrite = overwrite
        self._tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")
        self._fd: int | None = None
        self._written = 0
        self._done = False
        self._linked = False  # the object is visible under its name (commit got that far)
        # Serialises the worker-thread write and commit with abort, so the fd is never
        # closed (and possibly reused) while a write to it is in flight.
        self._io_lock = threading.Lock()

    @property
    def bytes_written(self) -> int:
        return self._written

    @property
    def temp_path(self) -> Path:
        return self._tmp

    def _open(self) -> None:
        self._final.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self._tmp, flags, 0o600)

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._io_lock:
            if self._fd is None:
                raise StorageError("closed", f"writer for {self.key!r} was aborted")
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._done or self._fd is None:
            raise StorageError("closed", f"writer for {self.key!r} is closed")
        if not data:
            return
        try:
            await asyncio.to_thread(self._write_all, data)
        except OSError as exc:
            await self.abort()
            raise _os_error(exc, f"writing {self.key!r}") from exc
        self._written += len(data)

    def _commit_sync(self) -> ObjectInfo:
        with self._io_lock:  # an abort meanwhile waits, then takes the object back
            if self._fd is None:
                raise StorageError("closed", f"writer for {self.key!r} was aborted")
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            if self._overwrite:
                os.replace(self._tmp, self._final)
            else:
                # link() refuses an existing name atomically (no check-then-rename race).
                os.link(self._tmp, self._final)
                self._linked = True
                os.unlink(self._tmp)
        _fsync_dir(self._final.parent)
        st = self._final.stat()
        return ObjectInfo(self.key, st.st_size, st.st_mtime)

    async def commit(self) -> ObjectInfo:
        if self._done or self._fd is None:
            raise StorageError("closed", f"writer for {self.key!r} is closed")
        try:
            info = await asyncio.to_thread(self._commit_sync)
        except FileExistsError as exc:
            await self.abort()
            raise StorageError("exists", f"object {self.key!r} already exists") from exc
        except OSError as exc:
            await self.abort()
            raise _os_error(exc, f"committing {self.key!r}") from exc
        self._done = True
        return info

    def _abort_sync(self) -> None:
        with self._io_lock:
            self._close_and_unlink()
            if self._linked:
                # A commit whose caller was cancelled ended in its thread: the object it
                # made visible goes too (a replaced one cannot come back, so that stays).
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._final)

    def _close_and_unlink(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        # Synchronous on purpose: abort must complete even inside a cancelled task.
        self._abort_sync()

    @property
    def finished(self) -> bool:
        return self._done


class _LocalReader(ClosesOnExit):
    def __init__(self, key: str, path: Path, offset: int, length: int | None) -> None:
        self.key = key
        self._path = path
        self._remaining = length
        self._offset = offset
        self._fh: int | None = None

    def _open(self) -> None:
        self._fh = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        if self._offset:
            os.lseek(self._fh, self._offset, os.SEEK_SET)

    def _read(self, size: int) -> bytes:
        assert self._fh is not None
        return os.read(self._fh, size)

    async def read(self, size: int = _READ_CHUNK) -> bytes:
        if self._fh is None:
            raise StorageError("closed", f"reader for {self.key!r} is closed")
        if self._remaining is not None:
            size = min(size, self._remaining)
            if size <= 0:
                return b""
        try:
            data = await asyncio.to_thread(self._read, size)
        except OSError as exc:
            raise _os_error(exc, f"reading {self.key!r}") from exc
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    async def close(self) -> None:
        if self._fh is not None:
            os.close(self._fh)
            self._fh = None


class LocalStorage:
    """Objects as files under ``root``; ``key`` ``a/b/c`` is the file ``root/a/b/c``."""

    name = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def path_for(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        # Defence in depth: a symlinked directory must not lead outside the root.
        parent = path.parent
        if parent.exists() and not parent.resolve().is_relative_to(self.root):
            raise StorageError("invalid_key", f"key {key!r} escapes the storage root")
        return path

    async def open_writer(self, key: str, *, overwrite: bool = False) -> _LocalWriter:
        final = self.path_for(key)
        if not overwrite and final.exists():
            raise StorageError("exists", f"object {key!r} already exists")
        writer = _LocalWriter(self, key, final, overwrite)
        try:
            await asyncio.to_thread(writer._open)
        except OSError as exc:
            raise _os_error(exc, f"creating {key!r}") from exc
        return writer

    async def open_reader(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> _LocalReader:
        if offset < 0 or (length is not None and length < 0):
            raise StorageError("invalid_range", "offset and length must be >= 0")
        reader = _LocalReader(key, self.path_for(key), offset, length)
        try:
            await asyncio.to_thread(reader._open)
        except OSError as exc:
            raise _os_error(exc, f"opening {key!r}") from exc
        return reader

    async def stat(self, key: str) -> ObjectInfo:
        path = self.path_for(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except OSError as exc:
            raise _os_error(exc, f"stat {key!r}") from exc
        if not path.is_file():
            raise StorageError("not_found", f"{key!r} is not an object")
        return ObjectInfo(key, st.st_size, st.st_mtime)

    async def exists(self, key: str) -> bool:
        return await exists_by_stat(self, key)

    async def delete(self, key: str) -> None:
        path = self.path_for(key)

        def _delete() -> None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            _fsync_dir(path.parent)

        try:
            await asyncio.to_thread(_delete)
        except OSError as exc:
            raise _os_error(exc, f"deleting {key!r}") from exc

    def _walk(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        # Start from the deepest directory the prefix names, to avoid walking everything.
        base = self.root
        head, _, _ = prefix.rpartition("/")
        if head:
            base = self.root.joinpath(*head.split("/"))
        if not base.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith(".") or fname.endswith(PARTIAL_SUFFIX):
                    continue
                full = Path(dirpath, fname)
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return out

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        _validate_prefix(prefix)
        for info in await asyncio.to_thread(self._walk, prefix):
            yield info

    async def signed_url(
        self, key: str, expires_seconds: int, *, download_name: str | None = None
    ) -> str | None:
        return None  # no URL of its own: the API streams the object

    async def space(self) -> SpaceInfo:
        def _space() -> SpaceInfo:
            self.root.mkdir(parents=True, exist_ok=True)
            st = os.statvfs(self.root)
            total = st.f_blocks * st.f_frsize
            free = st.f_bavail * st.f_frsize
            return SpaceInfo(total, total - st.f_bfree * st.f_frsize, free)

        return await asyncio.to_thread(_space)

    async def cleanup_partials(self, older_than_seconds: float = 0.0) -> int:
        def _cleanup() -> int:
            removed = 0
            cutoff = time.time() - older_than_seconds
            if not self.root.is_dir():
                return 0
            for dirpath, _dirnames, filenames in os.walk(self.root):
                for fname in filenames:
                    if not (fname.startswith(".") and fname.endswith(PARTIAL_SUFFIX)):
                        continue
                    full = Path(dirpath, fname)
                    try:
                        if full.stat().st_mtime <= cutoff:
                            full.unlink()
                            removed += 1
                    except FileNotFoundError:
                        continue
            return removed

        return await asyncio.to_thread(_cleanup)


if TYPE_CHECKING:  # static proof that the local backend satisfies the protocols

    def _conforms(s: LocalStorage, w: _LocalWriter, r: _LocalReader) -> None:
        _b: StorageBackend = s
        _w: StorageWriter = w
        _r: StorageReader = r
