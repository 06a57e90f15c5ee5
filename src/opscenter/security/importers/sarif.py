"""SARIF 2.1.0 (ruff, bandit, Semgrep, CodeQL, ...): each run's results, rated by
`security-severity` where the tool gives one (GitHub's convention), else by the tool's
own severity property, else by the result's `level`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from opscenter.attack.catalogue import catalogue
from opscenter.security.importers import (
    ParsedFinding,
    Reader,
    cwe_of,
    severity,
    severity_of_score,
)

_LEVELS = {"error": "high", "warning": "medium", "note": "low", "none": "info"}
# ATT&CK tags as Sigma and the SARIF converters write them: `attack.t1059.001`.
_ATTACK_TAG = re.compile(r"^(?:attack[.:]|mitre[.:-]attack[.:])?(t\d{4}(?:\.\d{3})?)$", re.I)


def looks_like(report: Any) -> bool:
    return isinstance(report, dict) and "runs" in report and "version" in report


def _rating(result: Reader, rule: dict[str, Any]) -> str:
    for properties in (result.get("properties"), rule.get("properties")):
        if not isinstance(properties, dict):
            continue
        raw = properties.get("security-severity")
        if raw is not None:
            try:
                return severity_of_score(float(raw))
            except (TypeError, ValueError):
                raise result.problem(f"security-severity {raw!r} is not a number") from None
        if isinstance(properties.get("issue_severity"), str):  # bandit
            return severity(result, properties["issue_severity"], None)
    level = result.get("level") or "warning"
    if level not in _LEVELS:
        raise result.problem(f"level {level!r} is not one of {', '.join(_LEVELS)}")
    return _LEVELS[level]


def _location(result: Reader) -> str:
    for location in result.items("locations"):
        physical = location.obj("physicalLocation", required=False)
        if physical is None:
            continue
        artifact = physical.obj("artifactLocation", required=False)
        region = physical.obj("region", required=False)
        uri = artifact.text("uri") if artifact else ""
        line = region.get("startLine") if region else None
        return f"{uri}:{line}" if isinstance(line, int) else uri
    return ""


def _tags(result: Reader, rule: dict[str, Any]) -> list[Any]:
    return [
        tag
        for props in (result.get("properties"), rule.get("properties"))
        if isinstance(props, dict)
        for tag in props.get("tags") or []
    ]


def _techniques(tags: list[Any]) -> tuple[str, ...]:
    """The ATT&CK technique ids among the tags, those the catalogue knows (a tag that
    only looks like one is the tool's business, not an error)."""
    known = catalogue().techniques
    found: list[str] = []
    for tag in tags:
        m = _ATTACK_TAG.match(tag) if isinstance(tag, str) else None
        if m and (tid := m[1].upper()) in known and tid not in found:
            found.append(tid)
    return tuple(found)


def _cwe(result: Reader, rule: dict[str, Any]) -> str | None:
    tags = _tags(result, rule)
    cwe = (
        (result.get("properties") or {}).get("cwe")
        if isinstance(result.get("properties"), dict)
        else None
    )
    if isinstance(cwe, dict):  # bandit: {"id": 78, "link": ...}
        tags.append(f"CWE-{cwe.get('id')}")
    return cwe_of(tags)


def parse(report: Any) -> Iterator[ParsedFinding]:
    root = Reader(report)
    if root.get("version") != "2.1.0":
        raise root.problem("version must be 2.1.0 (SARIF)")
    runs = list(root.items("runs", required=True))
    for run in runs:
        driver = run.need("tool").need("driver")
        driver.text("name", required=True)
        rules = {r.text("id"): r.value for r in driver.items("rules")}
        for result in run.items("results"):
            message = result.need("message")
            rule_id = result.text("ruleId", limit=200)
            if not rule_id:
                rule = result.obj("rule", required=False)
                rule_id = rule.text("id", required=True, limit=200) if rule else ""
            if not rule_id:
                raise result.problem("ruleId is missing")
            rule_def = rules.get(rule_id, {})
            location = _location(result)
            fingerprints = result.get("partialFingerprints")
            if isinstance(fingerprints, dict) and fingerprints:
                # The tool's own stable identity survives lines moving in the file.
                location = f"{location.rsplit(':', 1)[0]}#" + ",".join(
                    f"{k}={v}" for k, v in sorted(fingerprints.items())
                )
            yield ParsedFinding(
                identifier=rule_id,
                title=message.text("text") or message.text("markdown") or rule_id,
                severity=_rating(result, rule_def),
                cwe=_cwe(result, rule_def),
                location=location[:500],
                attack_techniques=_techniques(_tags(result, rule_def)),
            )
