"""Bounded plumbing between pipeline stages, and the compression codecs.

Stages run on worker threads and hand blocks to each other through a :class:`Channel`
(bounded: the producer blocks when the consumer is slow, so memory stays constant
whatever the dump size). Aborting a channel wakes every thread blocked on it, which is
how a failure or a cancel stops the whole pipeline.

Copies are kept to what the codecs need: the dump is read into a small pool of reused
buffers (:class:`BufferPool`), the compressor copies from them into its own window, and
every later stage passes the ``bytes`` objects it was given along without re-slicing
them (:class:`ChannelReader`, :class:`BlockWriter`, :class:`HoldBack`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import zlib
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import IO, Any, Final, Generic, TypeVar, cast

import zstandard

from opscenter.core.failures import BackupError, ErrorCode

__all__ = [
    "BLOCK_SIZE",
    "PIPE_SIZES",
    "Aborted",
    "BlockWriter",
    "BufferPool",
    "Channel",
    "ChannelReader",
    "Compression",
    "Compressor",
    "Decompressor",
    "HashingReader",
    "HoldBack",
    "ZstdFrameTracker",
    "enlarge_pipe",
    "make_compressor",
    "write_all",
]

BLOCK_SIZE: Final = 1 << 20
#: Kernel buffer sizes tried for the pipes to and from the tools, largest first. Above
#: ``/proc/sys/fs/pipe-max-size`` (1 MiB by default) only a privileged process succeeds.
PIPE_SIZES: Final = (4 << 20, 1 << 20)

T = TypeVar("T")


def enlarge_pipe(fd: int, sizes: tuple[int, ...] = PIPE_SIZES) -> int:
    """Grow a pipe's kernel buffer to the first of ``sizes`` allowed; return the new size.

    The default 64 KiB makes the dump tool and our reader take turns every 64 KiB; a
    few MiB let the tool run ahead while a stage is descheduled (Linux only; 0 elsewhere).
    """
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return 0
    for size in sizes:
        with contextlib.suppress(OSError):
            return int(fcntl.fcntl(fd, setpipe, size))
    return 0


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until everything is written (pipes take partial writes)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Aborted(Exception):
    """The pipeline was aborted (failure elsewhere, cancel, stall, time limit)."""


class Channel(Generic[T]):
    """A bounded, closeable, abortable FIFO between threads."""

    def __init__(self, maxsize: int = 8) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False
        self._aborted = False

    def put(self, item: T) -> None:
        with self._cond:
            while len(self._items) >= self._maxsize and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted
            if self._closed:
                raise RuntimeError("put() on a closed channel")
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        """End of stream: ``get`` returns ``None`` once the queue is drained."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self) -> T | None:
        with self._cond:
            while not self._items and not self._closed and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return None

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def aborted(self) -> bool:
        return self._aborted


class BufferPool:
    """``count`` reusable buffers of ``size`` bytes: the reader fills one while the
    compressor works on another, and nothing is allocated per block."""

    def __init__(self, count: int = 4, size: int = BLOCK_SIZE) -> None:
        self._free: Channel[bytearray] = Channel(count)
        for _ in range(count):
            self._free.put(bytearray(size))

    def take(self) -> bytearray:
        buf = self._free.get()
        assert buf is not None  # the free list is never closed
        return buf

    def give(self, buf: bytearray) -> None:
        self._free.put(buf)

    def abort(self) -> None:
        self._free.abort()


class ChannelReader:
    """A file-like ``read(n)`` over a channel of ``bytes`` (what pyrage's ``*_io`` pulls
    from). A read that takes a whole block returns it as is (no copy)."""

    def __init__(self, channel: Channel[bytes]) -> None:
        self._channel = channel
        self._item = b""
        self._pos = 0
        self._eof = False
        self.error: BaseException | None = None

    def _next(self) -> bytes | None:
        return self._channel.get()

    def read(self, size: int = -1, /) -> bytes:
        try:
            while self._pos >= len(self._item) and not self._eof:
                item = self._next()
                if item is None:
                    self._eof = True
                else:
                    self._item, self._pos = item, 0
        except BaseException as exc:
            self.error = exc
            raise OSError(f"pipeline input aborted: {exc!r}") from exc
        item, pos = self._item, self._pos
        left = len(item) - pos
        if left <= 0:
            return b""
        if size < 0 or size >= left:
            self._item, self._pos = b"", 0
            return item if pos == 0 else item[pos:]
        self._pos = pos + size
        return item[pos : pos + size]

    def readable(self) -> bool:
        return True


