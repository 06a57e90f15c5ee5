from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from opscenter.core.schemas import (
    Id,
    InputModel,
    Name,
    NoControlChars,
    OutputModel,
    SingleLine,
    UtcDatetime,
)

Status = Literal["draft", "published"]
Slug = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", min_length=1, max_length=200)
]
Category = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), SingleLine
]
Tag = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
        min_length=1,
        max_length=50,
        strip_whitespace=True,
        to_lower=True,
    ),
]
Summary = Annotated[str, StringConstraints(max_length=1000, strip_whitespace=True), SingleLine]
Content = Annotated[str, StringConstraints(min_length=1, max_length=200_000), NoControlChars]
Note = Annotated[str, StringConstraints(max_length=500, strip_whitespace=True), SingleLine]
#: An error code as the API and jobs give it (NOT_FOUND, dump_failed): compared lowercased.
ErrorCodeName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64, to_lower=True)
]
#: A page of the UI by its key (the first part of its path: backups, schedules) or an event
#: type (backup.failed).
ContextKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=100, to_lower=True, strip_whitespace=True
    ),
]


class ArticleLinks(InputModel):
    """What the article is about, so contextual help and the other areas find it."""

    runbook_ids: list[Id] = Field(default_factory=list, max_length=50)
    incident_ids: list[Id] = Field(default_factory=list, max_length=50)
    error_codes: list[ErrorCodeName] = Field(default_factory=list, max_length=50)
    pages: list[ContextKey] = Field(default_factory=list, max_length=50)
    events: list[ContextKey] = Field(default_factory=list, max_length=50)


class ArticleCreate(InputModel):
    title: Name
    slug: Slug | None = Field(None, description="Derived from the title when left out")
    summary: Summary = ""
    category: Category
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    content: Content = Field(description="Markdown; raw HTML is shown as text")
    status: Status = "draft"
    team_id: Id | None = Field(None, description="Defaults to the author's first team")
    shared: bool = Field(False, description="Visible to every team (admins only)")
    links: ArticleLinks = Field(default_factory=ArticleLinks)
    note: Note = Field("", description="What this version changed, for the history")


class ArticleUpdate(InputModel):
    """Only the fields given change; each save that changes something is a new version."""

    title: Name | None = None
    summary: Summary | None = None
    category: Category | None = None
    tags: list[Tag] | None = Field(None, max_length=20)
    content: Content | None = None
    status: Status | None = None
    links: ArticleLinks | None = None
    note: Note = ""
    expected_version: int | None = Field(
        None, ge=1, description="Refuse (409) if someone saved a newer version meanwhile"
    )


class LinksOut(OutputModel):
    runbook_ids: list[int]
    incident_ids: list[int]
    error_codes: list[str]
    pages: list[str]
    events: list[str]


class ArticleSummary(OutputModel):
    id: int
    slug: str
    title: str
    summary: str
    category: str
    tags: list[str]
    status: Status
    version: int
    team_id: int | None
    shared: bool
    source: str
    author: str
    helpful_yes: int
    helpful_no: int
    created_at: UtcDatetime
    updated_at: UtcDatetime
    published_at: UtcDatetime | None


class ArticleOut(ArticleSummary):
    content: str
    content_html: str = Field(description="The content rendered and sanitized")
    links: LinksOut
    my_vote: bool | None = Field(None, description="The caller's helpful vote, if any")


class VersionOut(OutputModel):
    version: int
    title: str
    status: str
    changed: list[str] = Field(description="The fields this version changed")
    note: str
    author: str
    user_id: int | None
    created_at: UtcDatetime


class VersionDetail(VersionOut):
    summary: str
    category: str
    tags: list[str]
    content: str
    links: LinksOut


class FieldChange(OutputModel):
    field: str
    before: str
    after: str


class ArticleDiff(OutputModel):
    article_id: int
    from_version: int
    to_version: int
    changes: list[FieldChange] = Field(description="Fields other than the content")
    content_diff: str = Field(description="Unified diff of the Markdown content")
    lines_added: int
    lines_removed: int


class SearchHit(OutputModel):
    id: int
    slug: str
    title: str
    title_html: str = Field(description="The title with the matched words in <mark>")
    summary: str
    snippet_html: str = Field(description="The best passage, matched words in <mark>")
    category: str
    tags: list[str]
    score: float = Field(description="Relevance: higher is better")
    updated_at: UtcDatetime


class CategoryOut(OutputModel):
    name: str
    article_count: int


class HelpItem(ArticleSummary):
    matched_by: Literal["link", "search"]


class FeedbackIn(InputModel):
    helpful: bool


class FeedbackOut(OutputModel):
    article_id: int
    helpful: bool
    helpful_yes: int
    helpful_no: int
