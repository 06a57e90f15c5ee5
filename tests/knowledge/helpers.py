from __future__ import annotations

import uuid
from typing import Any

import httpx

ARTICLES = "/api/v1/knowledge-base/articles"


def uid(prefix: str = "kb") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def make_article(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {
        "title": fields.pop("title", f"Article {uid()}"),
        "category": fields.pop("category", "Testing"),
        "content": fields.pop("content", "Some *Markdown* text."),
        "status": fields.pop("status", "published"),
        **fields,
    }
    r = await client.post(ARTICLES, json=body)
    assert r.status_code == 201, r.text
    article: dict[str, Any] = r.json()
    return article
