"""OSDI as Action Network serves it: events (listed, created and changed), their attendances, a person's
attendances and the record attendance helper (HAL+JSON).

Authentication is the `OSDI-API-Token` header; collections page with `page` and `per_page` (at most 25). Events
are public, so every key reads them; a key creates and changes only events its scope covers, and reads or records
attendances only at those (anything else is a 403). docs/api.md is the integrator's guide.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.events.deps import ApiCaller, BaseUrl, CheckInDep, MeetingsDep, RsvpsDep
from services.events.domain import (
    DEFAULT_TIMEZONE,
    MAX_DESCRIPTION,
    MAX_TITLE,
    MAX_URL,
    MAX_VENUE,
    MeetingNotFound,
    NotYourMeeting,
    RsvpNotFound,
    RsvpRefused,
    validate_rsvp,
    with_default_end,
)
from shared import osdi
from shared.auth import OrganiserScope
from shared.errors import InvalidInput
from shared.osdi import (
    CURIES,
    MAX_PER_PAGE,
    OsdiPerson,
    Page,
    PerPage,
    PersonLinks,
    api_url,
    bare_id,
    collection,
    hal,
    hal_error,
    identifiers,
    person_id_of,
    read_body,
    without_paging,
)

router = osdi.router()
# An event created without an end (parsons' create_event sends none) lasts this long.
DEFAULT_LENGTH = timedelta(hours=2)
OUT_OF_SCOPE = "This event is outside the part of the network this API key was made for"


def _event(request: Request, base: str, m: Any, counts: dict[str, int]) -> dict[str, Any]:
    api = api_url(request)
    location: dict[str, Any] = {"venue": m.venue} if m.venue else {}
    return {
        "identifiers": identifiers(m.id),
        "origin_system": "Groundswell",
        "title": m.title,
        "name": m.title,
        "description": m.description,
        "browser_url": f"{base}/events/{m.id}",
        "start_date": m.starts_at.isoformat(),
        "end_date": m.ends_at.isoformat(),
        "time_zone": m.timezone,
        "status": "cancelled" if m.status == "cancelled" else "confirmed",
        "type": "open",
        "capacity": m.capacity,
        "location": location,
        "created_date": m.created_at.isoformat(),
        "modified_date": m.updated_at.isoformat(),
        "total_accepted": counts.get("going", 0),
        "groundswell:kind": m.kind,
        "groundswell:scope": {"type": m.scope_type, "id": m.scope_id},
        "_links": {
            "self": {"href": f"{api}/events/{m.id}"},
            "osdi:attendances": {"href": f"{api}/events/{m.id}/attendances"},
            "osdi:record_attendance_helper": {"href": f"{api}/events/{m.id}/attendances"},
            "curies": CURIES,
        },
    }


def _attendance(request: Request, r: Any) -> dict[str, Any]:
    api = api_url(request)
    att: dict[str, Any] = {
        "identifiers": identifiers(r.id),
        "created_date": r.created_at.isoformat(),
        "modified_date": r.updated_at.isoformat(),
        "status": {"going": "accepted", "waitlisted": "tentative", "cancelled": "declined"}[r.status],
        "attended": r.attended_at is not None,
        "groundswell:waitlist_position": r.waitlist_position,
        "_links": {
            "self": {"href": f"{api}/events/{r.meeting_id}/attendances/{r.id}"},
            "osdi:event": {"href": f"{api}/events/{r.meeting_id}"},
            "curies": CURIES,
        },
    }
    if r.member_id:
        att["_links"]["osdi:person"] = {"href": f"{api}/people/{r.member_id}"}
    return att


async def _meeting(meetings: MeetingsDep, meeting_id: str, caller: OrganiserScope | None = None) -> Any:
    """The event of the path; 404 when there is none or, with `caller`, when the key's scope does not cover it (a
    key learns nothing of events outside its scope, not even that they exist)."""
    try:
        return await meetings.get(bare_id(meeting_id), within=caller)
    except MeetingNotFound:
        osdi.refuse(404, "There is no event with that id")


# -- events ------------------------------------------------------------------------------------------------------


@router.get("/events", responses=osdi.page_of("events"))
async def list_events(
    request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, base: BaseUrl, caller: ApiCaller, page: Page = 1,
    per_page: PerPage = MAX_PER_PAGE,
) -> JSONResponse:
    rows = await meetings.find(upcoming_only=False, include_cancelled=True, limit=per_page,
                               offset=(page - 1) * per_page, within=caller)
    total = await meetings.count(within=caller)
    items = [_event(request, base, m, await rsvps.counts(m.id)) for m in rows]
    return hal(collection(without_paging(request), "events", items, total, page, per_page))


@router.get("/events/{meeting_id}", responses=osdi.one("The event"))
async def get_event(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, base: BaseUrl, meeting_id: str,
                    caller: ApiCaller) -> JSONResponse:
    m = await _meeting(meetings, meeting_id, caller)
    return hal(_event(request, base, m, await rsvps.counts(m.id)))


class OsdiLocation(BaseModel):
    model_config = ConfigDict(extra="allow")

    venue: str = Field("", max_length=MAX_VENUE)
    address_lines: list[str] = Field([], max_length=5)
    locality: str = Field("", max_length=100)
    region: str = Field("", max_length=100)
    postal_code: str = Field("", max_length=20)


class OsdiScope(BaseModel):
    type: Literal["network", "region", "group", "subteam"]
    id: str | None = Field(None, max_length=36)


class EventRequest(BaseModel):
    """An OSDI event to create, or the fields of one to change (absent ones stay as they are). Times without an
    offset are in `time_zone`; `status: cancelled` cancels the event."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    title: str | None = Field(None, max_length=MAX_TITLE)
    name: str | None = Field(None, max_length=MAX_TITLE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    start_date: str | None = Field(None, max_length=40, examples=["2027-03-14T18:30:00Z"])
    end_date: str | None = Field(None, max_length=40)
    time_zone: str | None = Field(None, max_length=60, examples=[DEFAULT_TIMEZONE])
    capacity: int | None = Field(None, ge=1, le=1_000_000)
    location: OsdiLocation | None = None
    status: Literal["confirmed", "tentative", "cancelled"] | None = None
    kind: Literal["in_person", "online", "hybrid"] | None = Field(None, alias="groundswell:kind")
    online_url: str | None = Field(None, alias="groundswell:online_url", max_length=MAX_URL)
    scope: OsdiScope | None = Field(None, alias="groundswell:scope")


def _venue(location: OsdiLocation) -> str:
    parts = [location.venue, *location.address_lines, location.locality, location.postal_code]
    return ", ".join(p.strip() for p in parts if p and p.strip())


def _meeting_fields(body: EventRequest) -> dict[str, Any]:
    """The meeting's own fields (as the organiser pages take them) for what an OSDI event carries."""
    raw: dict[str, Any] = {}
    if body.title is not None or body.name is not None:
        raw["title"] = body.title if body.title is not None else body.name
    for field, key in (("description", "description"), ("start_date", "starts_at"), ("end_date", "ends_at"),
                       ("time_zone", "timezone"), ("capacity", "capacity"), ("kind", "kind"),
                       ("online_url", "online_url")):
        if field in body.model_fields_set:
            raw[key] = getattr(body, field)
    if body.location is not None:
        raw["venue"] = _venue(body.location)
    return raw


async def _event_request(request: Request) -> EventRequest:
    """The event in the body: JSON, or a form's flat fields (parsons' update_event sends its payload so)."""
    raw = await read_body(request)
    try:
        return EventRequest.model_validate(raw)
    except ValidationError as exc:
        osdi.refuse(400, osdi.problems(exc))
        raise


EVENT_BODY = osdi.request_body(EventRequest)


@router.post("/events", status_code=201, openapi_extra=EVENT_BODY, responses={201: osdi.one("The new event")[200]})
async def create_event(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, base: BaseUrl,
                       caller: ApiCaller) -> JSONResponse:
    """A new event, for the key's own part of the network unless `groundswell:scope` names one inside it."""
    body = await _event_request(request)
    raw = with_default_end(_meeting_fields(body), DEFAULT_LENGTH)
    scope = body.scope or OsdiScope(type=caller.scope_type, id=caller.scope_id)  # type: ignore[arg-type]
    raw.update(scope_type=scope.type, scope_id=scope.id)
    try:
        meeting_id = await meetings.schedule(raw, caller)
    except InvalidInput as exc:
        return hal_error(400, "; ".join(exc.errors.values()))
    except NotYourMeeting:
        return hal_error(403, "An API key creates events only in the part of the network it was made for")
    m = await meetings.get(meeting_id)
    return hal(_event(request, base, m, await rsvps.counts(m.id)), 201)


@router.put("/events/{meeting_id}", openapi_extra=EVENT_BODY, responses=osdi.one("The event as now held"))
async def update_event(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, base: BaseUrl, meeting_id: str,
                       caller: ApiCaller) -> JSONResponse:
    """Change only the fields sent; `status: cancelled` cancels the event. Who it is for stays as scheduled."""
    m = await _meeting(meetings, meeting_id, caller)
    body = await _event_request(request)
    if body.scope is not None and (body.scope.type, body.scope.id) != (m.scope_type, m.scope_id):
        return hal_error(400, "Who an event is for stays as scheduled: schedule another event instead")
    try:
        await meetings.update(m.id, _meeting_fields(body), caller)
        if body.status == "cancelled":
            await meetings.cancel(m.id, None, caller)
    except InvalidInput as exc:
        return hal_error(400, "; ".join(exc.errors.values()))
    except NotYourMeeting:
        return hal_error(403, OUT_OF_SCOPE)
    m = await meetings.get(m.id)
    return hal(_event(request, base, m, await rsvps.counts(m.id)))


# -- attendances -------------------------------------------------------------------------------------------------


@router.get("/events/{meeting_id}/attendances", responses=osdi.page_of("attendances"))
async def list_attendances(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, meeting_id: str,
                           caller: ApiCaller, page: Page = 1, per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    m = await _meeting(meetings, meeting_id, caller)
    counts = await rsvps.counts(m.id)
    rows = await rsvps.find(m.id, limit=per_page, offset=(page - 1) * per_page)
    items = [_attendance(request, r) for r in rows]
    return hal(collection(without_paging(request), "attendances", items, counts["total"], page, per_page))


@router.get("/events/{meeting_id}/attendances/{rsvp_id}", responses=osdi.one("The attendance"))
async def get_attendance(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, meeting_id: str, rsvp_id: str,
                         caller: ApiCaller) -> JSONResponse:
    m = await _meeting(meetings, meeting_id, caller)
    try:
        r = await rsvps.get(bare_id(rsvp_id))
    except RsvpNotFound:
        r = None
    if r is None or r.meeting_id != m.id:
        return hal_error(404, "There is no attendance with that id for this event")
    return hal(_attendance(request, r))


@router.get("/people/{person_id}/attendances", responses=osdi.page_of("attendances"))
async def person_attendances(request: Request, meetings: MeetingsDep, person_id: str, caller: ApiCaller,
                             page: Page = 1, per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    """The person's attendances at events the key's scope covers (none at all for someone it may not see)."""
    rows = await meetings.rsvps_of_member(bare_id(person_id), caller)
    return osdi.page_held(request, "attendances", rows, _attendance, page, per_page)


@router.get("/people/{person_id}/attendances/{rsvp_id}", responses=osdi.one("The attendance"))
async def person_attendance(request: Request, meetings: MeetingsDep, person_id: str, rsvp_id: str,
                            caller: ApiCaller) -> JSONResponse:
    rows = await meetings.rsvps_of_member(bare_id(person_id), caller)
    return osdi.one_held(request, rows, rsvp_id, _attendance, "attendance")


class AttendanceHelperRequest(BaseModel):
    """Action Network's record attendance helper: a person (matched by email address, or added) RSVPs to the
    event; or, as Action Network's attendance POST, `_links.osdi:person` names a member already known."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    person: OsdiPerson | None = None
    links: PersonLinks | None = Field(None, alias="_links")
    attended: bool = False
    add_tags: list[str] = Field([], max_length=100)


@router.post("/events/{meeting_id}/attendances", status_code=201,
             responses={201: osdi.one("The new attendance")[200],
                        200: osdi.one("The attendance the person had already, unchanged")[200],
                        409: {"description": "The event has ended or was cancelled"}})
async def record_attendance_helper(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, check_in: CheckInDep,
                                   meeting_id: str, body: AttendanceHelperRequest, caller: ApiCaller) -> JSONResponse:
    m = await _meeting(meetings, meeting_id, caller)
    p = body.person or OsdiPerson()
    member_id = person_id_of(body.links)
    if body.person is None and member_id is None:
        return hal_error(400, 'Send {"person": {"email_addresses": [{"address": "…"}]}} or '
                              '{"_links": {"osdi:person": {"href": ".../people/<id>"}}}')
    try:
        form = validate_rsvp(name=p.name, email=p.email, member_id=member_id, name_optional=True,
                             join_network=bool(p.postcode and p.name), postcode=p.postcode)
        if body.attended:
            rsvp_id = await check_in.walk_in(m.id, form, caller, source="osdi")
            status = 201
        else:
            outcome = await rsvps.rsvp(m.id, form, source="osdi")
            rsvp_id, status = outcome.rsvp_id, 200 if outcome.already else 201
    except InvalidInput as exc:
        return hal_error(400, "; ".join(exc.errors.values()))
    except RsvpRefused as exc:
        return hal_error(409, str(exc))
    except NotYourMeeting:
        return hal_error(403, OUT_OF_SCOPE)
    return hal(_attendance(request, await rsvps.get(rsvp_id)), status)
