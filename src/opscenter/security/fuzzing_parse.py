"""Reading fuzzing output: libFuzzer's stderr log and AFL++'s `fuzzer_stats`, and the
sanitizer crash reports either holds. A crash's identity is its stack hash: the kind of
crash and the top symbolized frames of the program itself, without addresses, offsets or
line numbers (so two builds, or two runs at other addresses, hash the same)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: Frames of the program that make a crash's identity (ClusterFuzz uses three too).
HASH_FRAMES = 3


class OutputProblem(Exception):
    """The output is not what the engine writes; `str()` says what is wrong."""


@dataclass
class Crash:
    kind: str
    access: str | None  # READ / WRITE, when the sanitizer says
    frames: list[str]  # "function file:line", the program's own, top first
    summary: str
    artifacts: list[str] = field(default_factory=list)

    @property
    def stack_hash(self) -> str:
        top = [f.split(" ", 1)[0] for f in self.frames[:HASH_FRAMES]]
        return hashlib.sha256("\n".join([self.kind, *top]).encode()).hexdigest()

    @property
    def severity(self) -> str:
        return severity_of(self.kind, self.access)


@dataclass
class Stats:
    started_at: datetime | None = None
    duration_seconds: float | None = None
    executions: int = 0
    execs_per_second: float | None = None
    coverage_edges: int | None = None
    coverage_percent: float | None = None
    corpus_size: int | None = None
    crashes: list[Crash] = field(default_factory=list)


# Memory errors that let an attacker write are the worst; reads leak; the rest stop it.
_MEMORY = {
    "heap-buffer-overflow",
    "stack-buffer-overflow",
    "global-buffer-overflow",
    "dynamic-stack-buffer-overflow",
    "stack-buffer-underflow",
    "heap-use-after-free",
    "stack-use-after-return",
    "stack-use-after-scope",
    "container-overflow",
    "use-after-poison",
}
_LOW = {"timeout", "out-of-memory", "memory-leak", "malloc-limit", "rss-limit"}


def severity_of(kind: str, access: str | None) -> str:
    if kind in _MEMORY:
        return "critical" if access == "WRITE" else "high"
    if kind in {"double-free", "attempting-double-free", "bad-free"}:
        return "high"
    if kind == "SEGV":
        return "high" if access == "WRITE" else "medium"
    if kind in _LOW:
        return "low"
    return "medium"


_ERROR = re.compile(
    r"==\d+==\s*ERROR: (?P<tool>AddressSanitizer|MemorySanitizer|LeakSanitizer|"
    r"ThreadSanitizer|UndefinedBehaviorSanitizer|libFuzzer): (?P<what>.*)"
)
_ACCESS = re.compile(r"^(READ|WRITE) of size \d+")
_SEGV_ACCESS = re.compile(r"The signal is caused by a (READ|WRITE) memory access")
_FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ in (?P<fn>.+?) (?P<where>\S+?)(?::\d+)*$")
_FRAME_NOSYM = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ (?:in \S+ )?\(")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_SUMMARY = re.compile(r"^SUMMARY: (.*)")
# Frames of the sanitizer runtime, libFuzzer, the C library and the harness's `main`.
_RUNTIME = re.compile(
    r"^(__asan|__interceptor_|__sanitizer|__ubsan|__msan|__lsan|__tsan|___interceptor|"
    r"fuzzer::|__libc_|_start$|main$|abort$|raise$|__GI_|__pthread_kill|operator new|"
    r"operator delete|malloc$|calloc$|realloc$|free$|memcpy$|memmove$|memset$|strlen$)"
)


def _kind(tool: str, what: str) -> str:
    if tool == "LeakSanitizer":
        return "memory-leak"
    if tool == "libFuzzer":
        # "deadly signal", "timeout after 25 seconds", "out-of-memory (malloc(...))"
        return "deadly-signal" if what.startswith("deadly signal") else what.split()[0]
    head = what.split()[0] if what.split() else "unknown"
    return head.rstrip(":")[:100]


def crashes(lines: Iterable[str]) -> list[Crash]:
    """Every sanitizer or libFuzzer crash report in the text, in order. A libFuzzer
    `deadly signal` right after a sanitizer report is that report, not another crash."""
    found: list[Crash] = []
    current: Crash | None = None
    in_stack = False  # reading the first stack of the current report
    stack_done = False
    for line in lines:
        # A cheap test first: a long campaign's log is mostly status lines.
        error = _ERROR.search(line) if "ERROR: " in line else None
        if error:
            tool, what = error["tool"], error["what"].strip()
            if current is not None and tool == "libFuzzer" and not current.artifacts:
                continue  # libFuzzer's own line about the sanitizer crash being handled
            current = Crash(_kind(tool, what), None, [], what[:500])
            found.append(current)
            in_stack = stack_done = False
            continue
        if current is None:
            continue
        if "Test unit" in line and (artifact := _ARTIFACT.search(line)):
            current.artifacts.append(artifact[1].rsplit("/", 1)[-1])
            continue
        if current.access is None and (access := _ACCESS.match(line) or _SEGV_ACCESS.search(line)):
            current.access = access[1]
        if summary := _SUMMARY.match(line):
            current.summary = summary[1][:500]
        if stack_done:
            continue
        frame = _FRAME.match(line)
        if frame and not _FRAME_NOSYM.match(line):
            in_stack = True
            fn = frame["fn"].strip()
            if not _RUNTIME.match(fn):
                current.frames.append(f"{fn} {frame['where'].rsplit('/', 1)[-1]}")
        elif _FRAME_NOSYM.match(line):
            in_stack = True
        elif in_stack:
            stack_done = True  # the first stack ended: "allocated by" stacks are not it
    return found


_STATUS = re.compile(
    r"^#(?P<n>\d+)\s+(?P<event>INITED|NEW|REDUCE|pulse|DONE|RELOAD)\s+cov: (?P<cov>\d+)"
    r".*?corp: (?P<corp>\d+)/"
)
_EXECS_PER_SEC = re.compile(r"exec/s: (\d+)")
_FORK_STATUS = re.compile(
    r"^#(?P<n>\d+): cov: (?P<cov>\d+) ft: \d+ corp: (?P<corp>\d+) .*time: (?P<time>\d+)s"
)
_PCS = re.compile(r"INFO: Loaded \d+ PC tables \((\d+) PCs\)")
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second")
_FUZZED = re.compile(r"^INFO: fuzzed for (\d+) seconds")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")


def libfuzzer(text: str) -> Stats:
    """One libFuzzer run's stderr (`-print_final_stats=1` adds the exact executions).
    Coverage and corpus only grow, so the last status line holds the run's figures."""
    stats = Stats()
    lines = text.splitlines()
    pcs = 0
    last_n = 0
    status = [line for line in lines if line.startswith("#")]
    for line in reversed(status):
        m = _STATUS.match(line) or _FORK_STATUS.match(line)
        if m is None:
            continue
        last_n = int(m["n"])
        stats.coverage_edges, stats.corpus_size = int(m["cov"]), int(m["corp"])
        if m.re is _FORK_STATUS:
            stats.duration_seconds = float(m["time"])
        # exec/s is 0 until the first second has passed: not a rate yet.
        if (eps := _EXECS_PER_SEC.search(line)) and int(eps[1]) > 0:
            stats.execs_per_second = float(eps[1])
        break
    for line in lines:
        if not line.startswith(("INFO", "Done", "stat::")):
            continue
        if m := _PCS.search(line):
            pcs += int(m[1])
        elif m := _DONE.match(line):
            last_n = int(m[1])
            stats.duration_seconds = float(m[2])
        elif m := _FUZZED.match(line):
            stats.duration_seconds = max(stats.duration_seconds or 0.0, float(m[1]))
        elif m := _STAT.match(line):
            if m[1] == "number_of_executed_units":
                stats.executions = int(m[2])
            elif m[1] == "average_exec_per_sec" and int(m[2]) > 0:
                stats.execs_per_second = float(m[2])
    if not last_n and not pcs:
        raise OutputProblem("no libFuzzer status lines (#N INITED/NEW/DONE cov: ...)")
    stats.executions = stats.executions or last_n
    if pcs and stats.coverage_edges is not None:
        stats.coverage_percent = round(100.0 * stats.coverage_edges / pcs, 2)
    stats.crashes = crashes(lines)
    return stats


