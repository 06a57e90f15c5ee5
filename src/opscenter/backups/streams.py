"""Bounded plumbing between pipeline stages, and the compression codecs.

Stages run on worker threads and hand ``bytes`` blocks to each other through a
:class:`Channel` (bounded: the producer blocks when the consumer is slow, so memory
stays constant whatever the dump size). Aborting a channel wakes every thread
blocked on it, which is how a failure or a cancel stops the whole pipeline.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import IO, Final, cast

import zstandard

from opscenter.backups.errors import BackupError, ErrorCode

__all__ = [
    "BLOCK_SIZE",
    "Aborted",
    "Channel",
    "ChannelReader",
    "Compression",
    "Compressor",
    "Decompressor",
    "HashingReader",
    "ZstdFrameTracker",
    "make_compressor",
]

BLOCK_SIZE: Final = 1 << 20


class Aborted(Exception):
    """The pipeline was aborted (failure elsewhere, cancel, stall, time limit)."""


class Channel:
    """A bounded, closeable, abortable FIFO of byte blocks between threads."""

    def __init__(self, maxsize: int = 8) -> None:
        self._items: deque[bytes] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False
        self._aborted = False

    def put(self, item: bytes) -> None:
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

    def get(self) -> bytes | None:
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


class ChannelReader:
    """A file-like ``read(n)`` over a channel (what pyrage's ``*_io`` pulls from)."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._buf = memoryview(b"")
        self._eof = False
        self.error: BaseException | None = None

    def _next(self) -> bytes | None:
        return self._channel.get()

    def read(self, size: int = -1, /) -> bytes:
        try:
            while not self._buf and not self._eof:
                item = self._next()
                if item is None:
                    self._eof = True
                else:
                    self._buf = memoryview(item)
        except BaseException as exc:
            self.error = exc
            raise OSError(f"pipeline input aborted: {exc!r}") from exc
        if not self._buf:
            return b""
        if size < 0 or size >= len(self._buf):
            out, self._buf = self._buf, memoryview(b"")
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return bytes(out)

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
        channel: Channel,
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
        self._buf = bytearray()
        self._block = block_size
        self.error: BaseException | None = None
        self.size = 0

    def write(self, data: bytes, /) -> int:
        if self.error is not None:
            raise OSError("pipeline output failed") from self.error
        self._buf += data
        self.size += len(data)
        if len(self._buf) >= self._block:
            self._push()
        return len(data)

    def _push(self) -> None:
        block, self._buf = bytes(self._buf), bytearray()
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
        if self._buf:
            self._push()
        if self.error is not None:
            raise self.error


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

    def __init__(self, compress: Callable[[bytes], bytes], flush: Callable[[], bytes]) -> None:
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
    return Compressor(lambda b: b, lambda: b"")


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
