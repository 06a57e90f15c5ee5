"""Full-text search on both backends from one reading of what a person typed.

The words, "quoted phrases", `OR` between alternatives, `-word` to exclude and `word*` for a
prefix are read here into a small tree; each backend gets it in its own syntax, made only of
quoted words (FTS5) or of `plainto_tsquery` / `phraseto_tsquery` calls on bound values
(PostgreSQL). Whatever the input, the query is valid: it may match nothing, never fail.
English stop words are dropped on both sides, so "how to restore" finds what "restore" finds.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    union,
)
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.pagination import PageParams, Total
from opscenter.knowledge.render import MARK_CLOSE, MARK_OPEN
from opscenter.models import KnowledgeArticle, KnowledgeTag

#: PostgreSQL's english.stop, so both backends ignore the same words.
_ENGLISH_STOP = """
a about above after again against all am an and any are as at be because been before
being below between both but by can did do does doing don down during each few for from
further had has have having he her here hers herself him himself his how i if in into is
it its itself just me more most my myself no nor not now of off on once only or other
our ours ourselves out over own s same she should so some such t than that the their
theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with you your yours
yourself yourselves
"""
STOP_WORDS = frozenset(_ENGLISH_STOP.split())
MAX_TERMS = 16
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Term:
    """Words that must appear together, in order; `prefix`: the last one may go on."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass
class Query:
    #: Every group must match; a group matches when one of its terms does (OR).
    groups: list[list[Term]] = field(default_factory=list)
    excluded: list[Term] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.groups

    def words(self) -> list[str]:
        return [w for group in self.groups for term in group for w in term.words]


def _term(chunk: str, *, phrase: bool, prefix: bool = False) -> Term | None:
    words = [w.lower() for w in _WORD.findall(chunk)]
    if not phrase:  # a single typed word split by punctuation ("dump_failed") stays a phrase
        words = [w for w in words if w not in STOP_WORDS] if len(words) == 1 else words
    # A stop word at either end of a phrase binds nothing (PostgreSQL's phraseto_tsquery
    # drops it), and FTS5 would read its place in nearly every article.
    while words and words[0] in STOP_WORDS:
        words.pop(0)
    while words and words[-1] in STOP_WORDS:
        words.pop()
    if not words:
        return None
    return Term(tuple(words[:MAX_TERMS]), prefix)


def _root(partial: str) -> Term:
    """A word still being typed ("verificat") is not yet the word the index stemmed
    ("verification" -> "verif"): its first letters, short of an English suffix, match."""
    return Term((partial[: max(4, len(partial) - 4)],), prefix=True)


def parse(typed: str, *, prefix_last: bool = False) -> Query:
    """Read a person's query. `prefix_last`: the last word is still being typed."""
    query = Query()
    alternative = False
    tokens = list(_TOKEN.finditer(typed))
    for index, match in enumerate(tokens):
        negate, quoted, bare = match.group(1) == "-", match.group(2), match.group(3)
        if bare is not None and bare.upper() in ("OR", "|"):
            alternative = bool(query.groups)
            continue
        if bare is not None and bare.startswith("-") and len(bare) > 1:
            negate, bare = True, bare[1:]
        last = index == len(tokens) - 1 and not typed.endswith((" ", '"'))
        if quoted is not None:
            term = _term(quoted, phrase=True)
        else:
            assert bare is not None
            star = bare.endswith("*")
            term = _term(bare, phrase=False, prefix=star or (prefix_last and last))
        if term is None:
            continue
        if negate:
            query.excluded.append(term)
        elif alternative and query.groups:
            query.groups[-1].append(term)
        else:
            query.groups.append([term])
        if prefix_last and last and not negate and term.prefix and len(term.words) == 1:
            query.groups[-1].append(_root(term.words[0]))
        alternative = False
        if sum(len(g) for g in query.groups) + len(query.excluded) >= MAX_TERMS:
            break
    return query


# --- SQLite FTS5 -----------------------------------------------------------------------


def _fts_term(term: Term) -> str:
    # Quoted strings are plain text to FTS5 (the tokenizer stems them): no operator inside.
    return '"' + " ".join(term.words) + '"' + ("*" if term.prefix else "")


