"""Each organiser's private Atom feed of their digests, at /feeds/digests/<token>.atom.

The token in the address is the only credential (feed readers cannot sign in); an organiser revokes it
by asking for a new address on their digests page, after which the old one answers 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from feedgen.feed import FeedGenerator

from services.notifications.digests import Digests
from services.notifications.organisers import Organisers

router = APIRouter(tags=["digest feeds"])
FEED_ENTRIES = 50


def feed_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/feeds/digests/{token}.atom"


def build_feed(organiser: Any, digests: list[Any], *, base_url: str, network_name: str) -> bytes:
    """Valid Atom (RFC 4287) of an organiser's digests, newest first."""
    fg = FeedGenerator()
    host = base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0] or "groundswell.local"
    fg.id(f"tag:{host},2026:digests:{organiser.organiser_id}")
    fg.title(f"{network_name}: digests for {organiser.name or 'organisers'}")
    fg.author({"name": network_name})
    fg.link(href=feed_url(base_url, organiser.feed_token), rel="self", type="application/atom+xml")
    fg.link(href=f"{base_url.rstrip('/')}/notifications/organise/digests", rel="alternate", type="text/html")
    fg.subtitle("What happened where you organise, and what is coming up")
    fg.language("en-GB")
    updated = max([d.created_at for d in digests], default=organiser.created_at)
    fg.updated(updated if updated.tzinfo else updated.replace(tzinfo=UTC))
    for d in reversed(digests):  # feedgen puts the last added entry first
        entry = fg.add_entry()
        entry.id(f"urn:uuid:{d.id}")
        entry.title(d.title)
        entry.updated(d.created_at)
        entry.published(d.created_at)
        entry.summary(f"{d.entries} items for {d.scope_name}, {d.period}")
        entry.content(d.body_html, type="html")
        entry.link(href=f"{base_url.rstrip('/')}/notifications/organise/digests/{d.id}", rel="alternate")
    return fg.atom_str(pretty=True)


@router.get("/feeds/digests/{token}.atom", include_in_schema=False)
async def digest_feed(request: Request, token: str) -> Response:
    digests: Digests = request.app.state.digests
    organisers: Organisers = request.app.state.organisers
    async with organisers.uows.begin() as uow:
        organiser = await organisers.organiser_by_feed_token(uow.session, token) if token else None
        if organiser is None:
            raise HTTPException(404, "There is no feed at this address: it may have been replaced by a new one")
        rows = await organisers.digests_of(uow.session, organiser.organiser_id, FEED_ENTRIES)
        wording = await digests.email_settings.load(uow.session)
    body = build_feed(organiser, rows, base_url=digests.settings.public_base_url, network_name=wording["network_name"])
    return Response(
        body,
        media_type="application/atom+xml; charset=utf-8",
        headers={
            "Cache-Control": "private, max-age=300",
            "X-Robots-Tag": "noindex",
            "Last-Modified": _http_date(max([d.created_at for d in rows], default=organiser.created_at)),
        },
    )


def _http_date(at: datetime) -> str:
    return format_datetime(at.astimezone(UTC), usegmt=True)
