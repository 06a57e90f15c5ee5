"""A framework's assessment as a document section (documents/): the compliance report's
PDF here, and the reports domain's `compliance` kind."""

from __future__ import annotations

from opscenter.compliance.schemas import FrameworkAssessment
from opscenter.core.clock import utcnow
from opscenter.documents import Chart, ReportDocument, Section, Series, Table


def assessment_section(found: FrameworkAssessment) -> Section:
    statuses = list(found.summary)
    counted = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in found.summary.items())
    return Section(
        heading=f"{found.framework.name} ({found.framework.version})",
        paragraphs=[f"{counted} of {len(found.requirements)} requirements."],
        charts=[
            Chart(
                "Requirements by status",
                "bar",
                [str(s) for s in statuses],
                [Series("requirements", [float(found.summary[s]) for s in statuses])],
            )
        ],
        tables=[
            Table(
                "Requirements",
                ["Requirement", "Title", "Status", "Controls"],
                [
                    [
                        r.id,
                        r.title,
                        str(r.status),
                        "; ".join(f"{c.id}: {c.status}" for c in r.controls),
                    ]
                    for r in found.requirements
                ],
            )
        ],
    )


def assessment_document(found: FrameworkAssessment, subtitle: str = "") -> ReportDocument:
    """One framework's stored assessment, for its PDF."""
    start, end = found.period_start.date(), found.period_end.date()
    return ReportDocument(
        title=f"{found.framework.name} compliance",
        period=f"{start.isoformat()} to {end.isoformat()}",
        generated_at=utcnow(),
        sections=[assessment_section(found)],
        subtitle=subtitle,
    )
