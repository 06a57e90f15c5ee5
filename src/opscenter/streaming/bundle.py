"""A parallel backup as one download: a tar of its parts and its manifest.

Streamed from storage as it is read (nothing staged); its size is known beforehand
(the headers are built from the manifest), so it is sent with a Content-Length. The
members have the objects' own names, so ``tar -xf`` gives the files the documented
manual restore (``docs/restore-parts.sh``) expects, manifest included.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator
from datetime import datetime

from opscenter.stores.backends import StorageBackend
from opscenter.streaming.manifest import MANIFEST_SUFFIX, Manifest
from opscenter.streaming.streams import BLOCK_SIZE

__all__ = ["bundle_name", "bundle_size", "bundle_stream"]

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
