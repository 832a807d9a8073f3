"""What the HTML and JSON entrypoints share: rendering pages, signed member links, template filters, JSON shapes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.campaigns.deps import Templates
from services.campaigns.domain import ASK_KIND_LABELS, SHARE_CHANNELS
from shared import tokens

MEMBER_LINK = "campaigns-member"  # in emails to members: take an action without typing a name and address
MEMBER_LINK_MAX_AGE_S = 60 * 24 * 3600


class Pages:
    """The service's pages for one request (a route declares `pages: Pages`)."""

    def __init__(self, request: Request, templates: Templates) -> None:
        self.request = request
        self.templates = templates

    def render(self, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        return self.templates.TemplateResponse(self.request, name, context, status_code=status)

    def message(self, title: str, message: str, status: int, **extra: Any) -> HTMLResponse:
        return self.render("message.html", {"title": title, "message": message, **extra}, status)


def member_token(secret: str, member_id: str) -> str:
    return tokens.sign(secret, MEMBER_LINK, {"m": member_id})


def member_from_token(secret: str, token: str) -> str | None:
    if not token:
        return None
    try:
        return str(tokens.verify(secret, MEMBER_LINK, token, MEMBER_LINK_MAX_AGE_S)["m"])
    except (tokens.InvalidToken, KeyError, TypeError):
        return None


def number(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def install_filters(t: Jinja2Templates) -> None:
    t.env.filters["number"] = number
    t.env.filters["percent"] = percent
    t.env.globals["kind_labels"] = ASK_KIND_LABELS
    t.env.globals["share_channels"] = SHARE_CHANNELS


def campaign_json(row: Any, asks: list[Any] | None = None, counts: dict[str, int] | None = None,
                  base: str = "") -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "title": row.title,
        "summary": row.summary,
        "goal": row.goal,
        "issues": list(row.issues),
        "scope_type": row.scope_type,
        "scope_id": row.scope_id,
        "region_id": row.region_id,
        "partner_ids": list(row.partner_ids),
        "status": row.status,
        "launched_at": row.launched_at.isoformat(),
        "closed_at": row.closed_at.isoformat() if row.closed_at else None,
        "public_url": f"{base}/campaigns/{row.id}",
    }
    if asks is not None:
        data["asks"] = [ask_json(a, (counts or {}).get(a.id, 0), base) for a in asks]
    return data


def ask_json(row: Any, count: int = 0, base: str = "") -> dict[str, Any]:
    return {
        "id": row.id,
        "campaign_id": row.campaign_id,
        "kind": row.kind,
        "title": row.title,
        "description": row.description,
        "body": row.body,
        "addressee": row.addressee,
        "goal": row.goal,
        "letter_subject": row.letter_subject,
        "meeting_id": row.meeting_id,
        "share_url": row.share_url,
        "status": row.status,
        "count": count,
        "public_url": f"{base}/campaigns/{row.campaign_id}/asks/{row.id}",
    }


async def _pages(request: Request, templates: Templates) -> Pages:
    """A coroutine, so FastAPI builds the request's Pages on the event loop (a class as a dependency is called in a
    worker thread)."""
    return Pages(request, templates)


PagesDep = Annotated[Pages, Depends(_pages)]
