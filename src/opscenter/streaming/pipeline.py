"""The streaming backup pipeline.

::

    dump process stdout ─pipe (4 MiB)─> [read] few large reads into a pool of reused
        1 MiB buffers ─channel─> [compress] zstd (or gzip) ─channel─> [encrypt] age +
        sha256 of the stored bytes ─channel─> [event loop] storage writer (temp name,
        fsync, rename)

Every buffer is bounded (a few MiB in total whatever the dump size) and nothing is
staged on disk. The dump runs in its own process group; compression, encryption and
hashing run in C/Rust code that releases the GIL, so the wall time approaches that of
the dump tool alone.

On a small machine the CPU is the limit (the dump tool and the database take more
than a core between them), so the pipeline spends as little of it as it can: dump
tools write 4 KiB at a time, and the reader pauses briefly after a read that found
the pipe far from full, so it takes a few hundred KiB per read instead of waking per
write (~4k reads per GB instead of ~100k); zstd runs single-threaded on its own
thread for the fast levels (its worker threads cost CPU for nothing when one thread
outruns the dump tool); the compress and encrypt threads run at a lower priority
(``BackupOptions.nice``) so the dump tool never waits for a core behind them, and the
buffers absorb the lag. (The dump tool stays in our session where the event loop
allows, see ``runner``: with autogroup scheduling a session of its own would take
its CPU share independently of our priorities.)

The object is committed only when the dump exited 0, every stage finished and the
storage confirmed the whole object; then the manifest is written beside it. Any
failure or cancel kills the dump's process group and removes the partial object.

PostgreSQL: the cluster globals (roles, tablespaces; ``pg_dumpall --globals-only``)
go through the same stages, concurrently, into a small second object beside the dump,
recorded in the manifest; commit order: both objects, then the manifest.

Parallel PostgreSQL backups (``BackupOptions.parallel_streams`` above 1): a psql
coprocess holds a REPEATABLE READ transaction open and exports its snapshot; every
pg_dump imports it (``--snapshot``), so all parts see the same instant. The pre-data
section, the table data split into N groups of about equal size (largest tables
first; the first group is "everything but the other groups' tables", so sequence
values and large objects go there) and the post-data section each stream through
their own stages (each with its bounded buffers) into their own object, concurrently.
The first object (pre-data, the backup's own key) is committed only once every other
part is, then the manifest lists them all: a failure removes every part, and a killed
process leaves part objects without a manifest, which the job's finisher removes.

Parallel MySQL/MariaDB backups: a client coprocess holds ``FLUSH TABLES WITH READ
LOCK`` (``MySQLReadLock``) while the data dumps (``--single-transaction``, a group of
tables each, largest first) open their snapshots, then unlocks: no write lands between
the first snapshot and the last. The schema part (tables, views, routines, events)
comes first, the triggers part last, each through the same stages as above.

Copies (``run_backup(copies=...)``): the stored byte stream also goes to every extra
destination, block by block, so the dump runs once and every copy has the same bytes,
sha256 and key. Each copy is written by its own task from its own queue, so a slow
copy storage never slows the primary: it may fall up to ``_COPY_LAG_MAX`` behind, and
past that the primary waits for it only while it keeps writing (``_COPY_GRACE``). A
copy whose storage fails (open, write, commit, manifest) or stops keeping up is
aborted, its partial object removed, and reported in ``BackupResult.copies``; it never
fails the primary. The primary failing fails the backup and aborts every copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import os
import posixpath
import re
import secrets
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import zstandard

from opscenter.core.failures import BackupError, ErrorCode, scrub
from opscenter.engines.mysql import MySQLReadLock, resolve_mysql_tool
from opscenter.engines.postgres import PgSnapshot, split_by_size
from opscenter.remote.runner import CommandRunner, LocalRunner
from opscenter.stores.backends import (
    ObjectInfo,
    StorageBackend,
    StorageError,
    StorageWriter,
    validate_key,
)
from opscenter.streaming.crypto import encrypt_stream, key_id, parse_recipients
from opscenter.streaming.manifest import (
    GlobalsInfo,
    Manifest,
    PartInfo,
    RowCounts,
    build_manifest,
    collect_row_counts,
    globals_key,
    globals_restore_command,
    part_key,
    write_manifest,
)
from opscenter.streaming.sources import (
    DumpPlan,
    DumpSource,
    MySQLSource,
    PgGlobalsSource,
    PostgresSource,
)
from opscenter.streaming.stages import ProcessExit, RunFacts, StageRunner
from opscenter.streaming.streams import (
    BLOCK_SIZE,
    Aborted,
    BlockWriter,
    BufferPool,
    Channel,
    ChannelReader,
    Compression,
    enlarge_pipe,
    make_compressor,
)

__all__ = [
    "BackupOptions",
    "BackupProgress",
    "BackupResult",
    "CopyOutcome",
    "ProgressCallback",
    "artifact_key",
    "run_backup",
    "storage_error",
]

#: zstd levels fast enough on one thread to keep up with a dump tool (~400 MB/s at 3).
_SINGLE_THREAD_MAX_LEVEL = 5
#: zstd level when none is asked for, by dump format (3 otherwise). A MySQL/MariaDB dump
#: is plain SQL text, 4x the bytes of the data, while the dump tool and the server
#: already take most of the CPU: level 1 measured 12% faster than 3 on a 1 GB dump of
#: text and JSON rows, and its artifact no larger (bench/backup_mysql.py --levels).
_DEFAULT_ZSTD_LEVEL = {"mysql_sql": 1}
#: Read buffers in flight between the dump's pipe and the compressor.
_READ_BUFFERS = 8
#: A buffer goes to the compressor once less than this is left free in it.
_READ_SLACK = 128 << 10
#: Dump tools write in 4-8 KiB pieces: reading as soon as anything is there costs a
#: wake-up, a syscall and a trip through the interpreter per piece (100k per GB).
#: After a read that found the pipe far from full, the reader pauses so the next
#: read takes a few hundred KiB; the pause adapts so the pipe never fills up.
_PAUSE_MIN, _PAUSE_START, _PAUSE_MAX = 0.000_25, 0.001, 0.005
#: How far (bytes queued, ~1 MiB blocks) a copy may fall behind the primary: rides out
#: a hiccup of its storage, with memory bounded per copy.
_COPY_LAG_MAX = 64 << 20
#: A copy that far behind (or draining at commit) is dropped once it wrote nothing for
#: this long: longer than one 8 MiB S3 part at ~1 MB/s, well under the 60 s a MySQL
#: server waits (net_write_timeout) for the dump tool the primary holds up meanwhile.
_COPY_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class BackupProgress:
    bytes_read: int  # raw dump bytes read from the tool
    bytes_written: int  # stored (compressed, encrypted) bytes accepted by the storage
    elapsed_seconds: float


ProgressCallback = Callable[[BackupProgress], None]


@dataclass(frozen=True, slots=True)
class BackupOptions:
    compression: Compression = Compression.ZSTD
    #: ``None``: gzip 6, zstd 3 (1 for MySQL's text dumps, see ``_DEFAULT_ZSTD_LEVEL``).
    compression_level: int | None = None
    #: zstd worker threads: -1 = none (zstd runs on the compress stage's own thread: the
    #: least CPU per byte), 0 = one per core, N = N workers. ``None``: none up to level
    #: 5 (one thread outruns a single dump tool), one per core above.
    compression_threads: int | None = None
    #: age X25519 recipients (``age1...``); empty = not encrypted.
    recipients: tuple[str, ...] = ()
    #: Fail with ``stalled`` when no byte moved for this long (seconds).
    stall_timeout: float | None = 600.0
    #: Fail with ``time_limit`` after this many seconds in total.
    time_limit: float | None = None
    on_progress: ProgressCallback | None = None
    progress_interval: float = 1.0
    #: Collect per-table row counts (PostgreSQL/MySQL) for the manifest.
    row_counts: bool = False
    #: Write the JSON manifest beside the object (commit order: object -> manifest).
    write_manifest: bool = True
    #: Free-form labels copied into the manifest (target id, schedule, ...).
    labels: dict[str, str] = field(default_factory=dict)
    #: PostgreSQL: also save the cluster globals (roles, tablespaces) beside the dump,
    #: recorded in the manifest (needs ``write_manifest``).
    pg_globals: bool = True
    #: Niceness added to the compress and encrypt threads (Linux, per thread): the
    #: dump tool and the database keep first call on the CPU. 0 = same priority.
    nice: int = 10
    #: PostgreSQL, MySQL: dump the table data in this many concurrent streams of one
    #: snapshot, each its own object (see the module's docstring). 1: one archive.
    parallel_streams: int = 1


@dataclass(frozen=True, slots=True)
class CopyOutcome:
    """What became of one extra destination of :func:`run_backup`."""

    index: int  # position in ``copies``
    committed: bool  # the object and its manifest are in that storage
    error: BackupError | None = None


@dataclass(frozen=True, slots=True)
class BackupResult:
    key: str
    size_bytes: int
    original_size_bytes: int
    sha256: str
    compression: Compression
    encrypted: bool
    recipient_key_ids: tuple[str, ...]
    duration_seconds: float
    started_at: datetime
    finished_at: datetime
    tool_versions: dict[str, str]
    plan: DumpPlan
    manifest: Manifest | None
    manifest_key: str | None
    #: PostgreSQL: the cluster globals saved beside the dump (or why not).
    globals: GlobalsInfo | None = None
    #: Problems that did not fail the backup (e.g. the globals could not be dumped).
    warnings: tuple[str, ...] = ()
    #: One per extra destination, in the order given (same key, bytes and sha256).
    copies: tuple[CopyOutcome, ...] = ()
    #: Parallel backups: every archive, in restore order (``size_bytes`` is their sum,
    #: ``sha256`` the first one's).
    parts: tuple[PartInfo, ...] = ()


@functools.cache
def _lib_versions() -> dict[str, str]:
    out = {"zstd": ".".join(map(str, zstandard.ZSTD_VERSION))}
    for dist in ("zstandard", "pyrage"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return dict(out)


def artifact_key(
    plan: DumpPlan, options: BackupOptions, *, prefix: str = "", when: datetime | None = None
) -> str:
    """``<prefix><engine>/<database>/<UTC timestamp>-<random>.<ext>[.zst|.gz][.age]``."""
    when = when or datetime.now(UTC)
    name = f"{when.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}.{plan.extension}"
    name += options.compression.suffix
    if options.recipients:
        name += ".age"
    return validate_key(target_directory(plan.engine.value, plan.database, prefix) + name)


def target_directory(engine: str, database: str, prefix: str = "") -> str:
    """``<prefix><engine>/<database>/``: where the backups of one target are stored."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", database).strip("._-") or "db"
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    return f"{prefix}{engine}/{label}/"


