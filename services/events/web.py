"""Public pages: the listing at /events, a page per meeting with its RSVP form, a person's RSVP, self check-in."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.events import views
from services.events.deps import CheckInDep, ClientIp, LimitsDep, MeetingsDep, PagesDep, RsvpsDep, SecretKey
from services.events.domain import (
    CHECK_IN_PER_IP,
    KINDS,
    RSVP_PER_EMAIL,
    RSVP_PER_IP,
    CheckInRefused,
    MeetingNotFound,
    RsvpNotFound,
    RsvpRefused,
    rsvp_closed_reason,
    validate_rsvp,
)
from services.events.meetings import Meetings
from services.events.queries import utcnow
from services.events.rsvps import Rsvps
from services.events.views import Pages
from shared import tokens
from shared.contact import normalise_email
from shared.errors import InvalidInput

router = APIRouter(tags=["public pages"])
NO_MEETING = ("Meeting not found", "There is no meeting at this address.", 404)


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.get("/events", response_class=HTMLResponse)
async def listing(
    pages: PagesDep, meetings: MeetingsDep,
    region: str = "", group: str = "", kind: str = "", date_from: str = "", date_to: str = "",
) -> HTMLResponse:
    """Upcoming meetings, filtered by region, group, kind and dates (a plain GET form)."""
    errors: dict[str, str] = {}
    start, end = _date(date_from), _date(date_to)
    if date_from and start is None:
        errors["date_from"] = "Enter the first date like 2027-03-14"
    if date_to and end is None:
        errors["date_to"] = "Enter the last date like 2027-03-31"
    if kind and kind not in dict(KINDS):
        errors["kind"] = "Choose in person, online or hybrid"
        kind = ""
    rows = await meetings.find(
        region_id=region or None,
        group_id=group or None,
        kind=kind or None,
        on_or_after=start,
        before=date.fromordinal(end.toordinal() + 1) if end else None,
    )
    units = await meetings.units()
    return pages.render(
        "events_list.html",
        {
            "meetings": rows,
            "filters": {"region": region, "group": group, "kind": kind, "date_from": date_from, "date_to": date_to},
            "errors": errors,
            "regions": [u for u in units if u.kind == "region"],
            "groups": [u for u in units if u.kind == "group"],
            "unit_names": {u.unit_id: u.name for u in units},
            "kinds": KINDS,
        },
        400 if errors else 200,
    )


# A person's own RSVP (from the link on the thank-you page and in emails) ----------------------------
async def _rsvp_from(rsvps: RsvpsDep, secret: SecretKey, token: str) -> Any:
    """The RSVP a person's own link names, or None when the link is not valid."""
    try:
        return await rsvps.get(views.rsvp_from_token(secret, token))
    except (tokens.InvalidToken, RsvpNotFound, KeyError, TypeError):
        return None


RsvpFromLink = Annotated[Any, Depends(_rsvp_from)]
UNKNOWN_LINK = ("Link not recognised", "This RSVP link is not valid or has expired.", 404)


@router.get("/events/rsvps/{token}", response_class=HTMLResponse)
async def my_rsvp(pages: PagesDep, meetings: MeetingsDep, rsvp: RsvpFromLink, token: str) -> HTMLResponse:
    if rsvp is None:
        return pages.message(*UNKNOWN_LINK)
    meeting = await meetings.get(rsvp.meeting_id)
    return pages.render("rsvp.html", {"rsvp": rsvp, "meeting": meeting, "token": token})


@router.post("/events/rsvps/{token}/cancel")
async def cancel_my_rsvp(pages: PagesDep, rsvps: RsvpsDep, rsvp: RsvpFromLink, token: str) -> Response:
    if rsvp is None:
        return pages.message(*UNKNOWN_LINK)
    await rsvps.cancel(rsvp.id)
    return RedirectResponse(f"/events/rsvps/{token}", status_code=303)


# A meeting's page and its RSVP form ------------------------------------------------------------------
async def _render_meeting(pages: Pages, meetings: Meetings, rsvps: Rsvps, meeting: Any, *,
                          values: dict[str, Any], errors: dict[str, str], status: int = 200,
                          closed: str | None = None) -> HTMLResponse:
    counts = await rsvps.counts(meeting.id)
    closed = closed or rsvp_closed_reason(status=meeting.status, starts_at=meeting.starts_at,
                                          ends_at=meeting.ends_at, rsvp_deadline=meeting.rsvp_deadline, now=utcnow())
    sessions = await meetings.find(upcoming_only=False, limit=100) if meeting.parent_meeting_id is None else []
    sessions = [s for s in sessions if s.parent_meeting_id == meeting.id]
    places_left = None if meeting.capacity is None else max(0, meeting.capacity - meeting.going_count)
    return pages.render(
        "meeting.html",
        {"meeting": meeting, "counts": counts, "values": values, "errors": errors, "closed": closed,
         "places_left": places_left, "sessions": sessions},
        status,
    )