class HashingReader(ChannelReader):
    """A channel reader that hashes and counts every block it takes.

    At end of stream it checks the total against the expected size and sha256 and
    raises (before returning EOF to the consumer) if they differ; the consumer then
    never sees a clean end of a corrupt object.
    """

    def __init__(
        self,
        channel: Channel[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
    ) -> None:
        super().__init__(channel)
        self._hash = hashlib.sha256()
        self.size = 0
        self._expected_sha256 = expected_sha256
        self._expected_size = expected_size
        self.mismatch: BackupError | None = None

    def _next(self) -> bytes | None:
        item = self._channel.get()
        if item is None:
            self._check()
            return None
        self._hash.update(item)
        self.size += len(item)
        return item

    def _check(self) -> None:
        digest = self._hash.hexdigest()
        if self._expected_size is not None and self.size != self._expected_size:
            self.mismatch = BackupError(
                ErrorCode.CHECKSUM_MISMATCH,
                f"stored object is {self.size} bytes, the manifest says {self._expected_size}",
                stage="verify",
            )
        elif self._expected_sha256 is not None and digest != self._expected_sha256.lower():
            self.mismatch = BackupError(
                ErrorCode.CHECKSUM_MISMATCH,
                f"sha256 of the stored object is {digest}, "
                f"the manifest says {self._expected_sha256}",
                stage="verify",
            )
        if self.mismatch is not None:
            raise self.mismatch

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class BlockWriter:
    """A file-like ``write`` that regroups output into ~1 MiB blocks for ``emit``.

    Records the first failure in ``error`` (pyrage swallows exceptions raised while
    it flushes on drop, so the caller checks this after the producer returns).
    """

    def __init__(self, emit: Callable[[bytes], None], block_size: int = BLOCK_SIZE) -> None:
        self._emit = emit
        self._parts: list[bytes] = []
        self._pending = 0
        self._block = block_size
        self.error: BaseException | None = None
        self.size = 0

    def write(self, data: bytes, /) -> int:
        if self.error is not None:
            raise OSError("pipeline output failed") from self.error
        n = len(data)
        # The producer may reuse its buffer after write() returns: keep only bytes.
        self._parts.append(data if type(data) is bytes else bytes(data))
        self._pending += n
        self.size += n
        if self._pending >= self._block:
            self._push()
        return n

    def _push(self) -> None:
        parts, self._parts, self._pending = self._parts, [], 0
        block = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            self._emit(block)
        except BaseException as exc:
            self.error = exc
            raise OSError(f"pipeline output failed: {exc!r}") from exc

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True

    def finish(self) -> None:
        if self.error is not None:
            raise self.error
        if self._parts:
            self._push()
        if self.error is not None:
            raise self.error


class HoldBack:
    """Passes blocks to ``write`` while always withholding at least the last ``keep``
    bytes, which :meth:`release` hands over once the whole input is proven good.

    Blocks are queued by reference (no copying); at most ``keep`` plus one block is
    held. ``on_written`` is told the size of every block handed over.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        keep: int,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self._write = write
        self._keep = keep
        self._on_written = on_written
        self._held: deque[bytes] = deque()
        self._held_bytes = 0

    def push(self, block: bytes) -> None:
        if not block:
            return
        self._held.append(block)
        self._held_bytes += len(block)
        while self._held_bytes - len(self._held[0]) >= self._keep:
            self._hand_over(self._held.popleft())

    def _hand_over(self, block: bytes) -> None:
        self._held_bytes -= len(block)
        self._write(block)
        if self._on_written is not None:
            self._on_written(len(block))

    def release(self) -> None:
        while self._held:
            self._hand_over(self._held.popleft())

    @property
    def held_bytes(self) -> int:
        return self._held_bytes


# --------------------------------------------------------------------------- codecs


class Compression(StrEnum):
    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"

    @property
    def suffix(self) -> str:
        return {"zstd": ".zst", "gzip": ".gz", "none": ""}[self.value]


class Compressor:
    """``compress(block) -> bytes`` and ``flush() -> bytes``; the C code releases the GIL."""

    def __init__(self, compress: Callable[[Any], bytes], flush: Callable[[], bytes]) -> None:
        self.compress = compress
        self.flush = flush


def make_compressor(kind: Compression, level: int | None = None, threads: int = 0) -> Compressor:
    """zstd (default level 3, ``threads`` workers; 0 = one per core, -1 = none), gzip (6)."""
    if kind is Compression.ZSTD:
        # zstandard: threads=-1 means one worker per core, 0 means no worker threads.
        workers = 0 if threads == -1 else (threads if threads > 0 else -1)
        cctx = zstandard.ZstdCompressor(
            level=3 if level is None else level, write_checksum=True, threads=workers
        )
        cobj = cctx.compressobj(size=-1)
        return Compressor(cobj.compress, lambda: cobj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
    if kind is Compression.GZIP:
        zobj = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
        return Compressor(zobj.compress, zobj.flush)
    # The caller may reuse its buffer: the identity "compressor" must copy.
    return Compressor(bytes, lambda: b"")


class ZstdFrameTracker:
    """Follows the zstd frame structure of a byte stream to tell if it ended cleanly.

    zstandard's streaming decoders return a clean EOF on a stream cut at any point;
    this parser of frame and block headers (RFC 8878 section 3.1) does not.
    """

    _MAGIC = 0xFD2FB528

    def __init__(self) -> None:
        self._need = 4  # bytes wanted by the current state
        self._state = "magic"
        self._hdr = bytearray()
        self._skip = 0
        self._checksum = False
        self.frames = 0
        self.error: str | None = None

    @property
    def complete(self) -> bool:
        return (
            self.error is None
            and self._state == "magic"
            and not self._hdr
            and not self._skip
            and self.frames > 0
        )

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and self.error is None:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            take = min(self._need - len(self._hdr), len(view))
            self._hdr += view[:take]
            view = view[take:]
            if len(self._hdr) == self._need:
                self._advance()

    def _advance(self) -> None:
        hdr = bytes(self._hdr)
        self._hdr.clear()
        state = self._state
        if state == "magic":
            magic = int.from_bytes(hdr, "little")
            if magic == self._MAGIC:
                self._state, self._need = "fhd", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = "skippable", 4
            else:
                self.error = "not a zstd frame"
        elif state == "skippable":
            self._skip = int.from_bytes(hdr, "little")
            self._state, self._need = "magic", 4
            self.frames += 1
        elif state == "fhd":
            fhd = hdr[0]
            fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
            self._checksum = bool((fhd >> 2) & 1)
            fcs = (1 if single else 0) if fcs_flag == 0 else (2, 4, 8)[fcs_flag - 1]
            rest = (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + fcs
            if rest:
                self._skip = rest
            self._state, self._need = "block", 3
        elif state == "block":
            bh = int.from_bytes(hdr, "little")
            last, btype, size = bh & 1, (bh >> 1) & 3, bh >> 3
            if btype == 3:
                self.error = "reserved zstd block type"
                return
            self._skip = 1 if btype == 1 else size
            if last:
                if self._checksum:
                    self._skip += 4
                self.frames += 1
                self._state, self._need = "magic", 4
            else:
                self._need = 3


class _EmitSink:
    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit

    def write(self, data: bytes) -> int:
        self._emit(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None


class Decompressor:
    """Push-mode decompression with bounded output blocks handed to ``emit``.

    ``finish()`` raises ``decompress_failed`` if the stream was cut short.
    """

    def __init__(self, kind: Compression, emit: Callable[[bytes], None]) -> None:
        self.kind = kind
        self._emit = emit
        self.size = 0
        self._tracker: ZstdFrameTracker | None = None
        self._zwriter: zstandard.ZstdDecompressionWriter | None = None
        self._gz: zlib._Decompress | None = None
        if kind is Compression.ZSTD:
            self._tracker = ZstdFrameTracker()
            sink = cast("IO[bytes]", _EmitSink(self._count_emit))
            self._zwriter = zstandard.ZstdDecompressor().stream_writer(
                sink, write_size=BLOCK_SIZE, closefd=False
            )
        elif kind is Compression.GZIP:
            self._gz = zlib.decompressobj(31)

    def _count_emit(self, data: bytes) -> None:
        self.size += len(data)
        self._emit(data)

    def feed(self, data: bytes) -> None:
        try:
            if self._zwriter is not None and self._tracker is not None:
                self._tracker.feed(data)
                if self._tracker.error:
                    raise BackupError(
                        ErrorCode.DECOMPRESS_FAILED,
                        f"corrupt zstd stream: {self._tracker.error}",
                        stage="decompress",
                    )
                self._zwriter.write(data)
            elif self._gz is not None:
                self._feed_gzip(data)
            else:
                self._count_emit(data)
        except zstandard.ZstdError as exc:
            raise BackupError(
                ErrorCode.DECOMPRESS_FAILED, f"corrupt zstd stream: {exc}", stage="decompress"
            ) from exc
        except zlib.error as exc:
            raise BackupError(
                ErrorCode.DECOMPRESS_FAILED, f"corrupt gzip stream: {exc}", stage="decompress"
            ) from exc

    def _feed_gzip(self, data: bytes) -> None:
        assert self._gz is not None
        while data:
            out = self._gz.decompress(data, BLOCK_SIZE)
            if out:
                self._count_emit(out)
            if self._gz.eof:
                data = self._gz.unused_data
                if data:  # concatenated gzip members, as `gzip -c a b` makes
                    self._gz = zlib.decompressobj(31)
            else:
                data = self._gz.unconsumed_tail
        # Drain output still buffered inside zlib without new input.
        while not self._gz.eof:
            out = self._gz.decompress(b"", BLOCK_SIZE)
            if not out:
                break
            self._count_emit(out)

    def finish(self) -> None:
        if self._zwriter is not None and self._tracker is not None:
            try:
                self._zwriter.flush()  # type: ignore[no-untyped-call]
            except zstandard.ZstdError as exc:
                raise BackupError(
                    ErrorCode.DECOMPRESS_FAILED, f"corrupt zstd stream: {exc}", stage="decompress"
                ) from exc
            if not self._tracker.complete:
                raise BackupError(
                    ErrorCode.DECOMPRESS_FAILED,
                    "the zstd stream is truncated (no complete final frame)",
                    stage="decompress",
                )
        elif self._gz is not None and not self._gz.eof:
            raise BackupError(
                ErrorCode.DECOMPRESS_FAILED, "the gzip stream is truncated", stage="decompress"
            )