def storage_error(exc: StorageError, stage: str = "storage") -> BackupError:
    code = ErrorCode.DISK_FULL if exc.code == "disk_full" else ErrorCode.STORAGE_FAILED
    if exc.code == "invalid_key":
        code = ErrorCode.INVALID_CONFIG
    elif exc.code == "not_found" and stage in ("read", "verify"):  # reading a stored backup
        code = ErrorCode.ARTIFACT_MISSING
    # The backends flag what may pass (a lost connection, a 5xx); a refusal (read-only,
    # permission denied, not a directory) does not, and is not retried.
    return BackupError(code, exc.message, stage=stage, permanent=not exc.retryable)


def _mib(n: int) -> str:
    return f"{round(n / (1 << 20), 1):g} MiB"


def _copy_error(exc: Exception, stage: str) -> BackupError:
    if isinstance(exc, BackupError):
        return exc
    if isinstance(exc, StorageError):
        return storage_error(exc, stage)
    if isinstance(exc, OSError) and exc.errno == 28:
        return BackupError(ErrorCode.DISK_FULL, str(exc), stage=stage)
    return BackupError(ErrorCode.STORAGE_FAILED, f"{stage} failed: {exc!r}", stage=stage)


@dataclass(slots=True)
class _Copy:
    """One extra destination of the stored stream, written by its own task from its own
    queue, so the primary never waits on this storage (see ``put``). Its failures are
    recorded, never raised: the writer is aborted at once (nothing partial stays) and
    the copy drops out."""

    index: int
    storage: StorageBackend
    writer: StorageWriter | None = None
    error: BackupError | None = None
    committed: bool = False
    bytes_stored: int = 0
    #: Blocks for the task to write (``None``: the end of the stream); ``backlog`` counts
    #: their bytes and the block being written.
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    backlog: int = 0
    #: Set whenever the task wrote a block or ended: wakes whoever waits on this copy.
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def open(self, key: str) -> None:
        try:
            self.writer = await self.storage.open_writer(key)
        except Exception as exc:
            self.error = _copy_error(exc, "storage")
        else:
            self.task = asyncio.create_task(self._pump(self.writer))

    async def _pump(self, writer: StorageWriter) -> None:
        try:
            while (block := await self.queue.get()) is not None:
                await writer.write(block)
                self.bytes_stored += len(block)
                self.backlog -= len(block)
                self.moved.set()
        except Exception as exc:
            self.error = _copy_error(exc, "storage")
            await self._abort_writer()
        finally:
            self.moved.set()

    async def _wait(self, ready: Callable[[], bool]) -> bool:
        """Wait until ``ready()`` or the task ended; ``False`` as soon as the task wrote
        nothing for ``_COPY_GRACE`` s (each block it writes restarts the clock)."""
        while self.running and not ready():
            self.moved.clear()
            try:
                async with asyncio.timeout(_COPY_GRACE):
                    await self.moved.wait()
            except TimeoutError:
                return False
        return True

    async def _drop(self, behind: str, stage: str) -> None:
        self.error = BackupError(
            ErrorCode.STORAGE_FAILED,
            f"copy storage {behind} and wrote nothing for {_COPY_GRACE:g} s, so it was "
            "dropped; check that storage's speed and reachability",
            stage=stage,
        )
        await self.abort()

    async def put(self, block: bytes) -> None:
        """Queue ``block`` for the task. Past ``_COPY_LAG_MAX`` behind, wait for room, and
        drop the copy if its storage stopped taking blocks (the primary goes on)."""

        def has_room() -> bool:
            return not self.backlog or self.backlog + len(block) <= _COPY_LAG_MAX

        if not await self._wait(has_room):
            await self._drop(f"fell {_mib(self.backlog)} behind", "storage")
        elif self.running:
            self.backlog += len(block)
            self.queue.put_nowait(block)

    async def commit(self, key: str) -> None:
        if not self.running:  # never opened, or its storage failed (error set)
            await self.abort()
            return
        self.queue.put_nowait(None)  # the task writes what is queued, then ends
        if not await self._wait(lambda: not self.running):
            await self._drop(f"still had {_mib(self.backlog)} to write at the end", "commit")
            return
        writer = self.writer
        if writer is None:  # its last writes failed
            return
        try:
            info = await writer.commit()
        except BaseException as exc:
            await self.abort()
            if not isinstance(exc, Exception):
                raise
            self.error = _copy_error(exc, "commit")
            return
        self.writer = None
        if info.size != self.bytes_stored:
            with contextlib.suppress(Exception):
                await self.storage.delete(key)
            self.error = BackupError(
                ErrorCode.STORAGE_FAILED,
                f"storage reports {info.size} bytes, {self.bytes_stored} were written",
                stage="commit",
            )
            return
        self.committed = True

    async def abort(self) -> None:
        """Stop the task and remove the partial object (idempotent)."""
        task = self.task
        try:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])
        finally:
            await self._abort_writer()

    async def _abort_writer(self) -> None:
        writer, self.writer = self.writer, None
        self.queue, self.backlog = asyncio.Queue(), 0  # free the blocks never to be written
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.abort()

    async def discard(self, *keys: str) -> None:
        """Remove what this copy committed (the primary failed after all)."""
        self.committed = False
        for key in keys:
            with contextlib.suppress(Exception):
                await self.storage.delete(key)


