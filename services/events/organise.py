"""Organisers' pages under /events/organise: their meetings, scheduling form, check-in desk (search, mark, walk-in)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.events.checkin import CheckIn
from services.events.deps import CheckInDep, CurrentOrganiser, MeetingsDep, PagesDep, RsvpsDep, SecretKey
from services.events.domain import (
    KINDS,
    CheckInRefused,
    MeetingNotFound,
    NotYourMeeting,
    RsvpNotFound,
    validate_rsvp,
)
from services.events.rsvps import Rsvps
from services.events.views import Pages
from shared import auth, tokens
from shared.auth import OrganiserScope
from shared.errors import InvalidInput
from shared.web import local_time

router = APIRouter(prefix="/events/organise", tags=["organiser pages"])


async def _own(meetings: MeetingsDep, meeting_id: str, organiser: CurrentOrganiser) -> Any:
    """The meeting of the path, if the signed-in organiser's scope covers it (404, 403 otherwise)."""
    try:
        meeting = await meetings.get(meeting_id)
    except MeetingNotFound:
        raise HTTPException(404, "There is no meeting with that id") from None
    if not organiser.covers(meeting.scope_type, meeting.scope_id, meeting.region_id):
        raise HTTPException(403, "This meeting is outside the part of the network you organise")
    return meeting


OwnMeeting = Annotated[Any, Depends(_own)]


@router.get("/sign-in")
async def sign_in(secret: SecretKey, token: str) -> Response:
    """Exchange a signed organiser token (from `python -m services.events organiser-token`) for a session cookie."""
    try:
        tokens.verify(secret, auth.ORGANISER_SESSION, token, auth.SESSION_MAX_AGE_S)
    except tokens.InvalidToken:
        raise HTTPException(401, "This sign-in link is not valid or has expired") from None
    response = RedirectResponse("/events/organise", status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, token, max_age=auth.SESSION_MAX_AGE_S, httponly=True, samesite="lax",
                        path="/")
    return response


@router.get("", response_class=HTMLResponse)
async def my_meetings(pages: PagesDep, meetings: MeetingsDep, organiser: CurrentOrganiser) -> HTMLResponse:
    rows = await meetings.find(upcoming_only=False, include_cancelled=True, limit=500)
    mine = [r for r in rows if organiser.covers(r.scope_type, r.scope_id, r.region_id)]
    return pages.render("organise_list.html", {"meetings": mine, "organiser": organiser})


def _form_context(values: dict[str, Any], errors: dict[str, str], organiser: OrganiserScope) -> dict[str, Any]:
    return {"values": values, "errors": errors, "kinds": KINDS, "organiser": organiser}


@router.get("/new", response_class=HTMLResponse)
async def new_meeting_form(pages: PagesDep, organiser: CurrentOrganiser) -> HTMLResponse:
    values = {"kind": "in_person", "timezone": "Europe/London", "scope_type": organiser.scope_type,
              "scope_id": organiser.scope_id or "", "reminders": "1440, 60"}
    return pages.render("organise_new.html", _form_context(values, {}, organiser))


FORM_FIELDS = ("title", "description", "kind", "scope_type", "scope_id", "starts_at", "ends_at", "timezone", "venue",
               "online_url", "capacity", "rsvp_deadline", "reminders")


