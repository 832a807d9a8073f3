"""Public pages: the listing at /events, a page per meeting with its RSVP form, a person's RSVP, self check-in."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.events import views
from services.events.domain import KINDS, CheckInRefused, RsvpRefused, rsvp_closed_reason, validate_rsvp
from services.events.service import MeetingNotFound, RsvpNotFound, utcnow
from shared import tokens
from shared.errors import InvalidInput

router = APIRouter(tags=["public pages"])


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return views.templates(request).TemplateResponse(request, name, context, status_code=status)


def _message(request: Request, title: str, message: str, status: int) -> HTMLResponse:
    return _page(request, "message.html", {"title": title, "message": message}, status)


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.get("/events", response_class=HTMLResponse)
async def listing(
    request: Request, region: str = "", group: str = "", kind: str = "", date_from: str = "", date_to: str = ""
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
    svc = views.service(request)
    rows = await svc.list_meetings(
        region_id=region or None,
        group_id=group or None,
        kind=kind or None,
        on_or_after=start,
        before=date.fromordinal(end.toordinal() + 1) if end else None,
    )
    units = await svc.units()
    return _page(
        request,
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
async def _rsvp_from(request: Request, token: str) -> Any:
    try:
        rsvp_id = views.rsvp_from_token(views.secret_key(request), token)
        return await views.service(request).get_rsvp(rsvp_id)
    except (tokens.InvalidToken, RsvpNotFound, KeyError, TypeError):
        return None


@router.get("/events/rsvps/{token}", response_class=HTMLResponse)
async def my_rsvp(request: Request, token: str) -> HTMLResponse:
    rsvp = await _rsvp_from(request, token)
    if rsvp is None:
        return _message(request, "Link not recognised", "This RSVP link is not valid or has expired.", 404)
    meeting = await views.service(request).get_meeting(rsvp.meeting_id)
    return _page(request, "rsvp.html", {"rsvp": rsvp, "meeting": meeting, "token": token})


@router.post("/events/rsvps/{token}/cancel")
async def cancel_my_rsvp(request: Request, token: str) -> Response:
    rsvp = await _rsvp_from(request, token)
    if rsvp is None:
        return _message(request, "Link not recognised", "This RSVP link is not valid or has expired.", 404)
    await views.service(request).cancel_rsvp(rsvp.id)
    return RedirectResponse(f"/events/rsvps/{token}", status_code=303)


# A meeting's page and its RSVP form ------------------------------------------------------------------
async def _render_meeting(request: Request, meeting: Any, *, values: dict[str, Any], errors: dict[str, str],
                          status: int = 200, closed: str | None = None) -> HTMLResponse:
    svc = views.service(request)
    counts = await svc.count_rsvps(meeting.id)
    closed = closed or rsvp_closed_reason(status=meeting.status, starts_at=meeting.starts_at,
                                          ends_at=meeting.ends_at, rsvp_deadline=meeting.rsvp_deadline, now=utcnow())
    sessions = await svc.list_meetings(upcoming_only=False, limit=100) if meeting.parent_meeting_id is None else []
    sessions = [s for s in sessions if s.parent_meeting_id == meeting.id]
    places_left = None if meeting.capacity is None else max(0, meeting.capacity - meeting.going_count)
    return _page(
        request,
        "meeting.html",
        {"meeting": meeting, "counts": counts, "values": values, "errors": errors, "closed": closed,
         "places_left": places_left, "sessions": sessions},
        status,
    )


@router.get("/events/{meeting_id}", response_class=HTMLResponse)
async def meeting_page(request: Request, meeting_id: str, member: str = "") -> HTMLResponse:
    try:
        meeting = await views.service(request).get_meeting(meeting_id)
    except MeetingNotFound:
        return _message(request, "Meeting not found", "There is no meeting at this address.", 404)
    return await _render_meeting(request, meeting, values={"member": member, "guests": "0"}, errors={})


@router.post("/events/{meeting_id}/rsvp", response_class=HTMLResponse)
async def rsvp_submit(
    request: Request,
    meeting_id: str,
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    guests: Annotated[str, Form()] = "0",
    join_network: Annotated[str, Form()] = "",
    postcode: Annotated[str, Form()] = "",
    member: Annotated[str, Form()] = "",
    website: Annotated[str, Form()] = "",  # honeypot: people never see it, bots fill it
) -> Response:
    svc = views.service(request)
    try:
        meeting = await svc.get_meeting(meeting_id)
    except MeetingNotFound:
        return _message(request, "Meeting not found", "There is no meeting at this address.", 404)
    if website:
        # Look like success to a bot; store nothing.
        return RedirectResponse(f"/events/{meeting_id}?rsvp=received", status_code=303)
    values = {"name": name, "email": email, "guests": guests, "join_network": bool(join_network),
              "postcode": postcode, "member": member}
    member_id = views.member_from_token(views.secret_key(request), member)
    try:
        form = validate_rsvp(name=name, email=email, member_id=member_id, guests=guests,
                             join_network=bool(join_network) and member_id is None, postcode=postcode)
        outcome = await svc.rsvp(meeting_id, form, source="form")
    except InvalidInput as exc:
        return await _render_meeting(request, meeting, values=values, errors=exc.errors, status=422)
    except RsvpRefused as exc:
        return await _render_meeting(request, meeting, values=values, errors={}, status=409, closed=str(exc))
    token = views.rsvp_token(views.secret_key(request), outcome.rsvp_id)
    return RedirectResponse(f"/events/rsvps/{token}", status_code=303)


# Self check-in with the code shown at the venue ------------------------------------------------------
@router.get("/events/{meeting_id}/check-in", response_class=HTMLResponse)
async def self_check_in_form(request: Request, meeting_id: str, member: str = "") -> HTMLResponse:
    try:
        meeting = await views.service(request).get_meeting(meeting_id)
    except MeetingNotFound:
        return _message(request, "Meeting not found", "There is no meeting at this address.", 404)
    return _page(request, "self_check_in.html", {"meeting": meeting, "values": {"member": member}, "errors": {}})


@router.post("/events/{meeting_id}/check-in", response_class=HTMLResponse)
async def self_check_in(
    request: Request,
    meeting_id: str,
    code: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    member: Annotated[str, Form()] = "",
) -> HTMLResponse:
    svc = views.service(request)
    try:
        meeting = await svc.get_meeting(meeting_id)
    except MeetingNotFound:
        return _message(request, "Meeting not found", "There is no meeting at this address.", 404)
    values = {"code": code, "email": email, "member": member}
    errors: dict[str, str] = {}
    if not code.strip():
        errors["code"] = "Enter the code shown at the venue"
    member_id = views.member_from_token(views.secret_key(request), member)
    if not email.strip() and not member_id:
        errors["email"] = "Enter the email address you RSVPed with"
    if not errors:
        try:
            await svc.self_check_in(meeting_id, code, email, member_id)
        except CheckInRefused as exc:
            errors["code"] = str(exc)
    if errors:
        return _page(request, "self_check_in.html", {"meeting": meeting, "values": values, "errors": errors}, 422)
    return _message(request, "You are checked in", f"Welcome to {meeting.title}. Thank you for coming.", 200)