def fts5_match(query: Query, *, title_only: bool = False) -> str:
    groups = [" OR ".join(map(_fts_term, group)) for group in query.groups]
    groups = [
        f"({g})" if len(group) > 1 else g for g, group in zip(groups, query.groups, strict=True)
    ]
    expression = " AND ".join(groups)
    if title_only:
        return f"title : ({expression})"
    if query.excluded:
        expression = f"({expression}) NOT (" + " OR ".join(map(_fts_term, query.excluded)) + ")"
    return expression


# --- PostgreSQL tsquery ----------------------------------------------------------------

ENGLISH = literal_column("'english'::regconfig", REGCONFIG)


def _pg_term(term: Term) -> ColumnElement[Any]:
    if not term.prefix:
        return func.phraseto_tsquery(ENGLISH, bindparam(None, " ".join(term.words)))
    # `'word':*` from a word of letters and digits: always valid tsquery syntax.
    last = func.to_tsquery(ENGLISH, bindparam(None, f"'{term.words[-1]}':*"))
    if len(term.words) == 1:
        return last
    head = func.phraseto_tsquery(ENGLISH, bindparam(None, " ".join(term.words[:-1])))
    return func.tsquery_phrase(head, last)


def _loose_term(term: Term) -> ColumnElement[Any]:
    """A term's words anywhere, in any order: what the GIN index answers by itself (a
    phrase it can only suggest, every suggestion then read whole from TOAST)."""
    if not term.prefix:
        return func.plainto_tsquery(ENGLISH, bindparam(None, " ".join(term.words)))
    last = func.to_tsquery(ENGLISH, bindparam(None, f"'{term.words[-1]}':*"))
    if len(term.words) == 1:
        return last
    head = func.plainto_tsquery(ENGLISH, bindparam(None, " ".join(term.words[:-1])))
    return head.op("&&")(last)


def _any(terms: list[Term], *, loose: bool = False) -> ColumnElement[Any]:
    of = _loose_term if loose else _pg_term
    expression = of(terms[0])
    for term in terms[1:]:
        expression = expression.op("||")(of(term))
    return expression


def pg_tsquery(query: Query, *, loose: bool = False, excluding: bool = True) -> ColumnElement[Any]:
    """The query as a tsquery; `loose`: phrases as their words anywhere, and only single
    words excluded, so that a match of the query is always a match of the loose one;
    `excluding=False`: without the excluded words."""
    expression = _any(query.groups[0], loose=loose)
    for group in query.groups[1:]:
        expression = expression.op("&&")(_any(group, loose=loose))
    if not excluding:
        return expression
    excluded = [t for t in query.excluded if len(t.words) == 1] if loose else query.excluded
    if excluded:
        expression = expression.op("&&")(func.tsquery_not(_any(excluded, loose=loose)))
    return expression


def _has_phrase(query: Query) -> bool:
    return any(len(t.words) > 1 for group in query.groups for t in group) or any(
        len(t.words) > 1 for t in query.excluded
    )


# --- Snippets ---------------------------------------------------------------------------


def marked(fragment: str | None) -> str:
    """A snippet the database marked with our private markers, as safe HTML with <mark>."""
    escaped = html.escape(fragment or "", quote=False)
    return escaped.replace(MARK_OPEN, "<mark>").replace(MARK_CLOSE, "</mark>")


class Listed(NamedTuple):
    """What a hit lists of its article beside the marks (the bodies stay in the database)."""

    slug: str
    title: str
    summary: str
    category: str
    tags: list[str]
    updated_at: datetime


LISTED = (
    KnowledgeArticle.slug,
    KnowledgeArticle.title,
    KnowledgeArticle.summary,
    KnowledgeArticle.category,
    KnowledgeArticle.tags,
    KnowledgeArticle.updated_at,
)


@dataclass(frozen=True)
class Hit:
    article_id: int
    score: float  # higher is better, on either backend
    title: str
    snippet: str
    article: Listed


@dataclass(frozen=True)
class Scope:
    """Which published articles a search may return: shared ones and those of `team_ids`
    (None: every team), in `category`, with `tag`."""

    team_ids: frozenset[int] | None
    category: str | None = None
    tag: str | None = None


