"""The organisers' JSON API under /meetings: schedule, change, cancel; RSVPs, check-in and walk-ins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.events import views
from services.events.domain import CheckInRefused, RsvpRefused, validate_rsvp
from services.events.service import MeetingNotFound, NotYourMeeting, RsvpNotFound
from shared.auth import OrganiserScope, require_organiser
from shared.errors import InvalidInput

router = APIRouter(prefix="/meetings", tags=["meetings (organisers)"])
Organiser = Annotated[OrganiserScope, Depends(require_organiser)]


class SpeakerIn(BaseModel):
    name: str
    title: str | None = None
    session_title: str | None = None


class MeetingChanges(BaseModel):
    """Fields of a meeting to change; absent ones stay as they are. Times without an offset are in `timezone`."""

    title: str | None = None
    description: str | None = None
    kind: str | None = None
    starts_at: datetime | str | None = None
    ends_at: datetime | str | None = None
    timezone: str | None = None
    venue: str | None = None
    online_url: str | None = None
    capacity: int | str | None = Field(default=None, description="places; empty or null for no limit")
    rsvp_deadline: datetime | str | None = None
    campaign_id: str | None = None
    speakers: list[SpeakerIn] | None = None
    reminder_offsets: list[int] | None = Field(default=None, description="minutes before the start")


class MeetingRequest(MeetingChanges):
    """A meeting to schedule, for the whole network or one region, group or sub-team."""

    title: str | None = None
    scope_type: str = "network"
    scope_id: str | None = None
    parent_meeting_id: str | None = Field(default=None, description="the conference this is a session of")


class CancelRequest(BaseModel):
    reason: str | None = None


class PersonRequest(BaseModel):
    """Someone an organiser adds: a member by id, or anyone by name and email."""

    name: str = ""
    email: str = ""
    member_id: str | None = None
    guests: int = 0
    join_network: bool = False
    postcode: str = ""


def problem(status: int, message: str, errors: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status)


def invalid(exc: InvalidInput) -> JSONResponse:
    return problem(422, "Some fields need changing: " + "; ".join(exc.errors.values()), exc.errors)


def _raw(body: BaseModel) -> dict[str, Any]:
    raw = body.model_dump(exclude_unset=True)
    if "speakers" in raw and raw["speakers"] is None:
        raw["speakers"] = []
    return raw


async def _meeting_out(request: Request, meeting_id: str, status: int = 200) -> JSONResponse:
    svc = views.service(request)
    row = await svc.get_meeting(meeting_id)
    counts = await svc.count_rsvps(meeting_id)
    base = request.app.state.runtime.settings.public_base_url.rstrip("/")
    return JSONResponse(views.meeting_json(row, counts, organiser=True, base_url=base), status_code=status)


def _not_found(what: str = "meeting") -> HTTPException:
    return HTTPException(404, f"There is no {what} with that id")


@router.post("", status_code=201)
async def schedule_meeting(request: Request, body: MeetingRequest, organiser: Organiser) -> JSONResponse:
    try:
        meeting_id = await views.service(request).schedule(_raw(body), organiser)
    except InvalidInput as exc:
        return invalid(exc)
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    return await _meeting_out(request, meeting_id, 201)


@router.get("")
async def list_meetings(
    request: Request,
    organiser: Organiser,
    include_past: bool = False,
    include_cancelled: bool = True,
) -> dict[str, Any]:
    svc = views.service(request)
    rows = await svc.list_meetings(upcoming_only=not include_past, include_cancelled=include_cancelled, limit=1000)
    base = request.app.state.runtime.settings.public_base_url.rstrip("/")
    mine = [r for r in rows if organiser.covers(r.scope_type, r.scope_id, r.region_id)]
    return {"meetings": [views.meeting_json(r, organiser=True, base_url=base) for r in mine]}


@router.get("/{meeting_id}")
async def get_meeting(request: Request, meeting_id: str, organiser: Organiser) -> JSONResponse:
    try:
        return await _meeting_out(request, meeting_id)
    except MeetingNotFound:
        raise _not_found() from None


@router.patch("/{meeting_id}")
async def update_meeting(request: Request, meeting_id: str, body: MeetingChanges, organiser: Organiser) -> JSONResponse:
    try:
        await views.service(request).update(meeting_id, _raw(body), organiser)
    except MeetingNotFound:
        raise _not_found() from None
    except InvalidInput as exc:
        return invalid(exc)
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    return await _meeting_out(request, meeting_id)


@router.post("/{meeting_id}/cancel")
async def cancel_meeting(request: Request, meeting_id: str, body: CancelRequest, organiser: Organiser) -> JSONResponse:
    try:
        await views.service(request).cancel(meeting_id, body.reason, organiser)
    except MeetingNotFound:
        raise _not_found() from None
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    return await _meeting_out(request, meeting_id)


async def _own_meeting(request: Request, meeting_id: str, organiser: OrganiserScope) -> Any:
    try:
        row = await views.service(request).get_meeting(meeting_id)
    except MeetingNotFound:
        raise _not_found() from None
    if not organiser.covers(row.scope_type, row.scope_id, row.region_id):
        raise HTTPException(403, "This meeting is outside the part of the network you organise")
    return row


@router.get("/{meeting_id}/rsvps")
async def list_rsvps(
    request: Request,
    meeting_id: str,
    organiser: Organiser,
    search: str = "",
    status: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    await _own_meeting(request, meeting_id, organiser)
    svc = views.service(request)
    rows = await svc.list_rsvps(meeting_id, search=search, statuses=status or ())
    return {"rsvps": [views.rsvp_json(r) for r in rows], "counts": await svc.count_rsvps(meeting_id)}


@router.post("/{meeting_id}/rsvps", status_code=201)
async def add_rsvp(request: Request, meeting_id: str, body: PersonRequest, organiser: Organiser) -> JSONResponse:
    await _own_meeting(request, meeting_id, organiser)
    try:
        form = validate_rsvp(name=body.name, email=body.email, member_id=body.member_id, guests=body.guests,
                             join_network=body.join_network, postcode=body.postcode)
        outcome = await views.service(request).rsvp(meeting_id, form, source="api")
    except InvalidInput as exc:
        return invalid(exc)
    except RsvpRefused as exc:
        return problem(409, str(exc))
    rsvp = await views.service(request).get_rsvp(outcome.rsvp_id)
    return JSONResponse(views.rsvp_json(rsvp), status_code=200 if outcome.already else 201)


@router.post("/{meeting_id}/rsvps/{rsvp_id}/cancel")
async def cancel_rsvp(request: Request, meeting_id: str, rsvp_id: str, organiser: Organiser) -> dict[str, Any]:
    await _own_meeting(request, meeting_id, organiser)
    svc = views.service(request)
    try:
        if (await svc.get_rsvp(rsvp_id)).meeting_id != meeting_id:
            raise RsvpNotFound(rsvp_id)
        promoted = await svc.cancel_rsvp(rsvp_id)
    except RsvpNotFound:
        raise _not_found("RSVP for this meeting") from None
    return {"cancelled": rsvp_id, "promoted": promoted}


@router.post("/{meeting_id}/rsvps/{rsvp_id}/attendance")
async def mark_attended(request: Request, meeting_id: str, rsvp_id: str, organiser: Organiser) -> JSONResponse:
    try:
        await views.service(request).record_attendance(meeting_id, rsvp_id, "organiser", organiser)
    except MeetingNotFound:
        raise _not_found() from None
    except RsvpNotFound:
        raise _not_found("RSVP for this meeting") from None
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    except CheckInRefused as exc:
        return problem(409, str(exc))
    return JSONResponse(views.rsvp_json(await views.service(request).get_rsvp(rsvp_id)))


@router.post("/{meeting_id}/walk-ins", status_code=201)
async def add_walk_in(request: Request, meeting_id: str, body: PersonRequest, organiser: Organiser) -> JSONResponse:
    try:
        form = validate_rsvp(name=body.name, email=body.email, member_id=body.member_id, guests=body.guests,
                             join_network=body.join_network, postcode=body.postcode)
        rsvp_id = await views.service(request).walk_in(meeting_id, form, organiser)
    except InvalidInput as exc:
        return invalid(exc)
    except MeetingNotFound:
        raise _not_found() from None
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    except CheckInRefused as exc:
        return problem(409, str(exc))
    return JSONResponse(views.rsvp_json(await views.service(request).get_rsvp(rsvp_id)), status_code=201)