class _Backup:
    def __init__(
        self,
        source: DumpSource,
        plan: DumpPlan,
        writer: StorageWriter,
        options: BackupOptions,
        runner: CommandRunner,
        copies: Sequence[StorageBackend] = (),
    ) -> None:
        self.source = source
        self.plan = plan
        self.writer = writer
        self.copies = [_Copy(i, s) for i, s in enumerate(copies)]
        self.options = options
        self.runner = runner
        self.bytes_read = 0
        self.bytes_stored = 0
        self.sha256 = ""
        self._last_reported: tuple[int, int] | None = None
        self._last_report_time = 0.0
        self.stages = StageRunner(
            stall_timeout=options.stall_timeout,
            time_limit=options.time_limit,
            tick=min(0.25, options.progress_interval),
            on_tick=self._report,
        )

    def _report(self, force: bool = False) -> None:
        cb = self.options.on_progress
        if cb is None:
            return
        now = time.monotonic()
        state = (self.bytes_read, self.bytes_stored)
        if not force and (
            state == self._last_reported
            or now - self._last_report_time < self.options.progress_interval
        ):
            return
        self._last_reported, self._last_report_time = state, now
        with contextlib.suppress(Exception):
            cb(BackupProgress(state[0], state[1], now - self.stages.started))

    # -- thread 1: dump stdout -> pooled buffers (few large reads, nothing allocated)
    def _read(
        self, fd: int, pipe_size: int, pool: BufferPool, out: Channel[tuple[bytearray, int]]
    ) -> None:
        # Pausing is only safe with a pipe big enough to take what arrives meanwhile.
        pause = _PAUSE_START if pipe_size >= (1 << 20) else 0.0
        eof = False
        try:
            while not eof:
                buf = pool.take()
                filled = 0
                with memoryview(buf) as view:
                    while len(buf) - filled >= _READ_SLACK:
                        n = os.readv(fd, [view[filled:]])
                        if not n:
                            eof = True
                            break
                        filled += n
                        self.bytes_read += n
                        self.stages.activity()
                        if not pause:
                            continue
                        if n >= pipe_size // 2:  # the pipe was half full: pause less
                            pause = max(_PAUSE_MIN, pause / 2)
                            continue
                        if n < pipe_size // 16:
                            pause = min(_PAUSE_MAX, pause * 1.5)
                        time.sleep(pause)
                if filled:
                    out.put((buf, filled))
                else:
                    pool.give(buf)
            out.close()
        finally:
            os.close(fd)

    # -- thread 2: compress (the codec copies the input into its window; the buffer goes back)
    def _compress(
        self, inp: Channel[tuple[bytearray, int]], pool: BufferPool, out: Channel[bytes]
    ) -> None:
        opts = self.options
        level = opts.compression_level
        if level is None and opts.compression is Compression.ZSTD:
            level = _DEFAULT_ZSTD_LEVEL.get(self.plan.dump_format, 3)
        threads = opts.compression_threads
        if threads is None:
            threads = -1 if (level or 3) <= _SINGLE_THREAD_MAX_LEVEL else 0
        comp = make_compressor(opts.compression, level, threads)
        while (item := inp.get()) is not None:
            buf, n = item
            with memoryview(buf) as view:
                block = comp.compress(view[:n])
            pool.give(buf)
            if block:
                out.put(block)
        tail = comp.flush()
        if tail:
            out.put(tail)
        out.close()

    # -- thread 3: encrypt -> sha256 of the stored bytes -> channel
    def _encrypt_hash(self, inp: Channel[bytes], out: Channel[bytes]) -> None:
        digest = hashlib.sha256()

        def emit(block: bytes) -> None:
            digest.update(block)
            out.put(block)

        bw = BlockWriter(emit)
        reader = ChannelReader(inp)
        if self.options.recipients:
            try:
                encrypt_stream(reader, bw, self.options.recipients)
            except Exception as exc:
                raise (reader.error or bw.error or exc) from exc
            if reader.error is not None:
                raise reader.error
        else:
            while (block := inp.get()) is not None:
                bw.write(block)
        bw.finish()
        self.sha256 = digest.hexdigest()
        out.close()

    # -- event loop: channel -> storage (and every copy's queue, see ``_Copy.put``)
    async def _store(self, inp: Channel[bytes]) -> None:
        while True:
            block = await self.stages.in_thread(inp.get)
            if block is None:
                return
            live = [c for c in self.copies if c.running]
            if live:
                # Copies never raise; the primary's failure is the stage's failure.
                done = await asyncio.gather(
                    self.writer.write(block),
                    *(c.put(block) for c in live),
                    return_exceptions=True,
                )
                if isinstance(done[0], BaseException):
                    raise done[0]
            else:
                await self.writer.write(block)
            self.bytes_stored += len(block)
            self.stages.activity()

    async def open_copies(self, key: str) -> None:
        await asyncio.gather(*(c.open(key) for c in self.copies))

    async def commit_copies(self, key: str) -> None:
        try:
            await asyncio.gather(*(c.commit(key) for c in self.copies))
        except BaseException:
            await self.abort_copies()
            raise

    async def abort_copies(self) -> None:
        await asyncio.gather(*(c.abort() for c in self.copies))

    def _stop_copies(self) -> None:
        """The run is aborting: stop every copy's task now, so the store stage never
        waits for room in a copy (``abort_copies`` then removes their partials)."""
        for c in self.copies:
            if c.task is not None:
                c.task.cancel()

    async def run(self) -> RunFacts:
        rfd, wfd = os.pipe()
        pipe_size = enlarge_pipe(wfd)
        try:
            try:
                proc = await self.runner.start(self.plan.command, stdout=wfd)
            finally:
                os.close(wfd)
        except FileNotFoundError as exc:
            os.close(rfd)
            raise BackupError(
                ErrorCode.TOOL_MISSING, f"{self.plan.tool} is not installed", stage="dump"
            ) from exc
        except BaseException:
            os.close(rfd)
            raise
        self.proc = proc
        st = self.stages
        nice = self.options.nice
        pool = BufferPool(_READ_BUFFERS, BLOCK_SIZE)
        st.on_abort(pool.abort)
        st.on_abort(self._stop_copies)
        raw = st.channel(_READ_BUFFERS)
        compressed = st.channel(8)
        stored = st.channel(4)
        st.process("dump", proc)
        # The reader keeps normal priority: it only moves bytes, and a drained pipe
        # is what lets the dump tool run on.
        st.thread("read", lambda: self._read(rfd, pipe_size, pool, raw))
        st.thread("compress", lambda: self._compress(raw, pool, compressed), nice=nice)
        st.thread("encrypt", lambda: self._encrypt_hash(compressed, stored), nice=nice)
        st.task("store", self._store(stored))
        facts = await st.run()
        self._report(force=True)
        return facts

    def error_from(self, facts: RunFacts) -> BackupError | None:
        """The one classified error for a finished run, or ``None`` if it succeeded."""
        secrets_ = self.plan.command.secrets
        stderr = scrub(self.proc.stderr_tail(), secrets_)
        if facts.abort_reason is ErrorCode.STALLED:
            return BackupError(
                ErrorCode.STALLED,
                f"no data moved for {self.options.stall_timeout:g} s; the dump was killed",
                stage="dump",
                detail=stderr,
            )
        if facts.abort_reason is ErrorCode.TIME_LIMIT:
            return BackupError(
                ErrorCode.TIME_LIMIT,
                f"the backup exceeded its time limit of {self.options.time_limit:g} s",
                stage="dump",
                detail=stderr,
            )
        first = facts.first_failure()
        rc = facts.returncodes.get("dump")
        # A dump that failed on its own is the root cause of whatever followed.
        if rc is not None and rc != 0 and not (facts.killed and rc < 0):
            if rc < 0:
                try:
                    sig = signal.Signals(-rc).name
                except ValueError:
                    sig = f"signal {-rc}"
                return BackupError(
                    ErrorCode.DUMP_KILLED,
                    f"{self.plan.tool} was killed by {sig} after {self.bytes_read} bytes",
                    stage="dump",
                    detail=stderr,
                )
            code = self.source.classify_failure(rc, stderr)
            return BackupError(
                code,
                f"{self.plan.tool} failed with exit status {rc}",
                stage="dump",
                detail=stderr,
            )
        if first is not None:
            name, exc = first
            if isinstance(exc, BackupError):
                return exc
            if isinstance(exc, StorageError):
                return storage_error(exc)
            if isinstance(exc, ProcessExit):  # already handled above; defensive
                return BackupError(ErrorCode.DUMP_FAILED, str(exc), stage=name, detail=stderr)
            if isinstance(exc, OSError) and exc.errno == 28:
                return BackupError(ErrorCode.DISK_FULL, str(exc), stage=name)
            return BackupError(
                ErrorCode.PIPELINE_FAILED,
                f"stage {name} failed: {scrub(repr(exc), secrets_)}",
                stage=name,
            )
        if any(isinstance(exc, Aborted) for _, exc in facts.failures):
            return BackupError(ErrorCode.PIPELINE_FAILED, "the pipeline was aborted")
        if rc != 0:
            return BackupError(ErrorCode.DUMP_FAILED, "the dump did not finish", stage="dump")
        return None