FTS = table("knowledge_fts", column("rowid"))
_FTS_NAME: ColumnElement[Any] = literal_column("knowledge_fts")
_BM25 = func.bm25(_FTS_NAME, *(literal_column(w) for w in ("10.0", "4.0", "4.0", "1.0")))
SEARCH_VECTOR: ColumnElement[Any] = literal_column("knowledge_articles.search_vector")
HEAD_VECTOR: ColumnElement[Any] = literal_column("knowledge_articles.search_vector_head")
#: Title, summary, tags and the body's first 2,000 characters, in the row (migration 0033).
RANK_VECTOR: ColumnElement[Any] = literal_column("knowledge_articles.search_vector_rank")
#: How many matches are ranked on their whole text when more match (at least to the
#: page's end): chosen first by title, summary and tags (PostgreSQL) or title (SQLite).
CANDIDATES = 200
#: PostgreSQL reads at most this many of the GIN index's matches (at least to the page's
#: end): past it, a search for a word in most articles would read them all. The page is
#: then the best of those and of as many title matches, and the total a lower bound.
SCANNED = 500
#: Up to this many matches, PostgreSQL ranks them on their whole text (TOAST, a few
#: kilobytes each); past it, on the bounded RANK_VECTOR.
WHOLE_RANK_UP_TO = 40
#: The stretch of a body a PostgreSQL snippet is chosen from: around the first place a
#: searched word's stem appears (ts_headline parses all the text it is given).
SNIPPET_WINDOW = 400
_TITLE_OPTS = f"StartSel={MARK_OPEN}, StopSel={MARK_CLOSE}, HighlightAll=true"
_BODY_OPTS = (
    f"StartSel={MARK_OPEN}, StopSel={MARK_CLOSE}, MaxWords=24, MinWords=12, "
    'MaxFragments=2, FragmentDelimiter=" … "'
)


def facet(kind: str, value: str) -> str:
    """A filter value as one word of letters and digits in the FTS5 `facets` column (team,
    category, tag), so the full-text index itself filters: a search reads no other table."""
    return kind + hashlib.sha256(value.lower().encode()).hexdigest()[:16]


def facets_of(team_id: int | None, category: str, tags: list[str]) -> str:
    words = [facet("scope", str(team_id) if team_id is not None else "shared")]
    words.append(facet("category", category))
    words += [facet("tag", t) for t in tags]
    return " ".join(words)


def _facet_filter(scope: Scope) -> str:
    parts = []
    if scope.team_ids is not None:
        teams = ["shared", *map(str, sorted(scope.team_ids))]
        parts.append(" OR ".join(facet("scope", t) for t in teams))
    if scope.category:
        parts.append(facet("category", scope.category))
    if scope.tag:
        parts.append(facet("tag", scope.tag))
    return " AND ".join(f"facets : ({p})" for p in parts)


async def _sqlite_hits(
    session: AsyncSession, query: Query, scope: Scope, page: PageParams
) -> tuple[list[Hit], int]:
    expression, titled = fts5_match(query), fts5_match(query, title_only=True)
    if filters := _facet_filter(scope):
        expression, titled = f"({expression}) AND {filters}", f"{titled} AND {filters}"
    match = _FTS_NAME.op("MATCH")(expression)
    # bm25's IDF is floored at ~0 for words in more than half of the articles, so in a small
    # or focused knowledge base it cannot tell them apart; an article whose title has all
    # the words comes first, as PostgreSQL's title weight (A) does.
    in_title = select(FTS.c.rowid).where(_FTS_NAME.op("MATCH")(titled))
    score = _BM25 - case((FTS.c.rowid.in_(in_title), literal_column("10.0")), else_=0.0)
    total = int(await session.scalar(select(func.count()).select_from(FTS).where(match)) or 0)
    if total <= page.offset:
        return [], total
    ranked_among: list[ColumnElement[bool]] = [match]
    bound = max(CANDIDATES, page.offset + page.limit)
    if total > bound:
        # bm25 reads every match's sizes and positions: for a common word, every article.
        # Ranked instead: the title matches and the newest others, a bounded set that
        # FTS5 finds in its own order (rowid), before any score is computed.
        newest = select(FTS.c.rowid).where(match).order_by(FTS.c.rowid.desc()).limit(bound)
        ranked_among.append(or_(FTS.c.rowid.in_(in_title.limit(bound)), FTS.c.rowid.in_(newest)))
    ranked = (
        await session.execute(
            select(FTS.c.rowid.label("id"), score.label("score"))
            .where(*ranked_among)
            .order_by(literal_column("score"), FTS.c.rowid)
            .limit(page.limit)
            .offset(page.offset)
        )
    ).all()
    if not ranked:
        return [], total
    # Highlights only for the page shown: highlight() and snippet() re-read each document.
    ids = [row.id for row in ranked]
    marks = select(
        FTS.c.rowid,
        func.highlight(_FTS_NAME, 0, MARK_OPEN, MARK_CLOSE),
        func.snippet(_FTS_NAME, 3, MARK_OPEN, MARK_CLOSE, "…", 24),  # the body, as on PostgreSQL
    ).where(match, FTS.c.rowid.in_(ids))
    shown = {row[0]: row for row in (await session.execute(marks)).all()}
    listed = select(KnowledgeArticle.id, *LISTED).where(KnowledgeArticle.id.in_(ids))
    articles = {row[0]: Listed(*row[1:]) for row in (await session.execute(listed)).all()}
    return [
        Hit(
            row.id,
            -float(row.score),
            marked(shown[row.id][1]),
            marked(shown[row.id][2]),
            articles[row.id],
        )
        for row in ranked
    ], total


