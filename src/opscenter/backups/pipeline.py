"""The streaming backup pipeline.

::

    dump process stdout ─pipe─> [thread 1] read + compress (zstd, its own worker threads)
        ─channel─> [thread 2] age encrypt + sha256 of the stored bytes
        ─channel─> [event loop] storage writer (temp name, fsync, atomic rename)

Every buffer is bounded (a few MiB in total whatever the dump size) and nothing is
staged on disk. The dump runs in its own process group; compression, encryption and
hashing run in C/Rust code that releases the GIL, so the wall time approaches that of
the dump tool alone.

The object is committed only when the dump exited 0, every stage finished and the
storage confirmed the whole object; then the manifest is written beside it. Any
failure or cancel kills the dump's process group and removes the partial object.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata

import zstandard

from opscenter.backups.crypto import encrypt_stream, key_id, parse_recipients
from opscenter.backups.errors import BackupError, ErrorCode, scrub
from opscenter.backups.manifest import (
    Manifest,
    RowCounts,
    build_manifest,
    collect_row_counts,
    write_manifest,
)
from opscenter.backups.runner import CommandRunner, LocalRunner
from opscenter.backups.sources import DumpPlan, DumpSource
from opscenter.backups.stages import ProcessExit, RunFacts, StageRunner
from opscenter.backups.streams import (
    BLOCK_SIZE,
    Aborted,
    BlockWriter,
    Channel,
    ChannelReader,
    Compression,
    make_compressor,
)
from opscenter.storage.backends import StorageBackend, StorageError, StorageWriter, validate_key

__all__ = [
    "BackupOptions",
    "BackupProgress",
    "BackupResult",
    "ProgressCallback",
    "artifact_key",
    "run_backup",
    "storage_error",
]


@dataclass(frozen=True, slots=True)
class BackupProgress:
    bytes_read: int  # raw dump bytes read from the tool
    bytes_written: int  # stored (compressed, encrypted) bytes accepted by the storage
    elapsed_seconds: float


ProgressCallback = Callable[[BackupProgress], None]


@dataclass(frozen=True, slots=True)
class BackupOptions:
    compression: Compression = Compression.ZSTD
    #: zstd 3 / gzip 6 when ``None``.
    compression_level: int | None = None
    #: zstd worker threads: 0 = one per core, -1 = single-threaded.
    compression_threads: int = 0
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


def _lib_versions() -> dict[str, str]:
    out = {"zstd": ".".join(map(str, zstandard.ZSTD_VERSION))}
    for dist in ("zstandard", "pyrage"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def artifact_key(
    plan: DumpPlan, options: BackupOptions, *, prefix: str = "", when: datetime | None = None
) -> str:
    """``<prefix><engine>/<database>/<UTC timestamp>-<random>.<ext>[.zst|.gz][.age]``."""
    when = when or datetime.now(UTC)
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", plan.database).strip("._-") or "db"
    name = f"{when.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}.{plan.extension}"
    name += options.compression.suffix
    if options.recipients:
        name += ".age"
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    return validate_key(f"{prefix}{plan.engine.value}/{label}/{name}")


def storage_error(exc: StorageError, stage: str = "storage") -> BackupError:
    code = ErrorCode.DISK_FULL if exc.code == "disk_full" else ErrorCode.STORAGE_FAILED
    if exc.code == "invalid_key":
        code = ErrorCode.INVALID_CONFIG
    return BackupError(code, exc.message, stage=stage)


def _set_pipe_size(fd: int, size: int = BLOCK_SIZE) -> None:
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, size)


class _Backup:
    def __init__(
        self,
        source: DumpSource,
        plan: DumpPlan,
        writer: StorageWriter,
        options: BackupOptions,
        runner: CommandRunner,
    ) -> None:
        self.source = source
        self.plan = plan
        self.writer = writer
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

    # -- thread 1: dump stdout -> compress -> channel
    def _read_compress(self, fd: int, out: Channel) -> None:
        opts = self.options
        comp = make_compressor(opts.compression, opts.compression_level, opts.compression_threads)
        try:
            while True:
                data = os.read(fd, BLOCK_SIZE)
                if not data:
                    break
                self.bytes_read += len(data)
                self.stages.activity()
                block = comp.compress(data)
                if block:
                    out.put(block)
            tail = comp.flush()
            if tail:
                out.put(tail)
            out.close()
        finally:
            os.close(fd)

    # -- thread 2: channel -> encrypt -> sha256 -> channel
    def _encrypt_hash(self, inp: Channel, out: Channel) -> None:
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

    # -- event loop: channel -> storage
    async def _store(self, inp: Channel) -> None:
        while True:
            block = await self.stages.in_thread(inp.get)
            if block is None:
                return
            await self.writer.write(block)
            self.bytes_stored += len(block)
            self.stages.activity()

    async def run(self) -> RunFacts:
        rfd, wfd = os.pipe()
        _set_pipe_size(wfd)
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
        compressed = st.channel(4)
        stored = st.channel(4)
        st.process("dump", proc)
        st.thread("compress", lambda: self._read_compress(rfd, compressed))
        st.thread("encrypt", lambda: self._encrypt_hash(compressed, stored))
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


async def run_backup(
    source: DumpSource,
    storage: StorageBackend,
    *,
    key: str | None = None,
    prefix: str = "",
    options: BackupOptions | None = None,
    runner: CommandRunner | None = None,
) -> BackupResult:
    """Dump ``source`` into ``storage`` under ``key`` (default: :func:`artifact_key`).

    Raises :class:`BackupError` (classified; nothing left in storage) or
    ``asyncio.CancelledError`` (process group killed, partial object removed).
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
    try:
        writer = await storage.open_writer(key)
    except StorageError as exc:
        raise storage_error(exc) from exc
    backup = _Backup(source, plan, writer, options, runner)
    try:
        facts = await backup.run()
        error = backup.error_from(facts)
        if error is not None:
            raise error
        try:
            info = await writer.commit()
        except StorageError as exc:
            raise storage_error(exc, "commit") from exc
    except BaseException:
        await writer.abort()
        raise
    if info.size != backup.bytes_stored:
        await storage.delete(key)
        raise BackupError(
            ErrorCode.STORAGE_FAILED,
            f"storage reports {info.size} bytes, {backup.bytes_stored} were written",
            stage="commit",
        )
    finished_at = datetime.now(UTC)
    tool_versions = {plan.tool: plan.tool_version, **_lib_versions()}
    key_ids = tuple(key_id(r) for r in options.recipients)
    manifest: Manifest | None = None
    manifest_key: str | None = None
    duration = time.monotonic() - t0
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
        )
        try:
            manifest_key = await write_manifest(storage, manifest)
        except BaseException as exc:
            # Nothing without a manifest is ever usable: remove the object too.
            with contextlib.suppress(Exception):
                await storage.delete(key)
            if isinstance(exc, StorageError):
                raise storage_error(exc, "manifest") from exc
            raise
    return BackupResult(
        key=key,
        size_bytes=info.size,
        original_size_bytes=backup.bytes_read,
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
    )