async def _diagnose(source: DumpSource, runner: CommandRunner, error: BackupError) -> BackupError:
    """Let the source refine a dump failure it can explain better (``diagnose`` hook)."""
    hook = getattr(source, "diagnose", None)
    if hook is None:
        return error
    try:
        refined = await hook(runner, error)
    except Exception:  # the diagnosis is a courtesy: never hide the original error
        return error
    return refined if isinstance(refined, BackupError) else error


async def _dump_object(
    source: DumpSource,
    plan: DumpPlan,
    storage: StorageBackend,
    key: str,
    options: BackupOptions,
    runner: CommandRunner,
    copies: Sequence[StorageBackend] = (),
    gate: asyncio.Future[None] | None = None,
) -> tuple[ObjectInfo, _Backup]:
    """Stream one dump into one committed object (and the same bytes into each of
    ``copies``, see ``_Backup.copies``); nothing is left behind on failure. With a
    ``gate``, the object is committed only once it is done (the other parts of a
    parallel backup are)."""
    try:
        writer = await storage.open_writer(key)
    except StorageError as exc:
        raise storage_error(exc) from exc
    backup = _Backup(source, plan, writer, options, runner, copies)
    try:
        await backup.open_copies(key)
        facts = await backup.run()
        error = backup.error_from(facts)
        if error is None:
            if gate is not None:
                await gate
            try:
                info = await writer.commit()
            except StorageError as exc:
                raise storage_error(exc, "commit") from exc
    except BaseException:
        await writer.abort()
        await backup.abort_copies()
        raise
    if error is not None:
        await writer.abort()
        await backup.abort_copies()
        raise await _diagnose(source, runner, error)
    if info.size != backup.bytes_stored:
        await storage.delete(key)
        await backup.abort_copies()
        raise BackupError(
            ErrorCode.STORAGE_FAILED,
            f"storage reports {info.size} bytes, {backup.bytes_stored} were written",
            stage="commit",
        )
    try:
        await backup.commit_copies(key)
    except BaseException:  # cancelled while committing: take everything back
        with contextlib.suppress(Exception):
            await storage.delete(key)
        for c in backup.copies:
            if c.committed:
                await c.discard(key)
        raise
    return info, backup


