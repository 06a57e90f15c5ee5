"""Search: ranking on a fixture corpus, the same best match on SQLite and PostgreSQL,
highlighted snippets, word forms, filters, and typed queries that never fail."""

from __future__ import annotations

import httpx
import pytest

from opscenter.knowledge import search
from opscenter.knowledge.search import fts5_match, parse
from tests.conftest import Api
from tests.knowledge.helpers import make_article, uid

SEARCH = "/api/v1/knowledge-base/search"
CORPUS = {
    "restore-pg": (
        "Restoring PostgreSQL into a new database",
        "Use pg_restore to restore a backup into a new database. Restore tests prove a backup"
        " restores: create the new database, restore, compare row counts.",
    ),
    "rotate-keys": (
        "Rotating encryption keys",
        "Add an escrow recipient before rotating the age key. Old backups still need the old"
        " key to restore, so keep it offline.",
    ),
    "replica-lag": (
        "Replication lag on the standby",
        "When replication lag grows, look at WAL replay on the standby and at long queries"
        " that hold replay back.",
    ),
    "mask-emails": (
        "Masking customer emails",
        "Hash the email column when restoring production data into staging, so joins on the"
        " email still match.",
    ),
    "zebra": (
        "Zebra crossings",
        "The frequency of zebra crossings in the city is unrelated to databases entirely.",
    ),
}
# Query -> the article both backends must rank first.
BEST = {
    "restore postgresql": "restore-pg",
    "restoring databases": "restore-pg",
    "replication lag": "replica-lag",
    "masking emails": "mask-emails",
    "escrow": "rotate-keys",
    '"new database"': "restore-pg",
    "rotat*": "rotate-keys",
    "zebra OR escrow": "zebra",
    "mask-emails OR lagging": "replica-lag",
}


@pytest.fixture(scope="module")
async def corpus(api: Api, admin_headers: dict[str, str]) -> dict[str, int]:
    tag = uid("corpus")
    ids: dict[str, int] = {"tag": 0}
    async with api.client(admin_headers) as admin:
        for key, (title, body) in CORPUS.items():
            article = await make_article(
                admin, title=title, content=body, tags=[tag], category="Fixture"
            )
            ids[key] = article["id"]
    ids["tag"] = tag  # type: ignore[assignment]
    return ids


async def _search(client: httpx.AsyncClient, q: str, tag: str, **params: str) -> dict:  # type: ignore[type-arg]
    r = await client.get(SEARCH, params={"q": q, "tag": tag, **params})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_best_match_first_on_both_backends(
    admin: httpx.AsyncClient, corpus: dict[str, int]
) -> None:
    tag = str(corpus["tag"])
    for query, best in BEST.items():
        found = await _search(admin, query, tag)
        assert found["items"], query
        assert found["items"][0]["id"] == corpus[best], (
            query,
            [h["title"] for h in found["items"]],
        )
        scores = [h["score"] for h in found["items"]]
        assert scores == sorted(scores, reverse=True)


async def test_operators_phrases_and_exclusions(
    admin: httpx.AsyncClient, corpus: dict[str, int]
) -> None:
    tag = str(corpus["tag"])
    restore = {h["id"] for h in (await _search(admin, "restore", tag))["items"]}
    assert restore == {corpus["restore-pg"], corpus["rotate-keys"], corpus["mask-emails"]}
    without = {h["id"] for h in (await _search(admin, "restore -email", tag))["items"]}
    assert without == {corpus["restore-pg"], corpus["rotate-keys"]}
    both = await _search(admin, "zebra escrow", tag)  # every word must match
    assert both["total"] == 0
    phrase = await _search(admin, '"database new"', tag)  # word order matters in a phrase
    assert phrase["total"] == 0
    paged = await _search(admin, "restore", tag, limit="1", offset="1")
    assert (paged["total"], len(paged["items"]), paged["offset"]) == (3, 1, 1)


async def test_snippets_highlight_the_matched_words(
    admin: httpx.AsyncClient, corpus: dict[str, int]
) -> None:
    hit = (await _search(admin, "replication lag", str(corpus["tag"])))["items"][0]
    assert "<mark>Replication</mark>" in hit["title_html"]
    assert "<mark>lag</mark>" in hit["title_html"]
    assert "<mark>replication</mark> <mark>lag</mark>" in hit["snippet_html"]
    hit = (await _search(admin, "restoring", str(corpus["tag"])))["items"][0]
    # Another form of the word is found and marked.
    assert "<mark>restore</mark>" in hit["snippet_html"]


async def test_filters_by_category_and_tag(
    admin: httpx.AsyncClient, corpus: dict[str, int]
) -> None:
    everywhere = await admin.get(SEARCH, params={"q": "restore"})
    assert everywhere.json()["total"] > 3  # the shipped articles speak of restores too
    fixture = await admin.get(SEARCH, params={"q": "restore", "category": "fixture"})
    assert fixture.json()["total"] >= 3
    assert all(h["category"] == "Fixture" for h in fixture.json()["items"])
    none = await _search(admin, "restore", str(corpus["tag"]), category="Error codes")
    assert none["total"] == 0


