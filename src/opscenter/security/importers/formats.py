"""Which format a report is, and reading one whole into findings."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import ModuleType

from opscenter.security.importers import ParsedFinding, ReportProblem, grype, osv, sarif, trivy


class Scanner(StrEnum):
    SARIF = "sarif"
    TRIVY = "trivy"
    GRYPE = "grype"
    OSV = "osv"
    FUZZING = "fuzzing"  # crashes of fuzzing campaigns (security/fuzzing.py), not a report


#: The report formats POST /security/imports reads.
REPORTS = (Scanner.SARIF, Scanner.TRIVY, Scanner.GRYPE, Scanner.OSV)


MODULES: dict[Scanner, ModuleType] = {
    Scanner.SARIF: sarif,
    Scanner.TRIVY: trivy,
    Scanner.GRYPE: grype,
    Scanner.OSV: osv,
}


#: How much of a large report is checked in the request before a job reads it whole.
SNIFF_BYTES = 64 * 1024
# Keys at the top of each format's JSON, as the tools write them first.
_HEAD_KEYS: dict[Scanner, tuple[str, ...]] = {
    Scanner.SARIF: ('"runs"', '"version"'),
    Scanner.TRIVY: ('"SchemaVersion"',),
    Scanner.GRYPE: ('"matches"',),
    Scanner.OSV: ('"results"',),
}


def sniff(path: Path, claimed: Scanner | None) -> Scanner:
    """The format of a report too large to read in the request, from its start: UTF-8
    text of a JSON object with the format's keys. ReportProblem when it is plainly not a
    report; the job reading it whole finds the rest."""
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not a character cut at the end of the head
            raise ReportProblem("the report is not UTF-8 text") from None
        text = head[: err.start].decode("utf-8")
    if not text.lstrip("\ufeff \t\r\n").startswith("{"):
        raise ReportProblem("the report must be a JSON object")
    if claimed is not None:
        return claimed
    found = next((s for s, keys in _HEAD_KEYS.items() if all(k in text for k in keys)), None)
    if found is None:
        raise ReportProblem("the report is none of SARIF 2.1.0, Trivy, Grype or OSV JSON")
    return found


def read(path: Path, claimed: Scanner | None) -> tuple[Scanner, list[ParsedFinding]]:
    """The report's format (the one claimed, or the one it looks like) and every finding
    in it. Raises ReportProblem for the first thing wrong: nothing half-read is returned."""
    with _collector_paused():
        try:
            with path.open("rb") as file:
                report = json.load(file)
        except UnicodeDecodeError:
            raise ReportProblem("the report is not UTF-8 text") from None
        except json.JSONDecodeError as err:
            raise ReportProblem(f"the report is not JSON (line {err.lineno}: {err.msg})") from None
        if not isinstance(report, dict):
            raise ReportProblem("the report must be a JSON object")
        scanner = claimed or next((s for s, m in MODULES.items() if m.looks_like(report)), None)
        if scanner is None:
            raise ReportProblem("the report is none of SARIF 2.1.0, Trivy, Grype or OSV JSON")
        return scanner, list(MODULES[scanner].parse(report))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A report is hundreds of thousands of fresh containers, none in a cycle (reference
    counting frees them): the cycle collector would only walk them again and again while
    they are built, nearly half the time of reading a large report."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