@dataclass(frozen=True, slots=True)
class _PartSpec:
    key: str
    section: str
    plan: DumpPlan


def _part_specs(plan: DumpPlan, key: str, snapshot: PgSnapshot, streams: int) -> list[_PartSpec]:
    """pre-data, the data in up to ``streams`` groups, post-data; all of one snapshot."""

    def part(section: str, *args: str) -> DumpPlan:
        argv = (*plan.command.argv, f"--snapshot={snapshot.id}", f"--section={section}", *args)
        return dataclasses.replace(plan, command=dataclasses.replace(plan.command, argv=argv))

    groups = [g for g in split_by_size(snapshot.tables, streams)[1:] if g]
    # The first group is everything the others do not take: sequence values, large
    # objects and whatever pg_dump adds on its own come with it.
    specs = [
        _PartSpec(key, "pre-data", part("pre-data")),
        _PartSpec(
            part_key(key, "data", 1),
            "data",
            part("data", *(f"--exclude-table-data={t}" for g in groups for t in g)),
        ),
    ]
    for i, group in enumerate(groups, start=2):
        specs.append(
            _PartSpec(
                part_key(key, "data", i), "data", part("data", *(f"--table={t}" for t in group))
            )
        )
    specs.append(_PartSpec(part_key(key, "post-data"), "post-data", part("post-data")))
    return specs


