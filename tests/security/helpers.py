"""Scanner reports written the way the tools write them (Trivy JSON SchemaVersion 2,
Grype JSON, OSV-Scanner JSON), the multipart upload, and a team with an operator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Api, CreatedUser, UserFactory
from tests.schedules.helpers import uid

FIXTURES = Path(__file__).parent / "fixtures"
IMPORTS = "/api/v1/security/imports"
VULNS = "/api/v1/security/vulnerabilities"
ASSETS = "/api/v1/secops/assets"


@dataclass(frozen=True)
class Vuln:
    id: str
    package: str
    version: str
    severity: str = "HIGH"
    fixed: str = ""
    vector: str | None = None
    cwe: str | None = None
    title: str = ""


def trivy(vulns: list[Vuln], target: str = "registry.local/shop:1.4 (debian 12.8)") -> bytes:
    """`trivy image --format json` (https://trivy.dev/latest/docs/configuration/reporting/)."""
    return json.dumps(
        {
            "SchemaVersion": 2,
            "CreatedAt": "2026-12-01T10:00:00Z",
            "ArtifactName": "registry.local/shop:1.4",
            "ArtifactType": "container_image",
            "Metadata": {"OS": {"Family": "debian", "Name": "12.8"}},
            "Results": [
                {
                    "Target": target,
                    "Class": "os-pkgs",
                    "Type": "debian",
                    "Vulnerabilities": [
                        {
                            "VulnerabilityID": v.id,
                            "PkgID": f"{v.package}@{v.version}",
                            "PkgName": v.package,
                            "InstalledVersion": v.version,
                            **({"FixedVersion": v.fixed} if v.fixed else {}),
                            "Status": "fixed" if v.fixed else "affected",
                            "SeveritySource": "nvd",
                            "PrimaryURL": f"https://avd.aquasec.com/nvd/{v.id.lower()}",
                            "Title": v.title or f"{v.package}: flaw {v.id}",
                            "Description": "A flaw was found.",
                            "Severity": v.severity,
                            **({"CweIDs": [v.cwe]} if v.cwe else {}),
                            **(
                                {"CVSS": {"nvd": {"V3Vector": v.vector, "V3Score": 0.0}}}
                                if v.vector
                                else {}
                            ),
                        }
                        for v in vulns
                    ],
                }
            ],
        }
    ).encode()


def grype(vulns: list[Vuln]) -> bytes:
    """`grype <image> -o json` (https://github.com/anchore/grype, JSON presenter)."""
    return json.dumps(
        {
            "matches": [
                {
                    "vulnerability": {
                        "id": v.id,
                        "dataSource": f"https://nvd.nist.gov/vuln/detail/{v.id}",
                        "namespace": "nvd:cpe",
                        "severity": v.severity.capitalize(),
                        "description": v.title or f"{v.package} flaw",
                        "cvss": (
                            [
                                {
                                    "source": "nvd@nist.gov",
                                    "type": "Primary",
                                    "version": v.vector.split("/")[0].split(":")[1],
                                    "vector": v.vector,
                                    "metrics": {"baseScore": 0.0},
                                }
                            ]
                            if v.vector
                            else []
                        ),
                        "fix": {
                            "versions": [v.fixed] if v.fixed else [],
                            "state": "fixed" if v.fixed else "not-fixed",
                        },
                    },
                    "relatedVulnerabilities": (
                        [{"id": v.id, "namespace": "nvd:cpe", "cwes": [v.cwe]}] if v.cwe else []
                    ),
                    "matchDetails": [{"type": "exact-direct-match", "matcher": "python-matcher"}],
                    "artifact": {
                        "id": f"{v.package}-{v.version}",
                        "name": v.package,
                        "version": v.version,
                        "type": "python",
                        "locations": [{"path": "/app/requirements.txt"}],
                        "language": "python",
                        "purl": f"pkg:pypi/{v.package}@{v.version}",
                    },
                }
                for v in vulns
            ],
            "source": {"type": "directory", "target": "/app"},
            "distro": {"name": "", "version": ""},
            "descriptor": {"name": "grype", "version": "0.92.2"},
        }
    ).encode()


def osv(vulns: list[Vuln]) -> bytes:
    """`osv-scanner --format json` (https://google.github.io/osv-scanner/output/), each
    record in the OSV schema (https://ossf.github.io/osv-schema/)."""
    packages: dict[tuple[str, str], list[Vuln]] = {}
    for v in vulns:
        packages.setdefault((v.package, v.version), []).append(v)
    return json.dumps(
        {
            "results": [
                {
                    "source": {"path": "/app/package-lock.json", "type": "lockfile"},
                    "packages": [
                        {
                            "package": {"name": name, "version": version, "ecosystem": "npm"},
                            "vulnerabilities": [
                                {
                                    "id": v.id,
                                    "aliases": [],
                                    "summary": v.title or f"{name} flaw",
                                    "severity": (
                                        [
                                            {
                                                "type": "CVSS_V4"
                                                if v.vector.startswith("CVSS:4.0")
                                                else "CVSS_V3",
                                                "score": v.vector,
                                            }
                                        ]
                                        if v.vector
                                        else []
                                    ),
                                    "affected": [
                                        {
                                            "package": {"ecosystem": "npm", "name": name},
                                            "ranges": [
                                                {
                                                    "type": "SEMVER",
                                                    "events": [
                                                        {"introduced": "0"},
                                                        *([{"fixed": v.fixed}] if v.fixed else []),
                                                    ],
                                                }
                                            ],
                                        }
                                    ],
                                    "database_specific": {
                                        "severity": v.severity,
                                        "cwe_ids": [v.cwe] if v.cwe else [],
                                    },
                                }
                                for v in found
                            ],
                            "groups": [{"ids": [v.id for v in found]}],
                        }
                        for (name, version), found in packages.items()
                    ],
                }
            ]
        }
    ).encode()


async def upload(
    client: httpx.AsyncClient,
    content: bytes,
    *,
    filename: str = "report.json",
    **fields: Any,
) -> httpx.Response:
    return await client.post(
        IMPORTS,
        data={k: str(v) for k, v in fields.items()},
        files={"file": (filename, content, "application/json")},
    )


async def imported(client: httpx.AsyncClient, content: bytes, **fields: Any) -> dict[str, Any]:
    r = await upload(client, content, **fields)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


@dataclass
class Team:
    id: int
    operator: CreatedUser
    client: httpx.AsyncClient


async def own_team(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, role: str = "operator"
) -> Team:
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("sec-")})).json()
    user = await make_user(role, team_ids=[team["id"]])
    return Team(team["id"], user, user.client(api))


async def new_asset(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await client.post(ASSETS, json={"name": uid("asset-"), "kind": "service", **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def findings(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(VULNS, params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items
