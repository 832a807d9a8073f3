"""Organisers' pages under /events/organise: their meetings, scheduling form, check-in desk (search, mark, walk-in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from services.events.checkin import CheckIn
from services.events.deps import CheckInDep, CurrentOrganiser, MeetingsDep, PagesDep, RsvpsDep
from services.events.domain import (
    KINDS,
    CheckInRefused,
    MeetingNotFound,
    NotYourMeeting,
    RsvpNotFound,
    validate_rsvp,
)
from services.events.views import Pages
from shared.auth import OrganiserScope
from shared.errors import InvalidInput
from shared.scope_picker import UNKNOWN_CHOICE, choice_value, read_choice, scope_choices
from shared.web import MAX_PAGE, local_time

router = APIRouter(prefix="/events/organise", tags=["organiser pages"])


async def _own(meetings: MeetingsDep, meeting_id: str, organiser: CurrentOrganiser) -> Any:
    """The meeting of the path, if the signed-in organiser's scope covers it (404, 403 otherwise)."""
    try:
        return await meetings.own(meeting_id, organiser)
    except MeetingNotFound:
        raise HTTPException(404, "There is no meeting with that id") from None
    except NotYourMeeting as exc:
        raise HTTPException(403, str(exc)) from None


OwnMeeting = Annotated[Any, Depends(_own)]


@router.get("", response_class=HTMLResponse)
async def my_meetings(pages: PagesDep, meetings: MeetingsDep, organiser: CurrentOrganiser, page: str = "1",
                      q: str = "") -> HTMLResponse:
    """The organiser's meetings, 25 a page: still to come first, then those over; `q` finds them by title."""
    page_no = min(max(int(page) if page.isdigit() else 1, 1), MAX_PAGE)
    q = q.strip()[:200]
    listed = await meetings.organiser_page(organiser, page_no, q)
    query = {"q": q} if q else {}
    return pages.render("organise_list.html", {
        "listed": listed, "organiser": organiser, "counts": listed.counts, "q": q, "query": query,
        "page_no": page_no, "for_whom": listed.for_whom,
    })


@router.get("/home.json")
async def home_part(meetings: MeetingsDep, organiser: CurrentOrganiser) -> dict[str, Any]:
    """What the organisers' home (membership's /admin) shows from events: the organiser's meetings in the next seven
    days, with how many are going and waiting."""
    today = datetime.now(UTC).date()
    rows = await meetings.find(on_or_after=today, before=today + timedelta(days=8), limit=200)
    mine = [r for r in rows if organiser.covers(r.scope_type, r.scope_id, r.region_id)]
    counts = await meetings.rsvp_counts([m.id for m in mine])
    return {"meetings": [
        {"title": m.title, "when": local_time(m.starts_at, m.timezone), "going": counts[m.id]["going"],
         "waitlisted": counts[m.id]["waitlisted"], "capacity": m.capacity,
         "check_in": f"/events/organise/{m.id}/check-in"}
        for m in mine
    ]}


async def _form_context(meetings: Any, values: dict[str, Any], errors: dict[str, str],
                        organiser: OrganiserScope) -> dict[str, Any]:
    """The meeting form's context: who it may be for is chosen by name among the units the organiser looks after."""
    groups = scope_choices(await meetings.units(), organiser)
    return {"values": values, "errors": errors, "kinds": KINDS, "organiser": organiser, "scope_groups": groups}


@router.get("/new", response_class=HTMLResponse)
async def new_meeting_form(pages: PagesDep, meetings: MeetingsDep, organiser: CurrentOrganiser) -> HTMLResponse:
    values = {"kind": "in_person", "timezone": "Europe/London", "reminders": "1440, 60",
              "scope": choice_value(organiser.scope_type, organiser.scope_id)}
    return pages.render("organise_new.html", await _form_context(meetings, values, {}, organiser))


FORM_FIELDS = ("title", "description", "kind", "scope_type", "scope_id", "starts_at", "ends_at", "timezone", "venue",
               "online_url", "capacity", "rsvp_deadline", "reminders")


