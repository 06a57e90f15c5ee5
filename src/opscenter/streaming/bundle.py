"""A parallel backup as one file: a tar of its parts and its manifest.

Streamed from storage as it is read (nothing staged); its size is known beforehand
(the headers are built from the manifest), so it is sent with a Content-Length. The
members have the objects' own names, so ``tar -xf`` gives the files the documented
manual restore (``docs/restore-parts.sh``) expects, manifest included.
:class:`TarReader` reads such a tar back as it arrives (an upload), member by member.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator
from datetime import datetime

from opscenter.stores.backends import StorageBackend
from opscenter.streaming.manifest import MANIFEST_SUFFIX, Manifest
from opscenter.streaming.streams import BLOCK_SIZE

__all__ = ["TarReader", "bundle_name", "bundle_size", "bundle_stream"]

_BLOCK = tarfile.BLOCKSIZE
#: The end of a tar archive: two zero blocks.
_END = b"\0" * (2 * _BLOCK)


def bundle_name(manifest: Manifest) -> str:
    return manifest.key.rsplit("/", 1)[-1] + ".tar"


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _members(manifest: Manifest) -> list[tuple[str | None, str, int]]:
    """``(storage key or None for the manifest, member name, size)`` in restore order."""
    members: list[tuple[str | None, str, int]] = [
        (p.key, p.key.rsplit("/", 1)[-1], p.size_bytes) for p in manifest.part_manifests()
    ]
    name = manifest.key.rsplit("/", 1)[-1] + MANIFEST_SUFFIX
    members.append((None, name, len(manifest.to_json())))
    return members


def _mtime(manifest: Manifest) -> float:
    return datetime.fromisoformat(manifest.created_at).timestamp()


def bundle_size(manifest: Manifest) -> int:
    mtime = _mtime(manifest)
    return sum(
        len(_header(n, s, mtime)) + s + len(_pad(s)) for _, n, s in _members(manifest)
    ) + len(_END)


async def bundle_stream(storage: StorageBackend, manifest: Manifest) -> AsyncIterator[bytes]:
    """The tar, read part by part from ``storage``."""
    mtime = _mtime(manifest)
    for key, name, size in _members(manifest):
        yield _header(name, size, mtime)
        if key is None:
            yield manifest.to_json()
        else:
            reader = await storage.open_reader(key)
            async with reader:
                while chunk := await reader.read(BLOCK_SIZE):
                    yield chunk
        yield _pad(size)
    yield _END


class TarReader:
    """Members of a tar arriving as a byte stream: ustar headers, with the pax
    extended header's ``path`` (long names). Anything else is refused."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._buf = bytearray()
        self._left = 0  # bytes of the current member not yet read
        self._pad = 0

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = await anext(self._body, None)
            if chunk is None:
                return False
            self._buf += chunk
        return True

    async def _take(self, n: int) -> bytes:
        if not await self._fill(n):
            raise ValueError("the tar ends in the middle of a member")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def next_member(self) -> tuple[str, int] | None:
        """``(name, size)`` of the next file, or ``None`` at the end of the archive."""
        while self._left:
            await self.read()
        await self._take(self._pad)
        path = None
        while True:
            block = await self._take(_BLOCK)
            if block == b"\0" * _BLOCK:
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
            except tarfile.TarError as exc:
                raise ValueError(str(exc)) from None
            if info.type == tarfile.XHDTYPE:
                path = _pax_path(await self._take(info.size + len(_pad(info.size))), info.size)
                continue
            if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                raise ValueError(f"{info.name}: only regular files belong in a backup's tar")
            self._left, self._pad = info.size, len(_pad(info.size))
            return path or info.name, info.size

    async def read(self) -> bytes:
        """The next piece of the current member (``b""`` at its end)."""
        if not self._left:
            return b""
        if not self._buf and not await self._fill(1):
            raise ValueError("the tar ends in the middle of a member")
        n = min(self._left, len(self._buf), BLOCK_SIZE)
        self._left -= n
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def _pax_path(data: bytes, size: int) -> str | None:
    """The ``path`` record of a pax extended header ("LEN path=VALUE\n" records)."""
    records = data[:size]
    while records:
        length, _, rest = records.partition(b" ")
        n = int(length)
        key, _, value = rest[: n - len(length) - 2].partition(b"=")
        if key == b"path":
            return value.decode("utf-8")
        records = records[n:]
    return None
