"""What the HTML and JSON entrypoints share: the services on the app, signed member links, template filters."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from services.campaigns.domain import ASK_KIND_LABELS, SHARE_CHANNELS
from services.campaigns.engagement import EngagementService
from services.campaigns.reporting import Reports
from services.campaigns.service import CampaignsService
from shared import tokens

MEMBER_LINK = "campaigns-member"  # in emails to members: take an action without typing a name and address
MEMBER_LINK_MAX_AGE_S = 60 * 24 * 3600


def service(request: Request) -> CampaignsService:
    return request.app.state.campaigns


def engagement(request: Request) -> EngagementService:
    return request.app.state.engagement


async def reports(request: Request) -> Reports:
    return Reports(await engagement(request).ladder())


def templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


def secret_key(request: Request) -> str:
    return request.app.state.runtime.settings.secret_key


def base_url(request: Request) -> str:
    return request.app.state.runtime.settings.public_base_url.rstrip("/")


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
