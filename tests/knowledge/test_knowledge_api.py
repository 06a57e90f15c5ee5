"""The knowledge base through the API, on SQLite and PostgreSQL: articles with versions
and diffs, sanitized Markdown, roles, team scoping, helpful votes, events and audit."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser

import httpx

from opscenter.core.events import Event
from opscenter.knowledge import shipped
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.knowledge.helpers import ARTICLES, make_article, uid

HOSTILE = """# Title <script>alert('t')</script>

<img src=x onerror="alert(1)"> <a href="javascript:alert(2)" onclick="alert(3)">raw link</a>

[click me](javascript:alert(4)) [data](data:text/html;base64,PHNjcmlwdD4=) [ok](https://example.com/runbook)

<div onmouseover="alert(5)">div</div>
"""


class Elements(HTMLParser):
    """Every element of an HTML fragment with its attributes, as a browser would see them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def assert_inert(html: str) -> None:
    """No script element, no event handler attribute, no link or source but http(s)/mailto."""
    for tag, attrs in Elements(html).found:
        assert tag not in ("script", "iframe", "object", "embed", "style", "div"), html
        assert not any(name.startswith("on") for name in attrs), html
        for name in ("href", "src"):
            if attrs.get(name) is not None:
                assert str(attrs[name]).startswith(("https:", "http:", "mailto:")), html


async def test_versions_are_kept_and_diffable(api: Api, admin: httpx.AsyncClient) -> None:
    article = await make_article(
        admin,
        title=f"Failover {uid()}",
        content="Step one.\nStep two.\n",
        tags=["Failover", "postgres"],
        links={"error_codes": ["DUMP_FAILED"], "pages": ["backups"], "runbook_ids": [3]},
        note="first draft",
    )
    assert article["version"] == 1 and article["tags"] == ["failover", "postgres"]
    assert article["links"]["error_codes"] == ["dump_failed"]
    assert article["content_html"] == "<p>Step one.\nStep two.</p>\n"
    url = f"{ARTICLES}/{article['id']}"

    r = await admin.put(url, json={"content": "Step one.\nStep 2.\nStep three.\n", "note": "fix"})
    assert r.status_code == 200, r.text
    r = await admin.put(url, json={"title": article["title"] + " (v3)", "expected_version": 2})
    assert r.status_code == 200 and r.json()["version"] == 3
    # A save that changes nothing is no new version.
    r = await admin.put(url, json={"title": article["title"] + " (v3)"})
    assert r.json()["version"] == 3

    versions = (await admin.get(f"{url}/versions")).json()
    assert versions["total"] == 3
    assert [v["version"] for v in versions["items"]] == [3, 2, 1]
    assert [v["changed"] for v in versions["items"]] == [["title"], ["content"], ["created"]]
    assert versions["items"][1]["note"] == "fix" and versions["items"][0]["author"] == "admin"
    first = (await admin.get(f"{url}/versions/1")).json()
    assert first["content"] == "Step one.\nStep two.\n" and first["links"]["runbook_ids"] == [3]

    diff = (await admin.get(f"{url}/diff", params={"from_version": 1, "to_version": 2})).json()
    assert "-Step two." in diff["content_diff"] and "+Step 2." in diff["content_diff"]
    assert (diff["lines_added"], diff["lines_removed"]) == (2, 1)
    latest = (await admin.get(f"{url}/diff")).json()  # the current version and the one before
    assert (latest["from_version"], latest["to_version"]) == (2, 3)
    assert latest["changes"][0]["field"] == "title" and latest["content_diff"] == ""

    # Someone else saved version 3 after the version 2 this editor started from.
    stale = await admin.put(url, json={"content": "mine", "expected_version": 2})
    assert_error(stale, 409, "CONFLICT")
    assert_error(await admin.get(f"{url}/versions/9"), 404, "NOT_FOUND")
    assert (await admin.get(url)).json()["version"] == 3


async def test_markdown_is_sanitized(api: Api, admin: httpx.AsyncClient) -> None:
    article = await make_article(admin, content=HOSTILE, title=f"Hostile {uid()}")
    html = article["content_html"]
    assert_inert(html)
    assert '<a href="https://example.com/runbook" rel="noopener noreferrer nofollow">ok</a>' in html
    assert "&lt;script&gt;" in html  # shown as text, not dropped silently
    preview = await admin.post("/api/v1/knowledge-base/preview", json={"content": HOSTILE})
    assert preview.status_code == 200 and preview.json()["content_html"] == html
    # Search highlights are built from escaped text: a body cannot inject markup there.
    hits = (
        await admin.get("/api/v1/knowledge-base/search", params={"q": "alert raw link"})
    ).json()["items"]
    hit = next(h for h in hits if h["id"] == article["id"])
    assert_inert(hit["snippet_html"])
    assert {tag for tag, _ in Elements(hit["snippet_html"]).found} == {"mark"}


async def test_bad_input_is_refused_and_nothing_written(api: Api, admin: httpx.AsyncClient) -> None:
    before = (await admin.get(ARTICLES, params={"limit": 1})).json()["total"]
    good = {"title": "T", "category": "C", "content": "x"}
    for body in (
        {**good, "title": ""},
        {**good, "content": ""},
        {**good, "tags": ["no spaces"]},
        {**good, "status": "archived"},
        {**good, "slug": "Not A Slug"},
        {**good, "team_id": True},
        {**good, "links": {"runbook_ids": [0]}},
        {**good, "links": {"error_codes": ["not-a-code"]}},
        {**good, "content": "null\x00byte"},
        {**good, "author": "someone else"},
        {k: v for k, v in good.items() if k != "category"},
    ):
        assert_error(await admin.post(ARTICLES, json=body), 422, "VALIDATION_ERROR")
    assert_error(
        await admin.post(ARTICLES, json={**good, "team_id": 1, "shared": True}),
        422,
        "VALIDATION_ERROR",
    )
    assert_error(await admin.post(ARTICLES, json={**good, "team_id": 999999}), 404, "NOT_FOUND")
    taken = await make_article(admin, slug=uid("slug-"))
    assert_error(await admin.post(ARTICLES, json={**good, "slug": taken["slug"]}), 409, "CONFLICT")
    url = f"{ARTICLES}/{taken['id']}"
    assert_error(await admin.put(url, json={"title": ""}), 422, "VALIDATION_ERROR")
    assert_error(await admin.put(url, json={"team_id": 2}), 422, "VALIDATION_ERROR")
    assert_error(await admin.put(f"{ARTICLES}/999999", json={"title": "x"}), 404, "NOT_FOUND")
    assert_error(await admin.get(f"{ARTICLES}/0"), 422, "VALIDATION_ERROR")
    assert (await admin.get(ARTICLES, params={"limit": 1})).json()["total"] == before + 1
    assert (await admin.get(url)).json()["version"] == 1


async def test_roles_viewer_reads_and_votes_but_does_not_edit(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    article = await make_article(admin, title=f"Team article {uid()}", team_id=1)
    draft = await make_article(admin, status="draft", team_id=1)
    viewer = await make_user("viewer", team_ids=[1])
    operator = await make_user("operator", team_ids=[1])
    url = f"{ARTICLES}/{article['id']}"
    async with viewer.client(api) as v, operator.client(api) as o:
        assert (await v.get(url)).status_code == 200
        assert_error(await v.get(f"{ARTICLES}/{draft['id']}"), 404, "NOT_FOUND")  # editors' drafts
        listed = (await v.get(ARTICLES, params={"limit": 1000})).json()["items"]
        assert all(a["status"] == "published" for a in listed)
        assert_error(await v.put(url, json={"title": "mine"}), 403, "FORBIDDEN")
        assert_error(
            await v.post(ARTICLES, json={"title": "x", "category": "c", "content": "x"}),
            403,
            "FORBIDDEN",
        )
        assert_error(
            await v.post("/api/v1/knowledge-base/preview", json={"content": "x"}), 403, "FORBIDDEN"
        )

        # Helpful: once per person, changeable; the counts are everyone's.
        r = await v.post(f"{url}/helpful", json={"helpful": True})
        assert r.status_code == 200 and (r.json()["helpful_yes"], r.json()["helpful_no"]) == (1, 0)
        r = await o.post(f"{url}/helpful")  # no body: yes
        assert (r.json()["helpful_yes"], r.json()["helpful_no"]) == (2, 0)
        r = await v.post(f"{url}/helpful", json={"helpful": False})
        assert (r.json()["helpful_yes"], r.json()["helpful_no"]) == (1, 1)
        assert (await v.get(url)).json()["my_vote"] is False
        assert_error(
            await v.post(f"{url}/helpful", json={"helpful": "maybe"}), 422, "VALIDATION_ERROR"
        )

        # Operators edit their team's articles, but not the shared ones (admins do).
        assert (await o.put(url, json={"summary": "by the operator"})).status_code == 200
        shared = (await o.get(ARTICLES, params={"category": "Error codes", "limit": 1})).json()
        assert_error(
            await o.put(f"{ARTICLES}/{shared['items'][0]['id']}", json={"title": "x"}),
            403,
            "FORBIDDEN",
        )
        assert_error(
            await o.post(
                ARTICLES, json={"title": "x", "category": "c", "content": "x", "shared": True}
            ),
            403,
            "FORBIDDEN",
        )
    async with api.client() as anonymous:
        for method, path in (
            ("GET", ARTICLES),
            ("POST", ARTICLES),
            ("GET", url),
            ("PUT", url),
            ("POST", f"{url}/helpful"),
            ("GET", "/api/v1/knowledge-base/search?q=x"),
            ("GET", "/api/v1/knowledge-base/categories"),
            ("GET", "/api/v1/knowledge-base/contextual-help?context=x"),
        ):
            assert_error(await anonymous.request(method, path, json={}), 401, "UNAUTHORIZED")


async def test_another_teams_article_is_not_found(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    word = uid("secretword")
    theirs = await make_article(admin, team_id=team["id"], content=f"The {word} lives here.")
    outsider = await make_user("operator", team_ids=[1])
    url = f"{ARTICLES}/{theirs['id']}"
    async with outsider.client(api) as c:
        assert_error(await c.get(url), 404, "NOT_FOUND")
        assert_error(await c.put(url, json={"title": "x"}), 404, "NOT_FOUND")
        assert_error(await c.post(f"{url}/helpful"), 404, "NOT_FOUND")
        assert_error(await c.get(f"{url}/versions"), 404, "NOT_FOUND")
        assert_error(await c.get(f"{url}/diff"), 404, "NOT_FOUND")
        assert_error(
            await c.post(
                ARTICLES,
                json={"title": "x", "category": "c", "content": "x", "team_id": team["id"]},
            ),
            404,
            "NOT_FOUND",
        )
        found = (await c.get("/api/v1/knowledge-base/search", params={"q": word})).json()
        assert found["total"] == 0
        categories = (await c.get("/api/v1/knowledge-base/categories")).json()["items"]
    mine = (await admin.get("/api/v1/knowledge-base/search", params={"q": word})).json()
    assert [h["id"] for h in mine["items"]] == [theirs["id"]]
    assert sum(c["article_count"] for c in categories) < (await admin.get(ARTICLES)).json()["total"]


async def test_events_and_audit_for_every_change(api: Api, admin: httpx.AsyncClient) -> None:
    ctx = api.app.state.ctx
    async with ctx.events.subscribe() as queue:
        article = await make_article(admin, team_id=1)
        url = f"{ARTICLES}/{article['id']}"
        await admin.put(url, json={"content": "changed"})
        await admin.post(f"{url}/helpful", json={"helpful": True})
        seen: list[Event] = []
        while len(seen) < 3:
            event = await asyncio.wait_for(queue.get(), 5)
            if event.type.startswith("knowledge.") and event.data["article_id"] == article["id"]:
                seen.append(event)
    assert [e.type for e in seen] == [
        "knowledge.article_created",
        "knowledge.article_updated",
        "knowledge.feedback",
    ]
    assert seen[1].data["changed"] == ["content"] and seen[1].team_id == 1
    assert seen[2].data["helpful_yes"] == 1
    logs = await admin.get(
        "/api/v1/audit/logs",
        params={"resource_type": "knowledge_article", "resource_id": article["id"]},
    )
    actions = sorted(i["action"] for i in logs.json()["items"])
    assert actions == [
        "knowledge.article.create",
        "knowledge.article.feedback",
        "knowledge.article.update",
    ]


async def test_categories_counts_and_filters(api: Api, admin: httpx.AsyncClient) -> None:
    category, tag = uid("Cat "), uid("tag")
    for _ in range(2):
        await make_article(admin, category=category, tags=[tag])
    await make_article(admin, category=category, status="draft")
    counts = {
        c["name"]: c["article_count"]
        for c in (await admin.get("/api/v1/knowledge-base/categories")).json()["items"]
    }
    assert counts[category] == 3 and counts["Error codes"] >= 40
    assert (await admin.get(ARTICLES, params={"tag": tag})).json()["total"] == 2
    assert (await admin.get(ARTICLES, params={"category": category, "status": "draft"})).json()[
        "total"
    ] == 1
    paged = (
        await admin.get(ARTICLES, params={"category": category, "page": 2, "page_size": 2})
    ).json()
    assert (paged["total"], len(paged["items"]), paged["offset"]) == (3, 1, 2)


async def test_contextual_help_by_page_error_code_and_event(
    api: Api, admin: httpx.AsyncClient
) -> None:
    help_url = "/api/v1/knowledge-base/contextual-help"
    page = uid("page")
    mine = await make_article(admin, links={"pages": [page], "events": [f"{page}.changed"]})
    by_page = (await admin.get(help_url, params={"context": f"page:{page}"})).json()["items"]
    assert by_page[0]["id"] == mine["id"] and by_page[0]["matched_by"] == "link"
    by_event = (await admin.get(help_url, params={"context": f"{page}.changed"})).json()["items"]
    assert by_event[0]["id"] == mine["id"]
    for code, slug in (
        ("NOT_FOUND", "error-not-found"),
        ("error:dump_failed", "error-dump-failed"),
    ):
        items = (await admin.get(help_url, params={"context": code})).json()["items"]
        assert slug in [i["slug"] for i in items if i["matched_by"] == "link"], items
    # Nothing linked: the best search matches of the context's words.
    searched = (await admin.get(help_url, params={"context": "page:retention"})).json()["items"]
    assert searched[0]["slug"] == "how-retention-works"
    assert_error(await admin.get(help_url), 422, "VALIDATION_ERROR")
    nothing = (await admin.get(help_url, params={"context": "%%%"})).json()
    assert nothing["items"] == []


async def test_shipped_articles_load_once_and_keep_local_edits(
    api: Api, admin: httpx.AsyncClient
) -> None:
    db = api.app.state.ctx.db
    async with db.write_session() as session:
        assert await shipped.load(session) == 0  # loaded at start; nothing new since
    listed = (await admin.get(ARTICLES, params={"limit": 1000})).json()["items"]
    slugs = {a["slug"] for a in listed if a["source"] == "shipped"}
    assert slugs == {s.article.slug for s in shipped.shipped_articles()}
    article = next(a for a in listed if a["slug"] == "how-masking-works")
    assert (
        article["shared"] and article["status"] == "published" and article["author"] == "opscenter"
    )
    # An admin's edit survives a start that brings a newer shipped text.
    url = f"{ARTICLES}/{article['id']}"
    edited = await admin.put(url, json={"summary": "Our own words", "note": "local"})
    assert edited.status_code == 200
    async with db.write_session() as session:
        from sqlalchemy import update

        from opscenter.models import KnowledgeArticle

        await session.execute(
            update(KnowledgeArticle)
            .where(KnowledgeArticle.id == article["id"])
            .values(shipped_hash="old")
        )
        assert await shipped.load(session) == 0
        await session.commit()
    assert (await admin.get(url)).json()["summary"] == "Our own words"
