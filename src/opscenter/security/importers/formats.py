"""Which format a report is, and reading one whole into findings."""

from __future__ import annotations

import json
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


def read(path: Path, claimed: Scanner | None) -> tuple[Scanner, list[ParsedFinding]]:
    """The report's format (the one claimed, or the one it looks like) and every finding
    in it. Raises ReportProblem for the first thing wrong: nothing half-read is returned."""
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