def _part_progress(options: BackupOptions, count: int) -> list[BackupOptions]:
    """Each part's options; their progress is reported as one sum."""
    cb = options.on_progress
    if cb is None:
        return [options] * count
    seen = [BackupProgress(0, 0, 0.0)] * count

    def reporter(i: int) -> ProgressCallback:
        def report(p: BackupProgress) -> None:
            seen[i] = p
            read = sum(s.bytes_read for s in seen)
            cb(BackupProgress(read, sum(s.bytes_written for s in seen), p.elapsed_seconds))

        return report

    return [dataclasses.replace(options, on_progress=reporter(i)) for i in range(count)]


def _mysql_part_specs(
    plan: DumpPlan, key: str, database: str, lock: MySQLReadLock, streams: int
) -> list[_PartSpec]:
    """The schema (tables, views, routines, events), the table data in up to
    ``streams`` groups, the triggers last (so restoring the data fires none). Only the
    data dumps take a snapshot: ``MySQLReadLock`` counts their transactions."""
    head = plan.command.argv[: plan.command.argv.index("--")]
    schema_only = tuple(a for a in head if a != "--single-transaction")

    def part(argv: tuple[str, ...], *tail: str) -> DumpPlan:
        command = dataclasses.replace(plan.command, argv=(*argv, "--", database, *tail))
        return dataclasses.replace(plan, command=command)

    data = (*head, "--no-create-info", "--skip-triggers", "--skip-routines", "--skip-events")
    groups = [g for g in split_by_size(lock.tables, streams)[1:] if g]
    # The first group is every table the others do not take.
    ignored = (f"--ignore-table={database}.{t}" for g in groups for t in g)
    specs = [
        _PartSpec(key, "pre-data", part((*schema_only, "--no-data", "--skip-triggers"))),
        _PartSpec(part_key(key, "data", 1), "data", part((*data, *ignored))),
    ]
    for i, group in enumerate(groups, start=2):
        specs.append(_PartSpec(part_key(key, "data", i), "data", part(data, *group)))
    triggers = (*schema_only, "--no-data", "--no-create-info", "--skip-routines", "--skip-events")
    specs.append(_PartSpec(part_key(key, "post-data"), "post-data", part(triggers)))
    return specs


