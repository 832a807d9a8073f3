"""What the HTML and JSON entrypoints share: how a meeting is shown, signed RSVP links, template filters."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.events.domain import KINDS
from shared import tokens

RSVP_LINK = "events-rsvp"  # a person's own link to their RSVP: see it, get the joining link, cancel
RSVP_LINK_MAX_AGE_S = 400 * 24 * 3600
MEMBER_LINK = "events-member"  # in emails to members: RSVP without typing a name and address
MEMBER_LINK_MAX_AGE_S = 60 * 24 * 3600
KIND_LABELS = dict(KINDS)


class Pages:
    """The HTML pages of one request: a template rendered, or a page with a title and a message."""

    def __init__(self, request: Request, templates: Jinja2Templates) -> None:
        self.request = request
        self.templates = templates

    def render(self, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        return self.templates.TemplateResponse(self.request, name, context, status_code=status)

    def message(self, title: str, message: str, status: int) -> HTMLResponse:
        return self.render("message.html", {"title": title, "message": message}, status)


def rsvp_token(secret: str, rsvp_id: str) -> str:
    return tokens.sign(secret, RSVP_LINK, {"r": rsvp_id})


def rsvp_from_token(secret: str, token: str) -> str:
    return str(tokens.verify(secret, RSVP_LINK, token, RSVP_LINK_MAX_AGE_S)["r"])


def member_token(secret: str, member_id: str) -> str:
    return tokens.sign(secret, MEMBER_LINK, {"m": member_id})


def member_from_token(secret: str, token: str) -> str | None:
    if not token:
        return None
    try:
        return str(tokens.verify(secret, MEMBER_LINK, token, MEMBER_LINK_MAX_AGE_S)["m"])
    except (tokens.InvalidToken, KeyError, TypeError):
        return None


def install_filters(t: Jinja2Templates) -> None:
    t.env.globals["kind_labels"] = KIND_LABELS


def meeting_json(row: Any, counts: dict[str, int] | None = None, *, organiser: bool = False,
                 base_url: str = "") -> dict[str, Any]:
    """A meeting as the organiser JSON API returns it; the check-in code and joining link only to organisers."""
    data: dict[str, Any] = {
        "id": row.id,
        "title": row.title,
        "description": row.description,
        "kind": row.kind,
        "scope_type": row.scope_type,
        "scope_id": row.scope_id,
        "region_id": row.region_id,
        "starts_at": row.starts_at.isoformat(),
        "ends_at": row.ends_at.isoformat(),
        "timezone": row.timezone,
        "venue": row.venue,
        "capacity": row.capacity,
        "rsvp_deadline": row.rsvp_deadline.isoformat() if row.rsvp_deadline else None,
        "campaign_id": row.campaign_id,
        "parent_meeting_id": row.parent_meeting_id,
        "speakers": row.speakers,
        "reminder_offsets": list(row.reminder_offsets),
        "status": row.status,
        "sequence": row.sequence,
        "cancel_reason": row.cancel_reason,
        "public_url": f"{base_url}/events/{row.id}",
        "ical_url": f"{base_url}/calendar/meetings/{row.id}.ics",
    }
    if organiser:
        data["online_url"] = row.online_url
        data["check_in_code"] = row.check_in_code
    if counts is not None:
        data["counts"] = counts
    return data


def rsvp_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "meeting_id": row.meeting_id,
        "member_id": row.member_id,
        "name": row.name,
        "email": row.email,
        "status": row.status,
        "waitlist_position": row.waitlist_position,
        "guests": row.guests,
        "source": row.source,
        "created_at": row.created_at.isoformat(),
        "attended_at": row.attended_at.isoformat() if row.attended_at else None,
        "attendance_method": row.attendance_method,
    }