_AFL_LINE = re.compile(r"^(\w+)\s*:\s*(.*)$")
_AFL_CRASH = re.compile(r"^id:\d{6},(?:sig:\d+,)?")


def afl_stats(text: str, crash_files: list[tuple[str, str]]) -> Stats:
    """AFL++'s `fuzzer_stats` (key : value lines) and its `crashes/` files, each with the
    sanitizer report of replaying it ("" if not replayed: the crash is then known by its
    signal only)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if m := _AFL_LINE.match(line.strip()):
            values[m[1]] = m[2].strip()
    missing = [k for k in ("start_time", "last_update", "execs_done") if k not in values]
    if missing:
        raise OutputProblem(f"fuzzer_stats has no {missing[0]}")
    try:
        start, last = int(values["start_time"]), int(values["last_update"])
        stats = Stats(
            started_at=datetime.fromtimestamp(start, UTC),
            duration_seconds=float(values.get("run_time") or (last - start)),
            executions=int(values["execs_done"]),
            execs_per_second=float(values["execs_per_sec"]) if "execs_per_sec" in values else None,
            coverage_edges=int(values["edges_found"]) if "edges_found" in values else None,
            coverage_percent=(
                float(values["bitmap_cvg"].rstrip("%")) if "bitmap_cvg" in values else None
            ),
            corpus_size=int(values.get("corpus_count") or values.get("paths_total") or 0),
        )
    except (ValueError, OverflowError, OSError) as err:
        raise OutputProblem(f"fuzzer_stats has a value that is not a number ({err})") from None
    for name, report in crash_files:
        if not _AFL_CRASH.match(name):
            raise OutputProblem(f"{name!r} is not an AFL++ crash file name (id:000000,...)")
        found = crashes(report.splitlines()) if report.strip() else []
        if report.strip() and not found:
            raise OutputProblem(f"the report of {name} holds no sanitizer crash report")
        for crash in found or [Crash(f"signal-{_signal(name)}", None, [], f"AFL++ crash {name}")]:
            crash.artifacts.append(name)
            stats.crashes.append(crash)
    return stats


def _signal(name: str) -> str:
    m = re.search(r"sig:(\d+)", name)
    return m[1] if m else "unknown"
