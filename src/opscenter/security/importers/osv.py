"""OSV-Scanner JSON (`osv-scanner --format json`): `results[].packages[]`, each package
with the OSV records (https://ossf.github.io/osv-schema/) that affect it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opscenter.security.importers import ParsedFinding, Reader, cwe_of, scored, severity


def looks_like(report: Any) -> bool:
    results = report.get("results") if isinstance(report, dict) else None
    return isinstance(results, list) and (not results or "packages" in results[0])


def _vector(record: Reader) -> str | None:
    """The newest CVSS vector the record carries (`severity[].type` CVSS_V4 or CVSS_V3)."""
    by_type = {s.text("type"): s.text("score", limit=200) for s in record.items("severity")}
    return by_type.get("CVSS_V4") or by_type.get("CVSS_V3") or by_type.get("CVSS_V2")


def _fixed(record: Reader, name: str) -> str:
    fixed = [
        str(event["fixed"])
        for affected in record.items("affected")
        if (affected.get("package") or {}).get("name") == name
        for ranges in affected.items("ranges")
        for event in ranges.value.get("events") or []
        if isinstance(event, dict) and "fixed" in event
    ]
    return ", ".join(fixed)[:200]


def parse(report: Any) -> Iterator[ParsedFinding]:
    root = Reader(report)
    if not isinstance(root.get("results"), list):
        raise root.problem("results must be a list (OSV-Scanner JSON)")
    for result in root.items("results"):
        source = result.obj("source", required=False)
        path = source.text("path") if source else ""
        for entry in result.items("packages", required=True):
            package = entry.need("package")
            name = package.text("name", required=True, limit=300)
            for record in entry.items("vulnerabilities"):
                identifier = record.text("id", required=True, limit=200)
                vector, score = scored(record, _vector(record))
                specific = record.obj("database_specific", required=False)
                rating = specific.text("severity") if specific else ""
                yield ParsedFinding(
                    identifier=identifier,
                    title=record.text("summary") or record.text("details") or identifier,
                    severity=severity(record, rating, score),
                    cwe=cwe_of(specific.strings("cwe_ids")) if specific else None,
                    cvss_vector=vector,
                    cvss_score=score,
                    component=name,
                    version=package.text("version", limit=100),
                    fixed_version=_fixed(record, name),
                    location=path,
                )