async def _read_meeting_form(request: Request, meetings: Any, organiser: OrganiserScope, *, current: Any = None
                             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """What the organiser typed (to show again), the same as the service layer takes it, and what is wrong with who
    it is for: that comes from the picker (`scope`), one of the choices offered, never anything else. Changing a
    `current` meeting, a form without the picker leaves who it is for as it is."""
    form = await request.form()
    if current is not None and "scope" not in form:
        form = FormData([*form.multi_items(), ("scope", choice_value(current.scope_type, current.scope_id))])
    values: dict[str, Any] = {k: str(form.get(k, "")) for k in FORM_FIELDS}
    raw: dict[str, Any] = {k: v for k, v in values.items() if k not in ("reminders", "scope_type", "scope_id")}
    try:
        raw["reminder_offsets"] = [int(x) for x in values["reminders"].replace(",", " ").split()]
    except ValueError:
        raw["reminder_offsets"] = ["x"]
    values["scope"] = str(form.get("scope", ""))
    chosen = read_choice(values["scope"], scope_choices(await meetings.units(), organiser))
    if chosen is None:
        return values, raw, {"scope": UNKNOWN_CHOICE}
    raw["scope_type"], raw["scope_id"] = chosen
    return values, raw, {}


def _form_errors(exc: InvalidInput) -> dict[str, str]:
    errors = dict(exc.errors)
    if "reminder_offsets" in errors:
        errors["reminders"] = errors.pop("reminder_offsets")
    return errors


@router.post("/new", response_class=HTMLResponse)
async def new_meeting(request: Request, pages: PagesDep, meetings: MeetingsDep,
                      organiser: CurrentOrganiser) -> Response:
    values, raw, errors = await _read_meeting_form(request, meetings, organiser)
    try:
        if errors:
            raise InvalidInput(errors)
        meeting_id = await meetings.schedule(raw, organiser)
    except InvalidInput as exc:
        context = await _form_context(meetings, values, _form_errors(exc), organiser)
        return pages.render("organise_new.html", context, 422)
    except NotYourMeeting as exc:
        return pages.render("organise_new.html", await _form_context(meetings, values, {"scope": str(exc)}, organiser),
                            403)
    return RedirectResponse(f"/events/organise/{meeting_id}/check-in", status_code=303)


@router.get("/{meeting_id}/edit", response_class=HTMLResponse)
async def edit_meeting_form(pages: PagesDep, meetings: MeetingsDep, m: OwnMeeting,
                            organiser: CurrentOrganiser) -> HTMLResponse:
    values = {
        "title": m.title, "description": m.description, "kind": m.kind,
        "scope": choice_value(m.scope_type, m.scope_id), "timezone": m.timezone, "venue": m.venue or "",
        "online_url": m.online_url or "", "capacity": m.capacity if m.capacity is not None else "",
        "starts_at": local_time(m.starts_at, m.timezone, "input"),
        "ends_at": local_time(m.ends_at, m.timezone, "input"),
        "rsvp_deadline": local_time(m.rsvp_deadline, m.timezone, "input") if m.rsvp_deadline else "",
        "reminders": ", ".join(str(o) for o in m.reminder_offsets),
    }
    context = await _form_context(meetings, values, {}, organiser)
    return pages.render("organise_new.html", {**context, "meeting": m})


@router.post("/{meeting_id}/edit", response_class=HTMLResponse)
async def edit_meeting(request: Request, pages: PagesDep, meetings: MeetingsDep, m: OwnMeeting,
                       organiser: CurrentOrganiser) -> Response:
    """Save a meeting's changes, who it is for too (a choice among the units the organiser looks after)."""
    values, raw, errors = await _read_meeting_form(request, meetings, organiser, current=m)
    try:
        if errors:
            raise InvalidInput(errors)
        await meetings.update(m.id, raw, organiser)
    except InvalidInput as exc:
        context = await _form_context(meetings, values, _form_errors(exc), organiser)
        return pages.render("organise_new.html", {**context, "meeting": m}, 422)
    except NotYourMeeting as exc:
        context = await _form_context(meetings, values, {"scope": str(exc)}, organiser)
        return pages.render("organise_new.html", {**context, "meeting": m}, 403)
    return RedirectResponse("/events/organise", status_code=303)


async def _check_in_page(pages: Pages, check_in: CheckIn, meeting: Any, *, search: str = "",
                         values: dict[str, Any] | None = None, errors: dict[str, str] | None = None, notice: str = "",
                         status: int = 200) -> HTMLResponse:
    listed, counts = await check_in.desk(meeting.id, search=search)
    return pages.render(
        "organise_check_in.html",
        {"meeting": meeting, "rsvps": listed, "counts": counts, "search": search,
         "values": values or {}, "errors": errors or {}, "notice": notice},
        status,
    )


@router.get("/{meeting_id}/check-in", response_class=HTMLResponse)
async def check_in_desk(pages: PagesDep, check_in: CheckInDep, meeting: OwnMeeting,
                        search: str = "", notice: str = "") -> HTMLResponse:
    return await _check_in_page(pages, check_in, meeting, search=search, notice=notice)


@router.post("/{meeting_id}/check-in/{rsvp_id}")
async def mark_attended(pages: PagesDep, check_in: CheckInDep, meeting: OwnMeeting, rsvp_id: str,
                        organiser: CurrentOrganiser, search: Annotated[str, Form()] = "") -> Response:
    meeting_id = meeting.id
    try:
        await check_in.record_attendance(meeting_id, rsvp_id, "organiser", organiser)
    except RsvpNotFound:
        raise HTTPException(404, "There is no such RSVP for this meeting") from None
    except CheckInRefused as exc:
        return await _check_in_page(pages, check_in, meeting, errors={"search": str(exc)}, status=409)
    return RedirectResponse(f"/events/organise/{meeting_id}/check-in?notice=checked-in&search={search}",
                            status_code=303)


@router.post("/{meeting_id}/walk-ins", response_class=HTMLResponse)
async def walk_in(
    pages: PagesDep,
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
        return await _check_in_page(pages, check_in, meeting, values=values, errors=exc.errors, status=422)
    except CheckInRefused as exc:
        return await _check_in_page(pages, check_in, meeting, values=values, errors={"name": str(exc)},
                                    status=409)
    return RedirectResponse(f"/events/organise/{meeting.id}/check-in?notice=walk-in", status_code=303)


@router.get("/{meeting_id}/cancel", response_class=HTMLResponse)
async def confirm_cancel(pages: PagesDep, meetings: MeetingsDep, rsvps: RsvpsDep, meeting: OwnMeeting) -> HTMLResponse:
    """Cancelling tells everyone with a place: the organiser confirms it on a page of its own first."""
    return pages.render("organise_cancel.html", {"meeting": meeting, "counts": await rsvps.counts(meeting.id)})


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
