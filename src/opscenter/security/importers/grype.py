"""Grype JSON (`grype <target> -o json`): `matches`, each a vulnerability on an artifact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opscenter.security.importers import ParsedFinding, Reader, cwe_of, scored, severity


def looks_like(report: Any) -> bool:
    return isinstance(report, dict) and "matches" in report and "descriptor" in report


def _vector(vuln: Reader) -> str | None:
    """The newest CVSS version the match carries (Grype lists v2 and v3 side by side)."""
    vectors = [c.text("vector") for c in vuln.items("cvss")]
    for prefix in ("CVSS:4.0/", "CVSS:3.1/", "CVSS:3.0/"):
        for vector in vectors:
            if vector.startswith(prefix):
                return vector
    return vectors[0] if vectors and vectors[0] else None


def parse(report: Any) -> Iterator[ParsedFinding]:
    root = Reader(report)
    if root.need("descriptor").text("name", required=True) != "grype":
        raise root.problem("descriptor.name must be grype")
    if not isinstance(root.get("matches"), list):
        raise root.problem("matches must be a list")
    for match in root.items("matches"):
        vuln = match.need("vulnerability")
        artifact = match.need("artifact")
        related = list(match.items("relatedVulnerabilities"))
        vector, score = scored(
            vuln, _vector(vuln) or next(filter(None, map(_vector, related)), None)
        )
        fix = vuln.obj("fix", required=False)
        locations = [loc.text("path") for loc in artifact.items("locations")]
        yield ParsedFinding(
            identifier=vuln.text("id", required=True, limit=200),
            title=vuln.text("description") or vuln.value["id"],
            severity=severity(vuln, vuln.text("severity", required=True), score),
            cwe=cwe_of([c for r in [vuln, *related] for c in r.strings("cwes")]),
            cvss_vector=vector,
            cvss_score=score,
            component=artifact.text("name", required=True, limit=300),
            version=artifact.text("version", limit=100),
            fixed_version=", ".join(fix.strings("versions"))[:200] if fix else "",
            location=next(filter(None, locations), ""),
        )