async def _read_meeting_form(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the organiser typed (to show again) and the same as the service layer takes it."""
    form = await request.form()
    values: dict[str, Any] = {k: str(form.get(k, "")) for k in FORM_FIELDS}
    raw: dict[str, Any] = {k: v for k, v in values.items() if k != "reminders"}
    try:
        raw["reminder_offsets"] = [int(x) for x in values["reminders"].replace(",", " ").split()]
    except ValueError:
        raw["reminder_offsets"] = ["x"]
    return values, raw


def _form_errors(exc: InvalidInput) -> dict[str, str]:
    errors = dict(exc.errors)
    if "reminder_offsets" in errors:
        errors["reminders"] = errors.pop("reminder_offsets")
    return errors


@router.post("/new", response_class=HTMLResponse)
async def new_meeting(request: Request, pages: PagesDep, meetings: MeetingsDep,
                      organiser: CurrentOrganiser) -> Response:
    values, raw = await _read_meeting_form(request)
    try:
        meeting_id = await meetings.schedule(raw, organiser)
    except InvalidInput as exc:
        return pages.render("organise_new.html", _form_context(values, _form_errors(exc), organiser), 422)
    except NotYourMeeting as exc:
        return pages.render("organise_new.html", _form_context(values, {"scope_id": str(exc)}, organiser), 403)
    return RedirectResponse(f"/events/organise/{meeting_id}/check-in", status_code=303)


@router.get("/{meeting_id}/edit", response_class=HTMLResponse)
async def edit_meeting_form(pages: PagesDep, m: OwnMeeting, organiser: CurrentOrganiser) -> HTMLResponse:
    values = {
        "title": m.title, "description": m.description, "kind": m.kind, "scope_type": m.scope_type,
        "scope_id": m.scope_id or "", "timezone": m.timezone, "venue": m.venue or "",
        "online_url": m.online_url or "", "capacity": m.capacity if m.capacity is not None else "",
        "starts_at": local_time(m.starts_at, m.timezone, "input"),
        "ends_at": local_time(m.ends_at, m.timezone, "input"),
        "rsvp_deadline": local_time(m.rsvp_deadline, m.timezone, "input") if m.rsvp_deadline else "",
        "reminders": ", ".join(str(o) for o in m.reminder_offsets),
    }
    return pages.render("organise_new.html", {**_form_context(values, {}, organiser), "meeting": m})


@router.post("/{meeting_id}/edit", response_class=HTMLResponse)
async def edit_meeting(request: Request, pages: PagesDep, meetings: MeetingsDep, m: OwnMeeting,
                       organiser: CurrentOrganiser) -> Response:
    values, raw = await _read_meeting_form(request)
    try:
        await meetings.update(m.id, raw, organiser)
    except InvalidInput as exc:
        context = {**_form_context(values, _form_errors(exc), organiser), "meeting": m}
        return pages.render("organise_new.html", context, 422)
    return RedirectResponse("/events/organise", status_code=303)


async def _check_in_page(pages: Pages, rsvps: Rsvps, check_in: CheckIn, meeting: Any, *, search: str = "",
                         values: dict[str, Any] | None = None, errors: dict[str, str] | None = None, notice: str = "",
                         status: int = 200) -> HTMLResponse:
    listed = await check_in.desk(meeting.id, search=search)
    return pages.render(
        "organise_check_in.html",
        {"meeting": meeting, "rsvps": listed, "counts": await rsvps.counts(meeting.id), "search": search,
         "values": values or {}, "errors": errors or {}, "notice": notice},
        status,
    )


@router.get("/{meeting_id}/check-in", response_class=HTMLResponse)
async def check_in_desk(pages: PagesDep, rsvps: RsvpsDep, check_in: CheckInDep, meeting: OwnMeeting,
                        search: str = "", notice: str = "") -> HTMLResponse:
    return await _check_in_page(pages, rsvps, check_in, meeting, search=search, notice=notice)


@router.post("/{meeting_id}/check-in/{rsvp_id}")
async def mark_attended(pages: PagesDep, rsvps: RsvpsDep, check_in: CheckInDep, meeting: OwnMeeting, rsvp_id: str,
                        organiser: CurrentOrganiser, search: Annotated[str, Form()] = "") -> Response:
    meeting_id = meeting.id
    try:
        await check_in.record_attendance(meeting_id, rsvp_id, "organiser", organiser)
    except RsvpNotFound:
        raise HTTPException(404, "There is no such RSVP for this meeting") from None
    except CheckInRefused as exc:
        return await _check_in_page(pages, rsvps, check_in, meeting, errors={"search": str(exc)}, status=409)
    return RedirectResponse(f"/events/organise/{meeting_id}/check-in?notice=checked-in&search={search}",
                            status_code=303)


@router.post("/{meeting_id}/walk-ins", response_class=HTMLResponse)
async def walk_in(
    pages: PagesDep,
    rsvps: RsvpsDep,
    check_in: CheckInDep,
    meeting: OwnMeeting,
    organiser: CurrentOrganiser,
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    join_network: Annotated[str, Form()] = "",
    postcode: Annotated[str, Form()] = "",
) -> Response:
    values = {"name": name, "email": email, "join_network": bool(join_network), "postcode": postcode}
    try:
        form = validate_rsvp(name=name, email=email, join_network=bool(join_network), postcode=postcode)
        await check_in.walk_in(meeting.id, form, organiser)
    except InvalidInput as exc:
        return await _check_in_page(pages, rsvps, check_in, meeting, values=values, errors=exc.errors, status=422)
    except CheckInRefused as exc:
        return await _check_in_page(pages, rsvps, check_in, meeting, values=values, errors={"name": str(exc)},
                                    status=409)
    return RedirectResponse(f"/events/organise/{meeting.id}/check-in?notice=walk-in", status_code=303)


@router.post("/{meeting_id}/cancel")
async def cancel_meeting(meetings: MeetingsDep, meeting: OwnMeeting, organiser: CurrentOrganiser,
                         reason: Annotated[str, Form()] = "") -> Response:
    await meetings.cancel(meeting.id, reason, organiser)
    return RedirectResponse("/events/organise", status_code=303)


@router.get("/{meeting_id}/no-shows", response_class=HTMLResponse)
async def no_shows(pages: PagesDep, rsvps: RsvpsDep, meeting: OwnMeeting) -> HTMLResponse:
    absent = [r for r in await rsvps.find(meeting.id, statuses=("going",)) if r.attended_at is None]
    return pages.render("organise_no_shows.html",
                        {"meeting": meeting, "rsvps": absent, "counts": await rsvps.counts(meeting.id)})
