"""OSDI as Action Network serves it: events, their attendances and the record attendance helper (HAL+JSON).

Authentication is the `OSDI-API-Token` header; collections page with `page` and `per_page` (at most 25).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.events.deps import ApiCaller, BaseUrl, CheckInDep, MeetingsDep, RsvpsDep
from services.events.domain import MeetingNotFound, RsvpRefused, validate_rsvp
from shared import osdi
from shared.errors import InvalidInput
from shared.osdi import MAX_PER_PAGE, Page, PerPage, api_url, collection, hal, hal_error, without_paging

router = APIRouter(prefix=osdi.PREFIX, tags=["OSDI"])


def _event(request: Request, base: str, m: Any, counts: dict[str, int]) -> dict[str, Any]:
    api = api_url(request)
    location: dict[str, Any] = {"venue": m.venue} if m.venue else {}
    return {
        "identifiers": [f"groundswell:{m.id}"],
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
        },
    }


def _attendance(request: Request, r: Any) -> dict[str, Any]:
    api = api_url(request)
    att: dict[str, Any] = {
        "identifiers": [f"groundswell:{r.id}"],
        "created_date": r.created_at.isoformat(),
        "modified_date": r.updated_at.isoformat(),
        "status": {"going": "accepted", "waitlisted": "tentative", "cancelled": "declined"}[r.status],
        "attended": r.attended_at is not None,
        "groundswell:waitlist_position": r.waitlist_position,
        "_links": {
            "self": {"href": f"{api}/events/{r.meeting_id}/attendances/{r.id}"},
            "osdi:event": {"href": f"{api}/events/{r.meeting_id}"},
        },
    }
    if r.member_id:
        att["_links"]["osdi:person"] = {"href": f"{api}/people/{r.member_id}"}
    return att


@router.get("/events")
async def list_events(
    request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, base: BaseUrl, caller: ApiCaller, page: Page = 1,
    per_page: PerPage = MAX_PER_PAGE,
) -> JSONResponse:
    rows = await meetings.find(upcoming_only=False, include_cancelled=True, limit=per_page,
                               offset=(page - 1) * per_page, within=caller)
    total = await meetings.count(within=caller)
    items = [_event(request, base, m, await rsvps.counts(m.id)) for m in rows]
    return hal(collection(without_paging(request), "events", items, total, page, per_page))


@router.get("/events/{meeting_id}")
async def get_event(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, base: BaseUrl, meeting_id: str,
                    caller: ApiCaller) -> JSONResponse:
    try:
        m = await meetings.get(meeting_id, within=caller)
    except MeetingNotFound:
        return hal_error(404, "There is no event with that id")
    return hal(_event(request, base, m, await rsvps.counts(m.id)))


@router.get("/events/{meeting_id}/attendances")
async def list_attendances(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, meeting_id: str,
                           caller: ApiCaller, page: Page = 1, per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    try:
        await meetings.get(meeting_id, within=caller)
    except MeetingNotFound:
        return hal_error(404, "There is no event with that id")
    counts = await rsvps.counts(meeting_id)
    rows = await rsvps.find(meeting_id, limit=per_page, offset=(page - 1) * per_page)
    items = [_attendance(request, r) for r in rows]
    return hal(collection(without_paging(request), "attendances", items, counts["total"], page, per_page))


@router.get("/events/{meeting_id}/attendances/{rsvp_id}")
async def get_attendance(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, meeting_id: str, rsvp_id: str,
                         caller: ApiCaller) -> JSONResponse:
    try:
        await meetings.get(meeting_id, within=caller)
    except MeetingNotFound:
        return hal_error(404, "There is no attendance with that id for this event")
    rows = [r for r in await rsvps.find(meeting_id) if r.id == rsvp_id]
    if not rows:
        return hal_error(404, "There is no attendance with that id for this event")
    return hal(_attendance(request, rows[0]))


class EmailAddress(BaseModel):
    address: str = ""
    primary: bool | None = None


class PostalAddress(BaseModel):
    postal_code: str = ""


class OsdiPerson(BaseModel):
    given_name: str = ""
    family_name: str = ""
    email_addresses: list[EmailAddress] = []
    postal_addresses: list[PostalAddress] = []


class AttendanceHelperRequest(BaseModel):
    """Action Network's record attendance helper: a person (matched or added) RSVPs to the event."""

    person: OsdiPerson
    attended: bool = False
    add_tags: list[str] = []


@router.post("/events/{meeting_id}/attendances")
async def record_attendance_helper(request: Request, meetings: MeetingsDep, rsvps: RsvpsDep, check_in: CheckInDep,
                                   meeting_id: str, body: AttendanceHelperRequest, caller: ApiCaller) -> JSONResponse:
    try:
        await meetings.get(meeting_id, within=caller)
    except MeetingNotFound:
        return hal_error(404, "There is no event with that id")
    p = body.person
    email = next((e.address for e in p.email_addresses if e.primary), None) or (
        p.email_addresses[0].address if p.email_addresses else "")
    postcode = p.postal_addresses[0].postal_code if p.postal_addresses else ""
    try:
        form = validate_rsvp(name=f"{p.given_name} {p.family_name}", email=email, join_network=bool(postcode),
                             postcode=postcode)
        if body.attended:
            rsvp_id = await check_in.walk_in(meeting_id, form, None, source="osdi")
            status = 201
        else:
            outcome = await rsvps.rsvp(meeting_id, form, source="osdi")
            rsvp_id, status = outcome.rsvp_id, 200 if outcome.already else 201
    except InvalidInput as exc:
        return hal_error(400, "; ".join(exc.errors.values()))
    except RsvpRefused as exc:
        return hal_error(409, str(exc))
    rsvp = await rsvps.get(rsvp_id)
    return hal(_attendance(request, rsvp), status)
