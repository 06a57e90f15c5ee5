"""Trivy JSON (`trivy image|fs --format json`, SchemaVersion 2): each result's
`Vulnerabilities` (packages) and failed `Misconfigurations`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opscenter.security.importers import ParsedFinding, Reader, cwe_of, scored, severity

#: Trivy lists CVSS per source; the NVD's is preferred, then the vendor's.
_SOURCES = ("nvd", "ghsa", "redhat")


def looks_like(report: Any) -> bool:
    return isinstance(report, dict) and "SchemaVersion" in report and "ArtifactName" in report


def _vector(cvss: Reader | None) -> str | None:
    if cvss is None:
        return None
    by_source = cvss.value
    for source in (*_SOURCES, *by_source):  # preferred first, then any other
        entry = by_source.get(source)
        if isinstance(entry, dict):
            vector = entry.get("V40Vector") or entry.get("V3Vector")
            if isinstance(vector, str):
                return vector
    return None


def parse(report: Any) -> Iterator[ParsedFinding]:
    root = Reader(report)
    if root.get("SchemaVersion") != 2:
        raise root.problem("SchemaVersion must be 2 (Trivy JSON)")
    root.text("ArtifactName", required=True)
    for result in root.items("Results"):
        target = result.text("Target", required=True)
        for vuln in result.items("Vulnerabilities"):
            identifier = vuln.text("VulnerabilityID", required=True, limit=200)
            vector, score = scored(vuln, _vector(vuln.obj("CVSS", required=False)))
            yield ParsedFinding(
                identifier=identifier,
                title=vuln.text("Title")
                or vuln.text("Description")
                or vuln.value["VulnerabilityID"],
                severity=severity(vuln, vuln.text("Severity", required=True), score),
                cwe=cwe_of(vuln.strings("CweIDs")),
                cvss_vector=vector,
                cvss_score=score,
                component=vuln.text("PkgName", required=True, limit=300),
                version=vuln.text("InstalledVersion", limit=100),
                fixed_version=vuln.text("FixedVersion", limit=200),
                location=target,
            )
        for misconfig in result.items("Misconfigurations"):
            if misconfig.text("Status") == "PASS":
                continue
            yield ParsedFinding(
                identifier=misconfig.text("ID", required=True, limit=200),
                title=misconfig.text("Title") or misconfig.value["ID"],
                severity=severity(misconfig, misconfig.text("Severity", required=True), None),
                location=target,
            )