def _pg_conditions(scope: Scope) -> ColumnElement[bool]:
    """The scope, as one condition no index can serve: the matches come from the GIN index
    alone. Left indexable, a common word makes the status index look cheaper, and the
    planner then tests every published article's whole (TOASTed) vector instead."""
    return and_(*_pg_scope(scope)).is_(True)


def _pg_scope(scope: Scope) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [KnowledgeArticle.status == "published"]
    if scope.team_ids is not None:
        conditions.append(
            or_(KnowledgeArticle.team_id.is_(None), KnowledgeArticle.team_id.in_(scope.team_ids))
        )
    if scope.category:
        conditions.append(func.lower(KnowledgeArticle.category) == scope.category.lower())
    if scope.tag:
        tagged = select(KnowledgeTag.article_id).where(KnowledgeTag.tag == scope.tag.lower())
        conditions.append(KnowledgeArticle.id.in_(tagged))
    return conditions


async def _pg_hits(
    session: AsyncSession, query: Query, scope: Scope, page: PageParams
) -> tuple[list[Hit], Total]:
    # The tsquery inline (not from a CTE or a join): a constant to the planner, so the GIN
    # index finds the matches.
    tsquery = pg_tsquery(query)
    # A bounded read of the index's matches, in its order: only their small in-row columns
    # (a vector stays a TOAST pointer until read). A phrase is matched there as its words
    # anywhere, which the index answers alone; the phrase itself is then checked on those
    # only, each whole vector read once.
    phrase = _has_phrase(query)
    loose = pg_tsquery(query, loose=True)
    bound = max(SCANNED, page.offset + page.limit)
    anywhere = (
        select(KnowledgeArticle.id)
        .where(SEARCH_VECTOR.op("@@")(loose), _pg_conditions(scope))
        .limit(bound)
        .cte("anywhere")
    )
    read = select(func.count()).select_from(anywhere).scalar_subquery()
    # When that read stopped short of all the matches, the title, summary and tags matches
    # wherever they are: found by the small vector's own GIN index (migration 0035). It
    # holds none of an excluded word's places in the body: those are read in the whole.
    in_head = HEAD_VECTOR.op("@@")(pg_tsquery(query, loose=True, excluding=False))
    titled = (
        select(KnowledgeArticle.id)
        .where(in_head, *([SEARCH_VECTOR.op("@@")(loose)] if query.excluded else []))
        .where(_pg_conditions(scope), read >= bound)
        .limit(bound)
    )
    scanned = (
        select(
            KnowledgeArticle.id,
            SEARCH_VECTOR.label("vector"),
            HEAD_VECTOR.label("head"),
            read.label("scanned"),
        )
        .where(KnowledgeArticle.id.in_(union(select(anywhere.c.id), titled)))
        .subquery()
    )
    # Ranking reads a match's whole vector (TOAST, kilobytes): so the matches are first
    # ordered by the small in-row title/summary/tags vector, and only the best CANDIDATES
    # of them are ranked: on the whole text when few match, else on the bounded in-row
    # rank vector (title to the body's head).
    candidates = (
        select(
            scanned.c.id,
            scanned.c.scanned,
            func.count().over().label("total"),
        )
        .where(*([scanned.c.vector.op("@@")(tsquery)] if phrase else []))
        .order_by(func.ts_rank(scanned.c.head, tsquery).desc(), scanned.c.id)
        .limit(max(CANDIDATES, page.offset + page.limit))
        .subquery()
    )
    score = case(  # 1: divided by 1 + log(length)
        (candidates.c.total <= WHOLE_RANK_UP_TO, func.ts_rank_cd(SEARCH_VECTOR, tsquery, 1)),
        else_=func.ts_rank_cd(RANK_VECTOR, tsquery, 1),
    )
    page_rows = (
        select(KnowledgeArticle.id, score.label("score"), candidates.c.total, candidates.c.scanned)
        .join(candidates, candidates.c.id == KnowledgeArticle.id)
        .order_by(literal_column("score").desc(), KnowledgeArticle.id)
        .limit(page.limit)
        .offset(page.offset)
        .subquery()
    )
    # Marks and listed fields in the same statement, for the page's rows only: ts_headline
    # parses the text it is given.
    shown = (
        select(
            page_rows,
            func.ts_headline(ENGLISH, KnowledgeArticle.title, tsquery, _TITLE_OPTS),
            func.ts_headline(ENGLISH, _snippet_text(query), tsquery, _BODY_OPTS),
            *LISTED,
        )
        .join(KnowledgeArticle, KnowledgeArticle.id == page_rows.c.id)
        .order_by(page_rows.c.score.desc(), page_rows.c.id)
    )
    # A word in most articles makes a sequential scan look cheaper than the GIN index, but
    # its filter reads every whole vector; the index's bitmap needs none of them.
    await session.execute(text("SET LOCAL enable_seqscan = off"))
    rows = (await session.execute(shown)).all()
    await session.execute(text("SET LOCAL enable_seqscan = on"))
    if not rows:
        return [], Total(0)
    first = rows[0]
    complete = first.scanned < bound  # else the index has more matches than were read
    total = Total(first.total) if complete else Total.lower_bound(first.total)
    return [
        Hit(row.id, float(row.score), marked(row[4]), marked(row[5]), Listed(*row[6:]))
        for row in rows
    ], total