@router.get("/events/{meeting_id}", response_class=HTMLResponse)
async def meeting_page(pages: PagesDep, meetings: MeetingsDep, rsvps: RsvpsDep, meeting_id: str,
                       member: str = "") -> HTMLResponse:
    try:
        meeting = await meetings.get(meeting_id)
    except MeetingNotFound:
        return pages.message(*NO_MEETING)
    return await _render_meeting(pages, meetings, rsvps, meeting, values={"member": member, "guests": "0"}, errors={})


@router.post("/events/{meeting_id}/rsvp", response_class=HTMLResponse)
async def rsvp_submit(
    pages: PagesDep,
    meetings: MeetingsDep,
    rsvps: RsvpsDep,
    limits: LimitsDep,
    ip: ClientIp,
    secret: SecretKey,
    meeting_id: str,
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    guests: Annotated[str, Form()] = "0",
    join_network: Annotated[str, Form()] = "",
    postcode: Annotated[str, Form()] = "",
    member: Annotated[str, Form()] = "",
    website: Annotated[str, Form()] = "",  # honeypot: people never see it, bots fill it
) -> Response:
    """An RSVP answers the same whoever's address was typed, and whether it was new or a repeat: "check your
    email" (the RSVP's own link goes to that address). Only a member who came by their own signed link is taken
    to their RSVP's page."""
    try:
        meeting = await meetings.get(meeting_id)
    except MeetingNotFound:
        return pages.message(*NO_MEETING)
    sent = RedirectResponse(f"/events/{meeting_id}/rsvp/sent", status_code=303)
    if website:
        return sent  # look like success to a bot; store nothing
    address = normalise_email(email)
    address_allowed = await limits.check(ip, [RSVP_PER_IP], [(RSVP_PER_EMAIL, address)] if address else [])
    values = {"name": name, "email": email, "guests": guests, "join_network": bool(join_network),
              "postcode": postcode, "member": member}
    member_id = views.member_from_token(secret, member)
    try:
        form = validate_rsvp(name=name, email=email, member_id=member_id, guests=guests,
                             join_network=bool(join_network) and member_id is None, postcode=postcode)
        if not address_allowed:
            return sent  # that address had enough email from us this hour: answer as always, do nothing
        outcome = await rsvps.rsvp(meeting_id, form, source="form")
    except InvalidInput as exc:
        return await _render_meeting(pages, meetings, rsvps, meeting, values=values, errors=exc.errors, status=422)
    except RsvpRefused as exc:
        return await _render_meeting(pages, meetings, rsvps, meeting, values=values, errors={}, status=409,
                                     closed=str(exc))
    if member_id is not None:
        return RedirectResponse(f"/events/rsvps/{views.rsvp_token(secret, outcome.rsvp_id)}", status_code=303)
    return sent


@router.get("/events/{meeting_id}/rsvp/sent", response_class=HTMLResponse)
async def rsvp_sent(pages: PagesDep, meetings: MeetingsDep, meeting_id: str) -> HTMLResponse:
    try:
        meeting = await meetings.get(meeting_id)
    except MeetingNotFound:
        return pages.message(*NO_MEETING)
    return pages.render("rsvp_sent.html", {"meeting": meeting})


# Self check-in with the code shown at the venue ------------------------------------------------------
@router.get("/events/{meeting_id}/check-in", response_class=HTMLResponse)
async def self_check_in_form(pages: PagesDep, meetings: MeetingsDep, meeting_id: str, member: str = "") -> HTMLResponse:
    try:
        meeting = await meetings.get(meeting_id)
    except MeetingNotFound:
        return pages.message(*NO_MEETING)
    return pages.render("self_check_in.html", {"meeting": meeting, "values": {"member": member}, "errors": {}})


@router.post("/events/{meeting_id}/check-in", response_class=HTMLResponse)
async def self_check_in(
    pages: PagesDep,
    meetings: MeetingsDep,
    check_in: CheckInDep,
    limits: LimitsDep,
    ip: ClientIp,
    secret: SecretKey,
    meeting_id: str,
    code: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    member: Annotated[str, Form()] = "",
) -> HTMLResponse:
    try:
        meeting = await meetings.get(meeting_id)
    except MeetingNotFound:
        return pages.message(*NO_MEETING)
    await limits.check(ip, [CHECK_IN_PER_IP])  # the venue's code is short: no guessing it by the thousand
    values = {"code": code, "email": email, "member": member}
    errors: dict[str, str] = {}
    if not code.strip():
        errors["code"] = "Enter the code shown at the venue"
    member_id = views.member_from_token(secret, member)
    if not email.strip() and not member_id:
        errors["email"] = "Enter the email address you RSVPed with"
    if not errors:
        try:
            await check_in.self_check_in(meeting_id, code, email, member_id)
        except CheckInRefused as exc:
            errors["code"] = str(exc)
    if errors:
        return pages.render("self_check_in.html", {"meeting": meeting, "values": values, "errors": errors}, 422)
    return pages.message("You are checked in", f"Welcome to {meeting.title}. Thank you for coming.", 200)
