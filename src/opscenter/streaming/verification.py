"""Verification of stored artifacts: ``quick_verify`` re-reads the object and checks
its size and sha256; ``deep_verify`` streams it through the restore's checks into a
sink that parses the whole dump without touching any database. A parallel backup is
checked part by part, every part.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.postgres import select_pg_tool
from opscenter.remote.runner import Command, CommandRunner, LocalRunner
from opscenter.stores.backends import StorageBackend
from opscenter.streaming.manifest import Manifest
from opscenter.streaming.restore import check_stored, globals_manifest, globals_part, run_stream
from opscenter.streaming.sinks import (
    MYSQL_TRAILER,
    ProcessSink,
    Sink,
    SqliteSink,
    TrailerSink,
    tar_path,
)

__all__ = ["VerifyResult", "deep_verify", "quick_verify"]

#: The last line pg_dumpall writes.
PG_GLOBALS_TRAILER = b"PostgreSQL database cluster dump complete"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    key: str
    level: str  # "quick" | "deep"
    size_bytes: int
    sha256: str
    dump_bytes: int | None
    duration_seconds: float
    detail: str = ""


async def deep_verify(
    storage: StorageBackend,
    manifest: Manifest,
    *,
    identities: Sequence[str] = (),
    runner: CommandRunner | None = None,
    stall_timeout: float | None = 600.0,
    time_limit: float | None = None,
) -> VerifyResult:
    """Read, check sha256, decrypt, decompress and parse the whole dump.

    PostgreSQL: ``pg_restore -f /dev/null`` reads every data block (``--list`` would
    pass on a half file), and the cluster globals beside it must end with pg_dumpall's
    trailer. MySQL: the ``-- Dump completed`` trailer. SQLite: ``PRAGMA
    integrity_check`` of a temp copy. tar: ``tar --list`` of the whole stream.
    """
    runner = runner or LocalRunner()
    t0 = time.monotonic()
    make_sink: Callable[[], Sink]
    fmt = manifest.dump_format
    if fmt == "pg_custom":
        tool = await select_pg_tool(runner, "pg_restore", None)

        def make_sink() -> Sink:
            return ProcessSink(
                "pg_restore",
                Command((tool.path, "--file=/dev/null")),
                lambda _s: None,
                failure_code=ErrorCode.VERIFY_FAILED,
            )
    elif fmt == "mysql_sql":

        def make_sink() -> Sink:
            return TrailerSink(MYSQL_TRAILER)
    elif fmt == "sqlite_db":

        def make_sink() -> Sink:
            return SqliteSink(None)
    elif fmt == "tar":
        tar = await tar_path(runner)

        def make_sink() -> Sink:
            return ProcessSink(
                "tar",
                Command((tar, "--list", "--file=-")),
                lambda _s: None,
                failure_code=ErrorCode.VERIFY_FAILED,
            )
    else:
        raise BackupError(ErrorCode.INVALID_CONFIG, f"unknown dump format {fmt!r}")
    read = dumped = 0
    for part in manifest.part_manifests():  # every part of a parallel backup
        sink = make_sink()
        stream = await run_stream(
            storage, part, sink, identities, runner, stall_timeout, time_limit, None
        )
        read, dumped = read + stream.bytes_read, dumped + stream.bytes_out
    detail = f"{sink.name}: whole dump parsed"
    if manifest.parts:
        detail += f" ({len(manifest.parts)} parts)"
    g = manifest.globals
    if g is not None and g.saved:
        # The globals beside it: checked, decrypted, decompressed, and complete.
        with globals_part():
            await run_stream(
                storage,
                globals_manifest(manifest),
                TrailerSink(PG_GLOBALS_TRAILER, name="globals"),
                identities,
                runner,
                stall_timeout,
                time_limit,
                None,
            )
        detail += "; cluster globals complete"
    return VerifyResult(
        key=manifest.key,
        level="deep",
        size_bytes=read,
        sha256=manifest.sha256,
        dump_bytes=dumped,
        duration_seconds=time.monotonic() - t0,
        detail=detail,
    )


async def quick_verify(storage: StorageBackend, manifest: Manifest) -> VerifyResult:
    """The object exists with the recorded size, and its sha256 re-read from storage
    matches; so do the cluster globals saved beside it, if any."""
    t0 = time.monotonic()
    size = 0
    for part in manifest.part_manifests():
        size += await check_stored(storage, part.key, part.size_bytes, part.sha256)
    g = manifest.globals
    if g is not None and g.saved:
        gm = globals_manifest(manifest)
        with globals_part():
            await check_stored(storage, gm.key, gm.size_bytes, gm.sha256)
    return VerifyResult(
        key=manifest.key,
        level="quick",
        size_bytes=size,
        sha256=manifest.sha256,
        dump_bytes=None,
        duration_seconds=time.monotonic() - t0,
        detail="with the cluster globals" if g is not None and g.saved else "",
    )