def _snippet_text(query: Query) -> ColumnElement[str]:
    """The body's stretch around the first word that starts with one of the searched words'
    roots (the whole body when none does, e.g. a word the stemmer changed past its root)."""
    body = KnowledgeArticle.body_text
    spaced = func.lower(literal_column("' '").op("||")(body))
    roots = {" " + _root(w).words[0] for w in query.words()}
    found = [func.nullif(func.strpos(spaced, bindparam(None, r)), 0) for r in roots]
    first = func.least(*found) if len(found) > 1 else found[0]
    start = func.greatest(first - SNIPPET_WINDOW // 4, 1)
    window: ColumnElement[str] = func.coalesce(func.substr(body, start, SNIPPET_WINDOW), body)
    return window


async def hits(
    session: AsyncSession, query: Query, scope: Scope, page: PageParams
) -> tuple[list[Hit], int]:
    """The page of published articles in `scope` matching `query`, best first, with the
    total number of matches (past the last page: 0)."""
    if query.empty:
        return [], 0
    if session.get_bind().dialect.name == "postgresql":
        return await _pg_hits(session, query, scope, page)
    return await _sqlite_hits(session, query, scope, page)


async def reindex(session: AsyncSession, article_id: int, values: dict[str, Any] | None) -> None:
    """Bring the index up to date with one article (None: not searchable, e.g. a draft).
    PostgreSQL's generated column follows the row by itself; SQLite's FTS5 table, which
    holds the published articles only, is written here, in the article's transaction."""
    if session.get_bind().dialect.name != "sqlite":
        return
    await session.execute(text("DELETE FROM knowledge_fts WHERE rowid = :id"), {"id": article_id})
    if values is not None:
        await session.execute(
            text(
                "INSERT INTO knowledge_fts (rowid, title, summary, tags, body, facets) "
                "VALUES (:id, :title, :summary, :tags, :body, :facets)"
            ),
            {"id": article_id, **values},
        )
