"""Knowledge base benchmark: search latency over 10,000 articles and the cost of
reindexing one article after an edit, on SQLite (FTS5) and PostgreSQL (tsvector + GIN).

Each backend gets a fresh database built by the real migrations (SQLite: a temp file;
PostgreSQL: a new database on 127.0.0.1:5432, user postgres, trust, dropped at the end).
The articles go in through the service (Markdown rendered and sanitized, versions, tags,
the search index), with generated text of realistic length: 150 to 900 words drawn from a
Zipf distribution over the words of the shipped articles (the common head) and 6,000
made-up words (the long tail), in sentences and paragraphs with headings and lists.

Measured: `search_articles` as the API calls it (ranked, 20 hits with highlighted
snippets, team scope, total count) for 300 queries of one to three words, phrases,
OR, exclusions and prefixes; and an edit (`apply_update` of the content: render, new
version, reindex) committed, for 200 articles, and the index update alone for an edit's
text (rolled back). Limits from issue 19: search p99 < 20 ms, reindexing after an edit
< 10 ms.

    .venv/bin/python bench/knowledge_search.py               # 10,000 articles
    .venv/bin/python bench/knowledge_search.py --articles 2000 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text as sql
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from opscenter.bootstrap import migrate
from opscenter.core.db import Database
from opscenter.core.pagination import PageParams
from opscenter.core.principal import SYSTEM
from opscenter.knowledge import search, service
from opscenter.knowledge.render import render
from opscenter.knowledge.schemas import ArticleCreate, ArticleUpdate
from opscenter.knowledge.shipped import shipped_articles
from opscenter.models import KnowledgeArticle

SEARCH_P99_MS = 20.0
REINDEX_MS = 10.0
PG_ADMIN = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qAt", "-c"]


def vocabulary(rng: random.Random) -> list[str]:
    head: dict[str, int] = {}
    for item in shipped_articles():
        for word in re.findall(r"[a-z]{3,}", item.article.content.lower()):
            head[word] = head.get(word, 0) + 1
    common = sorted(head, key=head.__getitem__, reverse=True)
    syllables = ["ka", "lo", "mi", "ter", "van", "sol", "rip", "dun", "ex", "quo", "zan", "bel"]
    tail = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(9000)}
    return common + sorted(tail - set(common))[:6000]


class Text:
    def __init__(self, words: list[str], rng: random.Random) -> None:
        self.words, self.rng = words, rng
        weights = [1 / (rank + 1) ** 1.07 for rank in range(len(words))]
        self.cumulative = list(_accumulate(weights))

    def pick(self, n: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cumulative, k=n)

    def sentence(self) -> str:
        words = self.pick(self.rng.randint(6, 18))
        return " ".join(words).capitalize() + "."

    def article(self) -> tuple[str, str, str]:
        title = " ".join(self.pick(self.rng.randint(3, 7))).capitalize()
        target = self.rng.randint(150, 900)
        parts, count = [], 0
        while count < target:
            if self.rng.random() < 0.15:
                parts.append(f"## {' '.join(self.pick(3)).capitalize()}")
            if self.rng.random() < 0.2:
                items = [f"- {self.sentence()}" for _ in range(self.rng.randint(2, 5))]
                parts.append("\n".join(items))
            paragraph = " ".join(self.sentence() for _ in range(self.rng.randint(2, 6)))
            parts.append(paragraph)
            count += len(paragraph.split())
        return title, self.sentence(), "\n\n".join(parts)


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for value in values:
        total += value
        out.append(total)
    return out


def queries(text: Text, rng: random.Random, n: int) -> list[str]:
    made = []
    for i in range(n):
        words = text.pick(rng.randint(1, 3))
        kind = i % 6
        if kind == 3:
            made.append(f'"{" ".join(words)}"')
        elif kind == 4 and len(words) > 1:
            made.append(" OR ".join(words))
        elif kind == 5:
            made.append(f"{words[0][:4]}* -{text.pick(1)[0]}")
        else:
            made.append(" ".join(words))
    return made


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def fill(db: Database, text: Text, count: int) -> None:
    author = service.Author(None, "bench")
    categories = [f"Category {i}" for i in range(12)]
    tags = [f"tag{i}" for i in range(40)]
    done, started = 0, time.perf_counter()
    while done < count:
        async with db.write_session() as session:
            for _ in range(min(500, count - done)):
                title, summary, body = text.article()
                data = ArticleCreate(
                    title=title[:200],
                    summary=summary[:1000],
                    category=text.rng.choice(categories),
                    tags=text.rng.sample(tags, 3),
                    content=body,
                    status="published",
                    shared=True,
                )
                await service.add_article(session, data, author, None)
                done += 1
            await session.commit()
    print(f"  {count} articles written in {time.perf_counter() - started:.1f} s")


async def measure(url: str, label: str, count: int, seed: int) -> list[tuple[str, float, float]]:
    rng = random.Random(seed)
    text = Text(vocabulary(rng), rng)
    await asyncio.to_thread(migrate, url)
    db = Database(url)
    gc.freeze()  # as a started server does (runtime.running): no full collection walks it
    try:
        await fill(db, text, count)
        if db.is_sqlite:
            async with db.write_session() as session:  # merge the segments the inserts made
                await session.execute(
                    sql("INSERT INTO knowledge_fts(knowledge_fts) VALUES ('optimize')")
                )
                await session.commit()
        else:
            async with db.engine.connect() as conn:
                await conn.execute(sql("ANALYZE knowledge_articles"))
                await conn.commit()
        asked = queries(text, rng, 300)
        page = PageParams(limit=20, offset=0)
        timings, totals = [], []
        async with db.read_session() as session:
            for q in asked[:20]:  # warm the caches
                await service.search_articles(session, SYSTEM, q, page)
            for q in asked:
                t0 = time.perf_counter()
                _, total = await service.search_articles(session, SYSTEM, q, page)
                timings.append((time.perf_counter() - t0) * 1000)
                totals.append(total)
        edits, reindexes = [], []
        for article_id in rng.sample(range(1, count + 1), 200):
            _, _, body = text.article()
            rendered = render(body)
            t0 = time.perf_counter()
            async with db.write_session() as session:
                article = await session.get(KnowledgeArticle, article_id)
                assert article is not None
                await service.apply_update(
                    session, article, ArticleUpdate(content=body), service.Author(None, "bench")
                )
                await session.commit()
            edits.append((time.perf_counter() - t0) * 1000)
            # The index alone, for the text of an edit: SQLite's FTS5 rows rewritten by the
            # service; PostgreSQL's generated tsvector and GIN entries, by the UPDATE.
            async with db.write_session() as session:
                t0 = time.perf_counter()
                if db.is_sqlite:
                    values = service.index_values(article) or {}
                    await search.reindex(session, article_id, {**values, "body": rendered.text})
                else:
                    await session.execute(
                        update(KnowledgeArticle)
                        .where(KnowledgeArticle.id == article_id)
                        .values(body_text=rendered.text + " ")
                    )
                reindexes.append((time.perf_counter() - t0) * 1000)
                await session.rollback()
    finally:
        await db.dispose()
    print(
        f"  search over {count}: p50 {pct(timings, 50):.2f} ms, p95 {pct(timings, 95):.2f} ms,"
        f" p99 {pct(timings, 99):.2f} ms; matches per query: median"
        f" {statistics.median(totals):.0f}, max {max(totals)}"
        f" ({sum(getattr(t, 'estimated', False) for t in totals)} of them lower bounds)"
    )
    print(f"  whole edit, committed: p50 {pct(edits, 50):.2f} ms, p99 {pct(edits, 99):.2f} ms")
    print(f"  reindex alone: p50 {pct(reindexes, 50):.2f} ms, p99 {pct(reindexes, 99):.2f} ms")
    return [
        (f"{label} search p50", pct(timings, 50), SEARCH_P99_MS),
        (f"{label} search p99", pct(timings, 99), SEARCH_P99_MS),
        (f"{label} reindex p99", pct(reindexes, 99), REINDEX_MS),
        (f"{label} whole edit p50", pct(edits, 50), REINDEX_MS),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    rows: list[tuple[str, float, float]] = []
    print(f"load average {os.getloadavg()[0]:.2f}")
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            print("SQLite (FTS5)")
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            rows += asyncio.run(measure(url, "SQLite", args.articles, args.seed))
    if "postgres" in args.backends:
        name = f"oc_bench_kb_{uuid.uuid4().hex[:8]}"
        subprocess.run([*PG_ADMIN, f'CREATE DATABASE "{name}"'], check=True)
        try:
            print("PostgreSQL (tsvector + GIN)")
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
            rows += asyncio.run(measure(url, "PostgreSQL", args.articles, args.seed))
        finally:
            subprocess.run(
                [*PG_ADMIN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=True
            )
    print(f"\n{'measure':32} {'figure':>10} {'limit':>10} {'ratio':>7}")
    for name, figure, limit in rows:
        print(f"{name:32} {figure:8.2f} ms {limit:7.1f} ms {figure / limit:7.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