async def _dump_parallel(
    source: PostgresSource | MySQLSource,
    plan: DumpPlan,
    storage: StorageBackend,
    key: str,
    options: BackupOptions,
    runner: CommandRunner,
    copies: Sequence[StorageBackend] = (),
) -> tuple[ObjectInfo, _Backup, tuple[PartInfo, ...]]:
    """Every part of a parallel backup committed (the first one last), or none: the
    first part's object and ``_Backup`` (its copies stand for the whole backup's), and
    the parts in order."""
    snapshot: PgSnapshot | MySQLReadLock
    if isinstance(source, PostgresSource):
        psql = posixpath.join(posixpath.dirname(plan.command.argv[0]), "psql")
        snapshot = await PgSnapshot.export(runner, psql, source.conn, source.lock_wait_timeout_ms)
        specs = _part_specs(plan, key, snapshot, options.parallel_streams)
    else:
        client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
        snapshot = await MySQLReadLock.take(runner, client, source.conn, source.lock_timeout)
        specs = _mysql_part_specs(
            plan, key, source.conn.database, snapshot, options.parallel_streams
        )
    try:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tasks = [
            asyncio.create_task(
                _dump_object(
                    source,
                    spec.plan,
                    storage,
                    spec.key,
                    opts,
                    runner,
                    copies,
                    gate if i == 0 else None,
                )
            )
            for i, (spec, opts) in enumerate(
                zip(specs, _part_progress(options, len(specs)), strict=True)
            )
        ]
        try:
            pending: set[asyncio.Future[Any]] = set(tasks)
            if isinstance(snapshot, MySQLReadLock):
                data = [t for spec, t in zip(specs, tasks, strict=True) if spec.section == "data"]
                # A data dump that already ended had its snapshot under the lock too.
                begun = snapshot.release_when_begun(len(data), lambda: sum(t.done() for t in data))
                pending.add(asyncio.ensure_future(begun))
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (exc := task.exception()) is not None:
                        raise exc
                if all(t.done() for t in tasks[1:]) and not gate.done():
                    gate.set_result(None)
        except BaseException:
            for task in pending:
                task.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*pending, *tasks, return_exceptions=True)
            for spec, task in zip(specs, tasks, strict=True):
                if not task.cancelled() and task.exception() is None:
                    await _discard_part(storage, spec.key, task.result()[1])
            raise
    finally:
        await snapshot.close()
    results = [t.result() for t in tasks]
    info, first = results[0]
    for i, c in enumerate(first.copies):
        # A copy is whole only if every part reached it; otherwise it keeps none.
        lost = [b.copies[i] for _, b in results if not b.copies[i].committed]
        if not lost:
            continue
        for spec, (_, b) in zip(specs, results, strict=True):
            if b.copies[i].committed:
                await b.copies[i].discard(spec.key)
        c.error = next(
            (x.error for x in lost if x.error),
            BackupError(ErrorCode.STORAGE_FAILED, "a part was not written", stage="storage"),
        )
    parts = tuple(
        PartInfo(spec.key, i, spec.section, obj.size, b.bytes_read, b.sha256)
        for i, (spec, (obj, b)) in enumerate(zip(specs, results, strict=True))
    )
    return info, first, parts


async def _discard_part(storage: StorageBackend, key: str, backup: _Backup) -> None:
    with contextlib.suppress(Exception):
        await storage.delete(key)
    for c in backup.copies:
        if c.committed:
            await c.discard(key)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


async def _backup_globals(
    source: PostgresSource,
    plan: DumpPlan,
    storage: StorageBackend,
    key: str,
    options: BackupOptions,
    runner: CommandRunner,
    copies: Sequence[StorageBackend] = (),
) -> tuple[GlobalsInfo, str | None, tuple[bool, ...]]:
    """The cluster globals beside a PostgreSQL dump: ``(what the manifest records,
    warning, whether each of copies holds them too)``.

    Never raises a :class:`BackupError`: an account that may not read the globals is
    recorded as ``skipped``; any other failure as ``failed`` plus a warning.
    """
    none = (False,) * len(copies)
    gsource = PgGlobalsSource(
        source.conn,
        tool_dir=posixpath.dirname(plan.command.argv[0]),
        tool_version=plan.tool_version,
        server_version=plan.server_version,
        bin_globs=source.bin_globs,
    )
    gkey = globals_key(key, options.compression, bool(options.recipients))
    gopts = dataclasses.replace(
        options, on_progress=None, row_counts=False, pg_globals=False, labels={}
    )
    try:
        gplan, role_passwords = await gsource.plan_with_access(runner)
        info, dumped = await _dump_object(gsource, gplan, storage, gkey, gopts, runner, copies)
    except BackupError as exc:
        reason = exc.message
        if exc.detail:
            reason += f": {_first_line(exc.detail)}"
        if PgGlobalsSource.lacks_privilege(exc):
            return (
                GlobalsInfo(status="skipped", reason=f"the account may not read them ({reason})"),
                None,
                none,
            )
        return (
            GlobalsInfo(status="failed", reason=reason),
            f"cluster globals not saved: {reason}",
            none,
        )
    except Exception as exc:
        reason = scrub(repr(exc), source.conn.secrets())
        return (
            GlobalsInfo(status="failed", reason=reason),
            f"cluster globals not saved: {reason}",
            none,
        )
    return (
        GlobalsInfo(
            status="saved",
            key=gkey,
            size_bytes=info.size,
            original_size_bytes=dumped.bytes_read,
            sha256=dumped.sha256,
            role_passwords=role_passwords,
            tool_version=gplan.tool_version,
            reason="" if role_passwords else "dumped without role passwords (not a superuser)",
            restore_command=globals_restore_command(
                key=gkey, compression=options.compression, encrypted=bool(options.recipients)
            ),
        ),
        None,
        tuple(c.committed for c in dumped.copies),
    )


_GlobalsTask = asyncio.Task[tuple[GlobalsInfo, str | None, tuple[bool, ...]]]


async def _discard_globals(
    task: _GlobalsTask | None, storages: Sequence[StorageBackend], key: str
) -> None:
    """The main dump failed: stop the globals dump and remove whatever it committed."""
    if task is None:
        return
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        await task
    for storage in storages:
        with contextlib.suppress(Exception):
            await storage.delete(key)


