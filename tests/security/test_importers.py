"""Each importer against real scanner output (bandit's and ruff's SARIF, produced by the
tools and committed) and against reports written to the tools' documented schemas; CVSS
scores against the specifications' worked examples; broken reports named precisely.

The SARIF fixtures are the tools' output for `fixtures/app.py.txt` (saved as app.py):
`bandit -f sarif -o bandit.sarif app.py` (bandit 1.9.4) and
`ruff check --select S,F,E --output-format sarif app.py > ruff.sarif` (ruff 0.17.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opscenter.security.importers import ParsedFinding, ReportProblem, cvss_score
from opscenter.security.importers.formats import Scanner, read
from opscenter.security.service import fingerprint
from tests.security.helpers import FIXTURES, Vuln, grype, osv, trivy

V31_CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
V40_NGINX = "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "report.json"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        # CVSS v3.1 specification, section 7 examples (user guide / examples document)
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),  # CVE-2014-0160 Heartbleed
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),  # CVE-2013-1937 phpMyAdmin XSS
        (V31_CRITICAL, 9.8),  # CVE-2014-6271 Shellshock
        ("CVSS:3.0/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8),  # v3.0: local, user interaction
        # CVSS v4.0 examples document
        (V40_NGINX, 8.5),  # CVE-2022-41741 nginx
        ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3),
        ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:A/VC:L/VI:L/VA:N/SC:N/SI:N/SA:N", 5.1),
        # CVSS v2 (still in older NVD records)
        ("AV:N/AC:L/Au:N/C:C/I:C/A:C", 10.0),
    ],
)
def test_cvss_scores_match_the_worked_examples(vector: str, score: float) -> None:
    assert cvss_score(vector) == score


def test_bandit_sarif_as_bandit_wrote_it(tmp_path: Path) -> None:
    scanner, found = read(FIXTURES / "bandit.sarif", None)
    assert scanner is Scanner.SARIF
    by_rule = {f.identifier: f for f in found}
    assert set(by_rule) == {"B403", "B404", "B602", "B301", "B324", "B105"}
    shell = by_rule["B602"]
    assert shell.severity == "high"  # bandit's issue_severity HIGH
    assert shell.cwe == "CWE-78"  # from the rule's tag external/cwe/cwe-78
    assert shell.location == "app.py:7"
    assert "shell=True" in shell.title
    assert by_rule["B403"].severity == "low" and by_rule["B403"].cwe == "CWE-502"


def test_ruff_sarif_as_ruff_wrote_it() -> None:
    scanner, found = read(FIXTURES / "ruff.sarif", None)
    assert scanner is Scanner.SARIF
    assert [f.identifier for f in found] == ["S602", "S301", "S324", "S105"]
    assert all(f.severity == "high" for f in found)  # level "error"
    assert found[0].location == "file:///tmp/vulnsrc/app.py:7"


def test_trivy_report(tmp_path: Path) -> None:
    report = trivy(
        [
            Vuln(
                "CVE-2024-45491",
                "libexpat1",
                "2.5.0-1",
                "CRITICAL",
                "2.5.0-1+deb12u1",
                V31_CRITICAL,
                "CWE-190",
            ),
            Vuln("CVE-2023-50495", "ncurses-base", "6.4-4", "MEDIUM"),
        ]
    )
    scanner, found = read(write(tmp_path, report), None)
    assert scanner is Scanner.TRIVY
    first, second = found
    assert (first.identifier, first.component, first.version, first.fixed_version) == (
        "CVE-2024-45491",
        "libexpat1",
        "2.5.0-1",
        "2.5.0-1+deb12u1",
    )
    assert (first.severity, first.cwe, first.cvss_vector, first.cvss_score) == (
        "critical",
        "CWE-190",
        V31_CRITICAL,
        9.8,  # computed from the vector: the report's V3Score of 0.0 is not taken
    )
    assert (second.severity, second.cvss_score, second.fixed_version) == ("medium", None, "")


def test_grype_report(tmp_path: Path) -> None:
    report = grype(
        [
            Vuln(
                "GHSA-9wx4-h78v-vm56",
                "requests",
                "2.31.0",
                "MEDIUM",
                "2.32.0",
                V40_NGINX,
                "CWE-670",
            )
        ]
    )
    scanner, [f] = read(write(tmp_path, report), None)
    assert scanner is Scanner.GRYPE
    assert (f.identifier, f.component, f.fixed_version, f.cwe) == (
        "GHSA-9wx4-h78v-vm56",
        "requests",
        "2.32.0",
        "CWE-670",
    )
    assert (f.severity, f.cvss_score, f.location) == ("medium", 8.5, "/app/requirements.txt")


def test_osv_report(tmp_path: Path) -> None:
    report = osv(
        [
            Vuln(
                "GHSA-jf85-cpcp-j695",
                "lodash",
                "4.17.11",
                "CRITICAL",
                "4.17.12",
                V31_CRITICAL,
                "CWE-20",
            ),
            Vuln("GHSA-p6mc-m468-83gw", "lodash", "4.17.11", "HIGH", "4.17.19"),
        ]
    )
    scanner, found = read(write(tmp_path, report), None)
    assert scanner is Scanner.OSV
    assert [(f.identifier, f.fixed_version, f.severity) for f in found] == [
        ("GHSA-jf85-cpcp-j695", "4.17.12", "critical"),
        ("GHSA-p6mc-m468-83gw", "4.17.19", "high"),
    ]
    assert found[0].cvss_score == 9.8 and found[0].cwe == "CWE-20"
    assert found[0].location == "/app/package-lock.json"


@pytest.mark.parametrize(
    ("content", "claimed", "problem"),
    [
        (b"\xff\xfe{", None, "not UTF-8"),
        (b'{"SchemaVersion": 2, "ArtifactName": "x", "Results": [', None, "not JSON (line 1"),
        (b'{"hello": "world"}', None, "none of SARIF 2.1.0, Trivy, Grype or OSV"),
        (b"[]", Scanner.TRIVY, "the report must be a JSON object"),
        (b'{"SchemaVersion": 2, "ArtifactName": "x"}', Scanner.SARIF, "version must be 2.1.0"),
        (
            b'{"SchemaVersion": 2, "ArtifactName": "x", "Results": [{"Target": "t", '
            b'"Vulnerabilities": [{"VulnerabilityID": "CVE-1", "Severity": "LOW"}]}]}',
            None,
            "Results[0].Vulnerabilities[0].PkgName: is missing",
        ),
        (
            b'{"SchemaVersion": 2, "ArtifactName": "x", "Results": [{"Target": "t", '
            b'"Vulnerabilities": [{"VulnerabilityID": "CVE-1", "PkgName": "p", '
            b'"Severity": "LOW", "CVSS": {"nvd": {"V3Vector": "CVSS:3.1/AV:X"}}}]}]}',
            None,
            "Results[0].Vulnerabilities[0]: 'CVSS:3.1/AV:X' is not a valid CVSS vector",
        ),
        (
            b'{"SchemaVersion": 2, "ArtifactName": "x", "Results": [{"Target": "t", '
            b'"Vulnerabilities": [{"VulnerabilityID": "CVE-1", "PkgName": "p", '
            b'"Severity": "SEVERE"}]}]}',
            None,
            "severity 'SEVERE' is not one of",
        ),
        (
            b'{"SchemaVersion": 2, "ArtifactName": "x", "Results": [{"Target": "t"}, '
            b'{"Target": "u", "Vulnerabilities": [{"VulnerabilityID": "CVE-1", '
            b'"PkgName": "p", "Severity": "LOW"}, {"VulnerabilityID": "CVE-2", '
            b'"PkgName": "p", "Severity": "LOW", "CweIDs": ["CWE-79", 79]}]}]}',
            None,
            "Results[1].Vulnerabilities[1].CweIDs: must be a list of strings",
        ),
        (b'{"matches": {}, "descriptor": {"name": "grype"}}', None, "matches must be a list"),
        (
            b'{"results": [{"packages": [{"vulnerabilities": []}]}]}',
            None,
            "results[0].packages[0].package: is missing",
        ),
        (
            b'{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, '
            b'"results": [{"message": {"text": "m"}}]}]}',
            None,
            "runs[0].results[0]: ruleId is missing",
        ),
    ],
)
def test_a_broken_report_names_its_first_problem(
    tmp_path: Path, content: bytes, claimed: Scanner | None, problem: str
) -> None:
    with pytest.raises(ReportProblem) as raised:
        read(write(tmp_path, content), claimed)
    assert problem in str(raised.value)


def test_a_findings_fingerprint_stays_what_earlier_imports_stored() -> None:
    """Reimports match findings by the stored fingerprint: its recipe never changes."""
    found = ParsedFinding(
        "CVE-2024-1",
        "t",
        "high",
        component="openssl",
        version="3.0.1",
        location="app:1 (debian 12)",
    )
    assert fingerprint(7, Scanner.TRIVY, found) == (
        "44aa2b559b84eaaa5b6d274d6ed65ec7ebf2138e294d9f090cfd965ef2a58736"
    )