async def test_many_matches_rank_a_bounded_set_led_by_the_title(
    admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More matches than are ranked on their whole text: the article titled with the word
    # (the oldest, so no accident of order) still comes first, the total stays exact, and
    # every page can be reached.
    monkeypatch.setattr(search, "CANDIDATES", 2)
    tag, word = uid("bound"), uid("quokka")
    titled = await make_article(
        admin, title=f"All about {word}", content="Nothing else here.", tags=[tag]
    )
    for n in range(5):
        await make_article(
            admin, title=f"Other {n}", content=f"Once {word} appears. " * (n + 1), tags=[tag]
        )
    found = await _search(admin, word, tag, limit="2")
    assert (found["total"], len(found["items"])) == (6, 2)
    assert found["items"][0]["id"] == titled["id"]
    assert "<mark>" in found["items"][1]["snippet_html"]
    later = await _search(admin, word, tag, limit="2", offset="2")
    assert (later["total"], len(later["items"])) == (6, 2)
    assert titled["id"] not in {h["id"] for h in later["items"]}


async def test_postgresql_reads_a_bounded_number_of_matches(
    api: Api, admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past SCANNED of the index's matches, PostgreSQL ranks those it read and the title
    # matches, wherever they are, and says its total is a lower bound; a phrase is looked
    # for among them. SQLite counts every match.
    monkeypatch.setattr(search, "SCANNED", 1)
    tag, word = uid("scan"), uid("wombat")
    titled = await make_article(
        admin, title=f"The {word} sleeps", content="Nothing else here.", tags=[tag]
    )
    for n in range(5):
        await make_article(
            admin, title=f"Note {n}", content=f"The {word} sleeps. " * (n + 1), tags=[tag]
        )
    for typed in (word, f'"{word} sleeps"'):
        found = await _search(admin, typed, tag, limit="1")
        # One match read in the index's order (the titled one, or another and then the
        # titled one by its own index), the best of them first.
        assert [h["id"] for h in found["items"]] == [titled["id"]], typed
        if api.backend == "postgres":
            assert found["total_estimated"] and found["total"] in (1, 2), typed
        else:
            assert (found["total"], found["total_estimated"]) == (6, False), typed
    last = await _search(admin, word, tag, limit="2", offset="5")  # read to the page's end
    assert (last["total"], last["total_estimated"], len(last["items"])) == (6, False, 1)


@pytest.mark.parametrize(
    "typed",
    [
        '"',
        '"unclosed phrase',
        "((( AND NOT )))",
        "NOT",
        "OR OR",
        "-",
        "--restore",
        "*",
        "title:restore",
        "NEAR(restore backup)",
        "restore^2 ~ {x}",
        "'; DROP TABLE knowledge_articles; --",
        "<script>alert(1)</script>",
        "ünïcödé ☃ 日本語",
        "the and of",
        "a" * 500,
        "x:* & | ! <-> :A",
    ],
)
async def test_typed_input_never_fails(admin: httpx.AsyncClient, typed: str) -> None:
    r = await admin.get(SEARCH, params={"q": typed})
    assert r.status_code == 200, r.text
    assert r.json()["total"] >= 0


def test_the_query_reading() -> None:
    q = parse('how to "Point in time" restore OR recover -mysql verif* dump_failed')
    assert fts5_match(q) == (
        '("point in time" AND ("restore" OR "recover") AND "verif"* AND "dump failed") '
        'NOT ("mysql")'
    )
    assert parse("the of and").empty
    assert fts5_match(parse('"the restore of" "what api" "point in"')) == (
        '"restore" AND "api" AND "point"'
    )
    assert fts5_match(parse("restore", prefix_last=True)) == '("restore"* OR "rest"*)'
    assert fts5_match(parse("verificat", prefix_last=True)) == '("verificat"* OR "verif"*)'
    assert fts5_match(parse("restore ", prefix_last=True)) == '"restore"'


async def test_bounded_ranking_and_snippets_keep_the_best_match_and_the_marks(
    admin: httpx.AsyncClient, corpus: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ranked on the bounded rank vector (PostgreSQL past WHOLE_RANK_UP_TO matches), the
    # fixture queries still lead with the same article.
    monkeypatch.setattr(search, "WHOLE_RANK_UP_TO", 0)
    tag = str(corpus["tag"])
    for query, best in BEST.items():
        found = await _search(admin, query, tag)
        assert found["items"][0]["id"] == corpus[best], query
    # A word found only far into a long body is still shown marked in the snippet.
    tag, word = uid("deep"), uid("wombat")
    filler = "Routine maintenance notes about unrelated housekeeping chores. " * 150
    await make_article(
        admin, title="Long notes", content=f"{filler}\n\nThe {word} here.", tags=[tag]
    )
    [hit] = (await _search(admin, word, tag))["items"]
    assert f"<mark>{word}</mark>" in hit["snippet_html"]
