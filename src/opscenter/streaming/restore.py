"""Restore of artifacts (their verification is :mod:`opscenter.streaming.verification`).

::

    storage reader ─> [event loop] ─channel─> [thread 1] sha256 + size check, age decrypt
        ─channel─> [thread 2] decompress, hold back the tail ─pipe (4 MiB)─> pg_restore
                                                  | mariadb | psql | sqlite file | tar -x

Nothing downstream can complete on a damaged artifact: the sha256 and size are
checked when the stored object ends, age authenticates every chunk and the final
one, zstd/gzip completeness is checked, and at least the last 64 KiB of the dump are
handed to the tool only after all of that passed (the decompressed blocks are queued
by reference, so holding the tail back copies nothing). On any failure the tool's process group
is killed before its input is closed, so ``pg_restore --single-transaction`` rolls
back; SQLite and directory restores are staged beside the target and renamed into
place only on success. MySQL commits statement by statement: its artifact is read and
checked whole before the first statement reaches the target (see :class:`MySQLTarget`).

A parallel PostgreSQL backup (``Manifest.parts``) is restored in its order: pre-data,
then the data parts concurrently (one pg_restore and connection each, each in its own
transaction), then post-data. Each part streams through the same checks. The whole is
not one transaction, so a failure part-way drops a database the restore created, and
into an existing database every part's size and sha256 is checked (one read) before
the first statement. post-data (indexes, constraints, triggers: definitions only, a
few KiB) is restored with ``pg_restore --jobs``, one job per data part: that needs a
seekable archive, so that small archive alone is staged in a private temp file once
it is proven whole (as ``PostgresTarget.jobs`` does for a whole dump). A parallel
MySQL backup (schema, data parts, triggers) has every part checked whole first, then
restored in the same order, the data parts over one client connection each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines import mysql, postgres
from opscenter.engines.mysql import mysql_client_command, resolve_mysql_tool
from opscenter.engines.postgres import classify_pg_error, quote_conninfo, select_pg_tool
from opscenter.remote.runner import Command, CommandRunner, LocalRunner
from opscenter.stores.backends import StorageBackend, StorageError
from opscenter.streaming.crypto import decrypt_stream, parse_identities
from opscenter.streaming.manifest import GlobalsInfo, Manifest
from opscenter.streaming.pipeline import storage_error
from opscenter.streaming.sinks import (
    MYSQL_TRAILER,
    DirectoryTarget,
    MySQLAdmin,
    MySQLTarget,
    PostgresTarget,
    ProcessSink,
    RestoreTarget,
    Sink,
    SqliteSink,
    SqliteTarget,
    TarSink,
    TrailerSink,
    pg_query,
    pg_sink,
    tar_path,
)
from opscenter.streaming.stages import ProcessExit, RunFacts, StageRunner
from opscenter.streaming.streams import (
    BLOCK_SIZE,
    Aborted,
    BlockWriter,
    Channel,
    Decompressor,
    HashingReader,
    HoldBack,
)

__all__ = [
    "RestoreProgress",
    "RestoreResult",
    "check_stored",
    "drop_created",
    "globals_manifest",
    "globals_part",
    "run_restore",
    "run_stream",
]

#: Bytes of the dump withheld from the restore tool until the artifact is proven whole.
HOLD_BACK = 64 * 1024


@dataclass(frozen=True, slots=True)
class RestoreProgress:
    bytes_read: int  # stored bytes read
    bytes_restored: int  # dump bytes handed on
    elapsed_seconds: float


@dataclass(frozen=True, slots=True)
class RestoreResult:
    key: str
    target: str
    bytes_read: int
    bytes_restored: int
    sha256: str
    duration_seconds: float
    tool: str
    #: Problems that did not fail the restore (e.g. roles that already existed).
    warnings: tuple[str, ...] = ()
    globals_restored: bool = False


class _Stream:
    """storage -> verify -> decrypt -> decompress -> sink, as one StageRunner run."""

    def __init__(
        self,
        storage: StorageBackend,
        manifest: Manifest,
        sink: Sink,
        identities: Sequence[str],
        *,
        stall_timeout: float | None,
        time_limit: float | None,
        on_progress: Callable[[RestoreProgress], None] | None,
    ) -> None:
        self.storage = storage
        self.manifest = manifest
        self.sink = sink
        self.identities = tuple(identities)
        self.on_progress = on_progress
        self.bytes_read = 0
        self.bytes_out = 0
        self.stages = StageRunner(
            stall_timeout=stall_timeout, time_limit=time_limit, on_tick=self._report
        )
        self.reader: HashingReader | None = None
        self._last_report = 0.0

    def _report(self) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if now - self._last_report < 1.0:
            return
        self._last_report = now
        with contextlib.suppress(Exception):
            self.on_progress(
                RestoreProgress(self.bytes_read, self.bytes_out, now - self.stages.started)
            )

    async def _pump(self, out: Channel[bytes]) -> None:
        reader = await self.storage.open_reader(self.manifest.key)
        async with reader:
            while True:
                chunk = await reader.read(BLOCK_SIZE)
                if not chunk:
                    break
                self.bytes_read += len(chunk)
                self.stages.activity()
                await self.stages.in_thread(lambda c=chunk: out.put(c))  # type: ignore[misc]
        out.close()

    def _decrypt(self, inp: Channel[bytes], out: Channel[bytes]) -> None:
        m = self.manifest
        reader = HashingReader(inp, expected_sha256=m.sha256, expected_size=m.size_bytes)
        self.reader = reader
        bw = BlockWriter(out.put)
        if m.encrypted:
            try:
                decrypt_stream(reader, bw, self.identities)
            except BackupError:
                if reader.mismatch is not None:
                    raise reader.mismatch from None
                if reader.error is not None:
                    raise reader.error from None
                if bw.error is not None:
                    raise bw.error from None
                raise
        else:
            while chunk := reader.read(BLOCK_SIZE):
                bw.write(chunk)
        if reader.mismatch is not None:
            raise reader.mismatch
        bw.finish()
        out.close()

    def _decompress(self, inp: Channel[bytes]) -> None:
        def written(n: int) -> None:
            self.bytes_out += n
            self.stages.activity()

        tail = HoldBack(self.sink.write, HOLD_BACK, written)
        dec = Decompressor(self.manifest.compression_kind, tail.push)
        while (block := inp.get()) is not None:
            dec.feed(block)
        dec.finish()
        # Everything upstream is proven whole: release the tail, then end the input.
        tail.release()
        self.sink.close_input()

    async def run(self, runner: CommandRunner) -> None:
        st = self.stages
        raw = st.channel(4)
        plain = st.channel(4)
        await self.sink.start(runner)
        try:
            if self.sink.process is not None:
                st.process(self.sink.name, self.sink.process)
            st.task("read", self._pump(raw))
            st.thread("decrypt", lambda: self._decrypt(raw, plain))
            st.thread("decompress", lambda: self._decompress(plain))
            facts = await st.run()
            error = self._error_from(facts)
            if error is not None:
                raise error
            await self.sink.finish()
        except BaseException:
            await self.sink.fail()
            raise

    def _error_from(self, facts: RunFacts) -> BackupError | None:
        if facts.abort_reason is ErrorCode.STALLED:
            return BackupError(ErrorCode.STALLED, "no data moved; the restore was stopped")
        if facts.abort_reason is ErrorCode.TIME_LIMIT:
            return BackupError(ErrorCode.TIME_LIMIT, "the restore exceeded its time limit")
        if self.reader is not None and self.reader.mismatch is not None:
            return self.reader.mismatch
        for _name, exc in facts.failures:
            if isinstance(exc, BackupError):
                return exc
        for _name, exc in facts.failures:
            if isinstance(exc, ProcessExit) and not (facts.killed and exc.returncode < 0):
                return self.sink.error_for(exc.returncode)
            if isinstance(exc, StorageError):
                return storage_error(exc, "read")
        first = facts.first_failure()
        if first is not None:
            name, exc = first
            return BackupError(
                ErrorCode.PIPELINE_FAILED, f"stage {name} failed: {exc!r}", stage=name
            )
        if facts.failures and all(isinstance(e, Aborted) for _, e in facts.failures):
            return BackupError(ErrorCode.PIPELINE_FAILED, "the pipeline was aborted")
        return None


def _absolute(path: str) -> Path:
    return Path(os.path.abspath(path))  # pure string operation, no I/O


def _check_format(manifest: Manifest, target: RestoreTarget) -> None:
    expected = {
        PostgresTarget: "pg_custom",
        MySQLTarget: "mysql_sql",
        SqliteTarget: "sqlite_db",
        DirectoryTarget: "tar",
    }[type(target)]
    if manifest.dump_format != expected:
        raise BackupError(
            ErrorCode.INVALID_CONFIG,
            f"a {manifest.dump_format} artifact cannot be restored into a {type(target).__name__}",
        )


async def run_stream(
    storage: StorageBackend,
    manifest: Manifest,
    sink: Sink,
    identities: Sequence[str],
    runner: CommandRunner,
    stall_timeout: float | None,
    time_limit: float | None,
    on_progress: Callable[[RestoreProgress], None] | None,
) -> _Stream:
    """Stream the artifact into ``sink`` once the stored object has the recorded size."""
    if manifest.encrypted:
        parse_identities(identities)
    try:
        info = await storage.stat(manifest.key)
    except StorageError as exc:
        raise storage_error(exc, "read") from exc
    if info.size != manifest.size_bytes:
        raise BackupError(
            ErrorCode.CHECKSUM_MISMATCH,
            f"stored object is {info.size} bytes, the manifest says {manifest.size_bytes}",
            stage="verify",
        )
    stream = _Stream(
        storage,
        manifest,
        sink,
        identities,
        stall_timeout=stall_timeout,
        time_limit=time_limit,
        on_progress=on_progress,
    )
    await stream.run(runner)
    return stream


async def check_stored(storage: StorageBackend, key: str, size_bytes: int, sha256: str) -> int:
    """Re-read ``key``: its size and sha256 must be the recorded ones."""
    try:
        info = await storage.stat(key)
        if info.size != size_bytes:
            raise BackupError(
                ErrorCode.CHECKSUM_MISMATCH,
                f"stored object {key} is {info.size} bytes, the manifest says {size_bytes}",
                stage="verify",
            )
        digest = hashlib.sha256()
        size = 0
        reader = await storage.open_reader(key)
        async with reader:
            while chunk := await reader.read(BLOCK_SIZE):
                await asyncio.to_thread(digest.update, chunk)
                size += len(chunk)
    except StorageError as exc:
        raise storage_error(exc, "verify") from exc
    if size != size_bytes or digest.hexdigest() != sha256:
        raise BackupError(
            ErrorCode.CHECKSUM_MISMATCH,
            f"sha256 of the stored object {key} is {digest.hexdigest()}, "
            f"the manifest says {sha256}",
            stage="verify",
        )
    return size


class _Totals:
    """The progress of several streams reported as one."""

    def __init__(self, on_progress: Callable[[RestoreProgress], None] | None) -> None:
        self.on_progress = on_progress
        self.seen: dict[int, RestoreProgress] = {}

    def reporter(self, part: int) -> Callable[[RestoreProgress], None] | None:
        cb = self.on_progress
        if cb is None:
            return None

        def report(p: RestoreProgress) -> None:
            self.seen[part] = p
            done = self.seen.values()
            cb(
                RestoreProgress(
                    sum(x.bytes_read for x in done),
                    sum(x.bytes_restored for x in done),
                    p.elapsed_seconds,
                )
            )

        return report


async def _restore_parts(
    storage: StorageBackend,
    manifest: Manifest,
    make_sink: Callable[[int, int], Awaitable[Sink]],
    identities: Sequence[str],
    runner: CommandRunner,
    stall_timeout: float | None,
    time_limit: float | None,
    on_progress: Callable[[RestoreProgress], None] | None,
) -> tuple[int, int]:
    """pre-data, the data parts concurrently, post-data, each into ``make_sink(index,
    count)``; ``(bytes read, restored)``."""
    totals = _Totals(on_progress)
    parts = manifest.part_manifests()

    async def one(i: int, part: Manifest) -> _Stream:
        sink = await make_sink(i, len(parts))
        return await run_stream(
            storage, part, sink, identities, runner, stall_timeout, time_limit, totals.reporter(i)
        )

    streams = [await one(0, parts[0])]
    data = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(parts[1:-1], start=1)]
    try:
        streams += await asyncio.gather(*data)
    except BaseException:
        for task in data:
            task.cancel()
        await asyncio.gather(*data, return_exceptions=True)
        raise
    streams.append(await one(len(parts) - 1, parts[-1]))
    return sum(s.bytes_read for s in streams), sum(s.bytes_out for s in streams)


def _pg_part_sinks(
    target: PostgresTarget, runner: CommandRunner, time_limit: float | None
) -> Callable[[int, int], Awaitable[Sink]]:
    """The target is prepared (created, or found empty) once, with the first part;
    post-data gets ``pg_restore --jobs``, one job per data part."""
    rest = dataclasses.replace(
        target,
        create=False,
        replace=False,
        allow_non_empty=True,
        clean=False,
        jobs=1,
        single_transaction=True,
    )

    async def make(i: int, count: int) -> Sink:
        post = dataclasses.replace(rest, jobs=max(target.jobs, count - 2))
        return await pg_sink(
            runner, target if i == 0 else post if i == count - 1 else rest, time_limit
        )

    return make


def _mysql_part_sinks(admin: MySQLAdmin) -> Callable[[int, int], Awaitable[Sink]]:
    async def make(_i: int, _count: int) -> Sink:
        return admin.sink()

    return make


async def drop_created(runner: CommandRunner, target: RestoreTarget) -> None:
    """A database this restore created is dropped again when the restore fails."""
    with contextlib.suppress(BaseException):
        if isinstance(target, PostgresTarget) and target.create:
            await pg_query(
                runner,
                target.conn.with_database("postgres"),
                f"DROP DATABASE IF EXISTS {postgres.quote_ident(target.conn.database)} "
                "WITH (FORCE)",
                "cleanup",
            )
        elif isinstance(target, MySQLTarget) and target.create:
            client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
            name = mysql.quote_ident(target.conn.database)
            await runner.run(
                mysql_client_command(client, target.conn, "-e", f"DROP DATABASE IF EXISTS {name}")
            )


async def run_restore(
    storage: StorageBackend,
    manifest: Manifest,
    target: RestoreTarget,
    *,
    identities: Sequence[str] = (),
    runner: CommandRunner | None = None,
    stall_timeout: float | None = 600.0,
    time_limit: float | None = None,
    on_progress: Callable[[RestoreProgress], None] | None = None,
    on_write: Callable[[], Awaitable[None]] | None = None,
) -> RestoreResult:
    """Restore the artifact described by ``manifest`` into ``target``.

    Raises a classified :class:`BackupError`; a restore never reports success on a
    damaged artifact. ``on_write`` is awaited once every check passed, just before the
    first change to a database target (see :class:`MySQLTarget`).
    """
    runner = runner or LocalRunner()
    t0 = time.monotonic()
    _check_format(manifest, target)
    if isinstance(target, PostgresTarget) and target.restore_globals:
        globals_manifest(manifest)  # refuse early, before creating anything
    sink: Sink | None = None
    part_sinks: Callable[[int, int], Awaitable[Sink]] | None = None
    warnings: list[str] = []
    if isinstance(target, PostgresTarget) and manifest.parts:
        if target.replace and not target.create:
            raise BackupError(
                ErrorCode.INVALID_CONFIG,
                "a parallel backup cannot replace a database in one transaction: restore "
                "it into a new database",
                stage="check",
            )
        if not target.create:  # nothing to drop again: every part is proven whole first
            if manifest.encrypted:
                parse_identities(identities)
            for part in manifest.part_manifests():
                await check_stored(storage, part.key, part.size_bytes, part.sha256)
        if on_write is not None:
            await on_write()
        part_sinks = _pg_part_sinks(target, runner, time_limit)
        label = f"postgresql://{target.conn.host}:{target.conn.port}/{target.conn.database}"
    elif isinstance(target, PostgresTarget):
        if on_write is not None:
            await on_write()
        sink = await pg_sink(runner, target, time_limit)
        label = f"postgresql://{target.conn.host}:{target.conn.port}/{target.conn.database}"
    elif isinstance(target, MySQLTarget):
        client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
        admin = MySQLAdmin(runner, target.conn, client)
        await admin.check(target)
        # The whole artifact (every part) first, on this host: nothing reaches the
        # target before it is proven whole.
        checked = _Totals(on_progress)
        for i, part in enumerate(manifest.part_manifests()):
            await run_stream(
                storage,
                part,
                TrailerSink(MYSQL_TRAILER),
                identities,
                LocalRunner(),
                stall_timeout,
                time_limit,
                checked.reporter(i),
            )
        if on_write is not None:
            await on_write()
        await admin.prepare(target)
        if manifest.parts:  # each part through its own client and connection
            part_sinks = _mysql_part_sinks(admin)
        else:
            sink = admin.sink()
        label = f"mysql://{target.conn.host}:{target.conn.port}/{target.conn.database}"
    elif isinstance(target, SqliteTarget):
        sink = SqliteSink(_absolute(target.path), overwrite=target.overwrite)
        label = target.path
    else:
        sink = TarSink(await tar_path(runner), _absolute(target.path))
        label = target.path
    try:
        if isinstance(target, PostgresTarget) and target.restore_globals:
            # Roles first, so the dump's owners and grants find them.
            with globals_part():
                warnings += await _restore_globals(
                    storage, manifest, target, identities, runner, stall_timeout, time_limit
                )
        if part_sinks is not None:
            read, restored = await _restore_parts(
                storage,
                manifest,
                part_sinks,
                identities,
                runner,
                stall_timeout,
                time_limit,
                on_progress,
            )
        else:
            assert sink is not None
            stream = await run_stream(
                storage, manifest, sink, identities, runner, stall_timeout, time_limit, on_progress
            )
            read, restored = stream.bytes_read, stream.bytes_out
    except BaseException:
        await drop_created(runner, target)
        raise
    return RestoreResult(
        key=manifest.key,
        target=label,
        bytes_read=read,
        bytes_restored=restored,
        sha256=manifest.sha256,
        duration_seconds=time.monotonic() - t0,
        tool=sink.name
        if sink is not None
        else "mariadb"
        if isinstance(target, MySQLTarget)
        else "pg_restore",
        warnings=tuple(warnings),
        globals_restored=isinstance(target, PostgresTarget) and target.restore_globals,
    )


@contextlib.contextmanager
def globals_part() -> Iterator[None]:
    """The cluster globals beside a dump are not found: the backup is damaged (its dump
    may still restore), not gone."""
    try:
        yield
    except BackupError as err:
        if err.code is not ErrorCode.ARTIFACT_MISSING:
            raise
        raise BackupError(
            ErrorCode.VERIFY_FAILED,
            f"the cluster globals saved beside the dump are missing ({err.message})",
            stage="globals",
        ) from None


def globals_manifest(manifest: Manifest) -> Manifest:
    """A manifest for the globals object, to stream it through the same checks."""
    g: GlobalsInfo | None = manifest.globals
    if g is None or not g.saved or g.key is None or g.size_bytes is None or g.sha256 is None:
        why = f" ({g.status}: {g.reason})" if g is not None and g.reason else ""
        raise BackupError(
            ErrorCode.INVALID_CONFIG,
            f"this backup has no saved cluster globals to restore{why}",
            stage="globals",
        )
    return dataclasses.replace(
        manifest,
        key=g.key,
        size_bytes=g.size_bytes,
        original_size_bytes=g.original_size_bytes or 0,
        sha256=g.sha256,
        dump_format="pg_globals_sql",
        row_counts=None,
        globals=None,
    )


async def _restore_globals(
    storage: StorageBackend,
    manifest: Manifest,
    target: PostgresTarget,
    identities: Sequence[str],
    runner: CommandRunner,
    stall_timeout: float | None,
    time_limit: float | None,
) -> list[str]:
    """Feed the verified globals to ``psql -v ON_ERROR_STOP=0``; its errors are returned
    as warnings (typically roles that already exist). psql failing to run fails."""
    gmanifest = globals_manifest(manifest)
    psql = (await select_pg_tool(runner, "psql", None)).path
    conn = target.conn
    command = Command(
        (
            psql,
            *conn.args(),
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=0",
            f"--dbname=dbname={quote_conninfo(conn.database)}",
            "--file=-",
        ),
        env=conn.env(),
        secrets=conn.secrets(),
    )
    sink = ProcessSink("psql", command, classify_pg_error)
    await run_stream(storage, gmanifest, sink, identities, runner, stall_timeout, time_limit, None)
    stderr = sink.process.stderr_tail(60_000) if sink.process is not None else ""
    return [f"globals: {ln.strip()}" for ln in stderr.splitlines() if "ERROR" in ln]
