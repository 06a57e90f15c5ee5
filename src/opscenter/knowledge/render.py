"""Markdown to safe HTML, and to the plain text the search index reads.

markdown-it-py parses CommonMark (plus tables and strikethrough) with raw HTML off, so
`<script>` in a body is text; nh3 (ammonia) then keeps only the tags and URL schemes a
document needs, dropping event handlers and `javascript:` links whatever the parser let by."""

from __future__ import annotations

from dataclasses import dataclass

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)

_TAGS = {
    *("h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "blockquote"),
    *("ul", "ol", "li", "pre", "code", "em", "strong", "s", "del", "a", "img"),
    *("table", "thead", "tbody", "tr", "th", "td"),
}
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
    "code": {"class"},
}
_SCHEMES = {"http", "https", "mailto"}
# Search markers: private-use characters, removed from the text an index reads so that a
# body can never forge a highlight.
MARK_OPEN, MARK_CLOSE = "\ue000", "\ue001"


@dataclass(frozen=True)
class Rendered:
    html: str
    text: str


def sanitize(html: str) -> str:
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )


def render(markdown: str) -> Rendered:
    tokens = _MD.parse(markdown)
    html = sanitize(_MD.renderer.render(tokens, _MD.options, {}))
    return Rendered(html=html, text=plain_text(tokens))


def plain_text(tokens: list[Token]) -> str:
    """The words of a document, a block per line (so words of two blocks never join)."""
    lines: list[str] = []
    for token in tokens:
        if token.type == "inline":
            lines.append("".join(c.content for c in token.children or () if c.content))
        elif token.type in ("fence", "code_block"):
            lines.append(token.content)
    text = "\n".join(line.strip() for line in lines if line.strip())
    return text.replace(MARK_OPEN, " ").replace(MARK_CLOSE, " ")