async def run_backup(
    source: DumpSource,
    storage: StorageBackend,
    *,
    key: str | None = None,
    prefix: str = "",
    options: BackupOptions | None = None,
    runner: CommandRunner | None = None,
    copies: Sequence[StorageBackend] = (),
) -> BackupResult:
    """Dump ``source`` into ``storage`` under ``key`` (default: :func:`artifact_key`), and
    the same stored bytes under the same key into each of ``copies`` (one dump).

    Raises :class:`BackupError` (classified; nothing left in any storage) or
    ``asyncio.CancelledError`` (process group killed, partial objects removed). A copy
    that fails does not raise: see ``BackupResult.copies``.
    """
    options = options or BackupOptions()
    runner = runner or LocalRunner()
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    if options.recipients:
        parse_recipients(options.recipients)
    plan = await source.plan(runner)
    counts: RowCounts | None = None
    if options.row_counts:
        counts = await collect_row_counts(source, runner)
    key = validate_key(key) if key else artifact_key(plan, options, prefix=prefix)
    gkey = globals_key(key, options.compression, bool(options.recipients))
    globals_task: _GlobalsTask | None = None
    if options.pg_globals and options.write_manifest and isinstance(source, PostgresSource):
        # Small and quick: it runs beside the main dump instead of before it.
        globals_task = asyncio.ensure_future(
            _backup_globals(source, plan, storage, key, options, runner, copies)
        )
    backup: _Backup | None = None
    parts: tuple[PartInfo, ...] = ()
    try:
        if options.parallel_streams > 1 and isinstance(source, (PostgresSource, MySQLSource)):
            info, backup, parts = await _dump_parallel(
                source, plan, storage, key, options, runner, copies
            )
        else:
            info, backup = await _dump_object(source, plan, storage, key, options, runner, copies)
        globals_info: GlobalsInfo | None = None
        globals_in = (False,) * len(copies)
        warnings: list[str] = []
        if globals_task is not None:
            globals_info, warning, globals_in = await globals_task
            if warning:
                warnings.append(warning)
    except BaseException:
        await _discard_globals(globals_task, [storage, *copies], gkey)
        if backup is not None:  # committed, then cancelled while waiting for the globals
            for k in [key, *(p.key for p in parts[1:])]:
                with contextlib.suppress(Exception):
                    await storage.delete(k)
            for c in backup.copies:
                if c.committed:
                    await c.discard(key, *(p.key for p in parts[1:]))
        raise
    finished_at = datetime.now(UTC)
    tool_versions = {plan.tool: plan.tool_version, **_lib_versions()}
    key_ids = tuple(key_id(r) for r in options.recipients)
    manifest: Manifest | None = None
    manifest_key: str | None = None
    duration = time.monotonic() - t0
    saved_globals = globals_info is not None and globals_info.saved
    others = [p.key for p in parts[1:]]
    for c in backup.copies:  # a copy without its dump keeps no globals either
        if not c.committed and globals_in[c.index]:
            await c.discard(gkey)
    if options.write_manifest:
        manifest = build_manifest(
            key=key,
            plan=plan,
            size_bytes=info.size,
            original_size_bytes=backup.bytes_read,
            sha256=backup.sha256,
            compression=options.compression,
            recipients=options.recipients,
            started_at=started_at,
            finished_at=finished_at,
            tool_versions=tool_versions,
            row_counts=counts,
            labels=options.labels,
            globals_info=globals_info,
            parts=parts,
        )
        try:
            manifest_key = await write_manifest(storage, manifest)
        except BaseException as exc:
            # Nothing without a manifest is ever usable: remove the objects too.
            for k in [key, *others]:
                with contextlib.suppress(Exception):
                    await storage.delete(k)
            if saved_globals:
                with contextlib.suppress(Exception):
                    await storage.delete(gkey)
            for c in backup.copies:
                if c.committed:
                    await c.discard(key, gkey, *others)
            if isinstance(exc, StorageError):
                raise storage_error(exc, "manifest") from exc
            raise

        async def copy_manifest(c: _Copy, m: Manifest) -> None:
            if saved_globals and not globals_in[c.index]:
                reason = "the globals were saved in the primary storage but not in this one"
                m = dataclasses.replace(m, globals=GlobalsInfo(status="failed", reason=reason))
                warnings.append(f"copy {c.index}: cluster globals not saved: {reason}")
            try:
                await write_manifest(c.storage, m)
            except BaseException as exc:
                await c.discard(key, gkey, *others)
                if not isinstance(exc, Exception):
                    raise
                c.error = _copy_error(exc, "manifest")

        await asyncio.gather(*(copy_manifest(c, manifest) for c in backup.copies if c.committed))
    return BackupResult(
        key=key,
        size_bytes=sum(p.size_bytes for p in parts) if parts else info.size,
        original_size_bytes=sum(p.original_size_bytes for p in parts)
        if parts
        else backup.bytes_read,
        sha256=backup.sha256,
        compression=options.compression,
        encrypted=bool(options.recipients),
        recipient_key_ids=key_ids,
        duration_seconds=duration,
        started_at=started_at,
        finished_at=finished_at,
        tool_versions=tool_versions,
        plan=plan,
        manifest=manifest,
        manifest_key=manifest_key,
        globals=globals_info,
        warnings=tuple(warnings),
        copies=tuple(CopyOutcome(c.index, c.committed, c.error) for c in backup.copies),
        parts=parts,
    )
