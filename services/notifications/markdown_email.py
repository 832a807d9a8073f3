"""An organiser's Markdown as an email: safe HTML (raw HTML is shown as text, only safe link schemes kept) and
a plain-text part generated from the same parse. Headings, links, lists, images by URL; a paragraph that is only a
link becomes a button. Web links can be rewritten (the click counter's redirect) with `link_for`."""

from __future__ import annotations

from collections.abc import Callable

from markdown_it import MarkdownIt
from markdown_it.token import Token

from services.notifications.domain import trackable

BUTTON_STYLE = (
    "display:inline-block;background:#00703c;color:#fff;padding:10px 16px;text-decoration:none;font-weight:600;"
)
IMAGE_STYLE = "max-width:100%;height:auto;"

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def render_markdown(source: str, link_for: Callable[[str], str] | None = None) -> tuple[str, str]:
    """(plain text, HTML) of `source`; `link_for` maps each web link's address to the one to put in the email."""
    tokens = _md.parse(source)
    _mark_buttons(tokens)
    for token in tokens:
        for child in token.children or ():
            if child.type == "link_open":
                href = str(child.attrGet("href") or "")
                if link_for is not None and trackable(href):
                    child.attrSet("href", link_for(href))
            elif child.type == "image":
                child.attrSet("style", IMAGE_STYLE)
    return _plain_text(tokens), _md.renderer.render(tokens, _md.options, {})


def links_in(source: str) -> list[str]:
    """The web links of `source`, in order, each once."""
    found: dict[str, None] = {}
    for token in _md.parse(source):
        for child in token.children or ():
            if child.type == "link_open":
                href = str(child.attrGet("href") or "")
                if trackable(href):
                    found[href] = None
    return list(found)


def _mark_buttons(tokens: list[Token]) -> None:
    for i, token in enumerate(tokens):
        if token.type != "inline" or i == 0 or tokens[i - 1].type != "paragraph_open":
            continue
        kids = [c for c in token.children or () if not (c.type == "text" and not c.content.strip())]
        if len(kids) >= 3 and kids[0].type == "link_open" and kids[-1].type == "link_close":
            if all(c.type != "link_open" for c in kids[1:-1]):
                kids[0].attrSet("style", BUTTON_STYLE)


def _plain_text(tokens: list[Token]) -> str:
    """The text part: what a reader sees, links written out after their words (the address the email uses)."""
    blocks: list[str] = []
    prefix: list[str] = []
    ordered: list[int] = []
    for token in tokens:
        if token.type in ("bullet_list_open", "ordered_list_open"):
            ordered.append(0 if token.type == "ordered_list_open" else -1)
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            ordered.pop()
        elif token.type == "list_item_open":
            if ordered and ordered[-1] >= 0:
                ordered[-1] += 1
                prefix.append(f"{ordered[-1]}. ")
            else:
                prefix.append("- ")
        elif token.type == "blockquote_open":
            prefix.append("> ")
        elif token.type == "blockquote_close":
            prefix.pop() if prefix else None
        elif token.type == "inline":
            line = _inline_text(token.children or [])
            lead = "".join(prefix)
            if prefix and prefix[-1] in ("- ",) or (prefix and prefix[-1][:-2].isdigit()):
                prefix.pop()
            blocks.append(lead + line)
        elif token.type in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
        elif token.type == "hr":
            blocks.append("----")
    return "\n\n".join(b for b in blocks if b.strip()) + "\n"


def _inline_text(children: list[Token]) -> str:
    out: list[str] = []
    hrefs: list[tuple[str, int]] = []
    for child in children:
        if child.type == "text" or child.type == "code_inline":
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif child.type == "link_open":
            hrefs.append((str(child.attrGet("href") or ""), len(out)))
        elif child.type == "link_close" and hrefs:
            href, start = hrefs.pop()
            words = "".join(out[start:])
            # In angle brackets (RFC 3986, appendix C): a full stop after the link is not taken as part of it.
            out.append(f" <{href}>" if words and words != href else ("" if words else href))
        elif child.type == "image":
            alt = "".join(c.content for c in child.children or ()) or "image"
            out.append(f"[{alt}: {child.attrGet('src')}]")
    return "".join(out)
