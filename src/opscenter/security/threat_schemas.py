"""Request and response models of the ATT&CK coverage view and the fuzzing results."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from opscenter.core.schemas import Id, InputModel, OutputModel, UtcDatetime
from opscenter.models.fuzzing import FuzzEngine
from opscenter.models.security import Severity

#: One engine output (a libFuzzer log, a sanitizer report, fuzzer_stats): the 1 MB body
#: limit bounds them together.
Output = Annotated[str, StringConstraints(max_length=1_000_000)]


class CrashFileIn(InputModel):
    file: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description="The crash file's name in AFL++'s crashes/ (id:000000,sig:11,...)"
    )
    output: Output = Field("", description="The sanitizer report of replaying it, if any")


class FuzzingIn(InputModel):
    asset_id: Id = Field(description="The asset the target belongs to (its team owns the run)")
    target: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    engine: FuzzEngine
    logs: Annotated[list[Output], Field(max_length=64)] = Field(
        [], description="libFuzzer: the stderr of each worker (-print_final_stats=1 helps)"
    )
    fuzzer_stats: Output | None = Field(None, description="AFL++: the fuzzer_stats file")
    crash_files: Annotated[list[CrashFileIn], Field(max_length=1000)] = Field(
        [], description="AFL++: the crashes/ files, each with its replay's sanitizer report"
    )
    create_findings: bool = Field(
        True, description="Make each distinct crash a finding of the asset (scanner fuzzing)"
    )


class CrashOut(OutputModel):
    id: int
    stack_hash: str
    kind: str
    access: str | None
    severity: Severity
    frames: list[str]
    summary: str
    count: int = Field(description="Times this crash was hit in the run")
    artifacts: list[str]
    finding_id: int | None


class FuzzingOut(OutputModel):
    id: int
    team_id: int
    asset_id: int
    target: str
    engine: FuzzEngine
    started_at: UtcDatetime | None
    duration_seconds: float | None
    executions: int
    execs_per_second: float | None
    coverage_edges: int | None = Field(description="Edges (libFuzzer cov:, AFL++ edges_found)")
    coverage_percent: float | None = Field(
        description="Of the instrumented edges (libFuzzer cov/PCs, AFL++ bitmap_cvg)"
    )
    corpus_size: int | None
    crashes_total: int
    crashes_unique: int = Field(description="Distinct crashes by stack hash")
    crashes: list[CrashOut]
    created_at: UtcDatetime


class TechniqueCoverage(OutputModel):
    id: str
    name: str
    findings: int = Field(description="Open findings naming it or one of its sub-techniques")
    incidents: int = Field(description="Incidents not yet resolved naming it or a sub-technique")
    policies: int = Field(description="Enabled security policies naming it or a sub-technique")
    subtechniques: list[str] = Field(description="Its sub-techniques that are referenced")


class TacticCoverage(OutputModel):
    id: str
    shortname: str
    name: str
    techniques_total: int
    techniques_referenced: int
    techniques: list[TechniqueCoverage]


class CoverageOut(OutputModel):
    attack_version: str
    incidents_counted: bool = Field(description="False when the caller may not read incidents")
    tactics: list[TacticCoverage]
