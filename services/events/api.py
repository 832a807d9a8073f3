"""The organisers' JSON API under /meetings: schedule, change, cancel; RSVPs, check-in and walk-ins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.events import views
from services.events.deps import BaseUrl, CheckInDep, CurrentOrganiser, MeetingsDep, RsvpsDep
from services.events.domain import (
    CheckInRefused,
    MeetingNotFound,
    NotYourMeeting,
    RsvpNotFound,
    RsvpRefused,
    validate_rsvp,
)
from shared.auth import OrganiserScope
from shared.errors import InvalidInput

router = APIRouter(prefix="/meetings", tags=["meetings (organisers)"])


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


class MeetingOut:
    """A meeting as the organiser API returns it, with its counts (a route's dependency)."""

    def __init__(self, meetings: MeetingsDep, rsvps: RsvpsDep, base_url: BaseUrl) -> None:
        self.meetings, self.rsvps, self.base_url = meetings, rsvps, base_url

    async def __call__(self, meeting_id: str, status: int = 200) -> JSONResponse:
        row = await self.meetings.get(meeting_id)
        counts = await self.rsvps.counts(meeting_id)
        return JSONResponse(views.meeting_json(row, counts, organiser=True, base_url=self.base_url),
                            status_code=status)


MeetingOutDep = Annotated[MeetingOut, Depends()]


def _not_found(what: str = "meeting") -> HTTPException:
    return HTTPException(404, f"There is no {what} with that id")


@router.post("", status_code=201)
async def schedule_meeting(meetings: MeetingsDep, out: MeetingOutDep, body: MeetingRequest,
                           organiser: CurrentOrganiser) -> JSONResponse:
    try:
        meeting_id = await meetings.schedule(_raw(body), organiser)
    except InvalidInput as exc:
        return invalid(exc)
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    return await out(meeting_id, 201)


@router.get("")
async def list_meetings(
    meetings: MeetingsDep,
    base: BaseUrl,
    organiser: CurrentOrganiser,
    include_past: bool = False,
    include_cancelled: bool = True,
) -> dict[str, Any]:
    rows = await meetings.find(upcoming_only=not include_past, include_cancelled=include_cancelled, limit=1000,
                               within=organiser)
    return {"meetings": [views.meeting_json(r, organiser=True, base_url=base) for r in rows]}


@router.patch("/{meeting_id}")
async def update_meeting(meetings: MeetingsDep, out: MeetingOutDep, meeting_id: str, body: MeetingChanges,
                         organiser: CurrentOrganiser) -> JSONResponse:
    try:
        await meetings.update(meeting_id, _raw(body), organiser)
    except MeetingNotFound:
        raise _not_found() from None
    except InvalidInput as exc:
        return invalid(exc)
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    return await out(meeting_id)


@router.post("/{meeting_id}/cancel")
async def cancel_meeting(meetings: MeetingsDep, out: MeetingOutDep, meeting_id: str, body: CancelRequest,
                         organiser: CurrentOrganiser) -> JSONResponse:
    try:
        await meetings.cancel(meeting_id, body.reason, organiser)
    except MeetingNotFound:
        raise _not_found() from None
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    return await out(meeting_id)


async def _own_meeting(meetings: MeetingsDep, meeting_id: str, organiser: CurrentOrganiser) -> Any:
    """The meeting of the path, if the organiser's scope covers it (404, 403 otherwise)."""
    try:
        return await meetings.own(meeting_id, organiser)
    except MeetingNotFound:
        raise _not_found() from None
    except NotYourMeeting as exc:
        raise HTTPException(403, str(exc)) from None


OwnMeeting = Annotated[Any, Depends(_own_meeting)]


@router.get("/{meeting_id}")
async def get_meeting(out: MeetingOutDep, meeting: OwnMeeting) -> JSONResponse:
    """The meeting with its joining link and check-in code: for the organisers whose scope covers it."""
    return await out(meeting.id)


@router.get("/{meeting_id}/rsvps")
async def list_rsvps(
    rsvps: RsvpsDep,
    meeting: OwnMeeting,
    search: str = "",
    status: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    rows = await rsvps.find(meeting.id, search=search, statuses=status or ())
    return {"rsvps": [views.rsvp_json(r) for r in rows], "counts": await rsvps.counts(meeting.id)}


async def _check_member(meetings: MeetingsDep, body: PersonRequest, organiser: OrganiserScope) -> None:
    """A member added by id is one the organiser looks after (404 otherwise: their id reveals nothing)."""
    if body.member_id and not await meetings.covers_member(body.member_id, organiser):
        raise _not_found("member in the part of the network you organise")


@router.post("/{meeting_id}/rsvps", status_code=201)
async def add_rsvp(rsvps: RsvpsDep, meetings: MeetingsDep, meeting: OwnMeeting, body: PersonRequest,
                   organiser: CurrentOrganiser) -> JSONResponse:
    await _check_member(meetings, body, organiser)
    try:
        form = validate_rsvp(name=body.name, email=body.email, member_id=body.member_id, guests=body.guests,
                             join_network=body.join_network, postcode=body.postcode)
        outcome = await rsvps.rsvp(meeting.id, form, source="api")
    except InvalidInput as exc:
        return invalid(exc)
    except RsvpRefused as exc:
        return problem(409, str(exc))
    rsvp = await rsvps.get(outcome.rsvp_id)
    return JSONResponse(views.rsvp_json(rsvp), status_code=200 if outcome.already else 201)


@router.post("/{meeting_id}/rsvps/{rsvp_id}/cancel")
async def cancel_rsvp(rsvps: RsvpsDep, meeting: OwnMeeting, rsvp_id: str) -> dict[str, Any]:
    try:
        if (await rsvps.get(rsvp_id)).meeting_id != meeting.id:
            raise RsvpNotFound(rsvp_id)
        promoted = await rsvps.cancel(rsvp_id)
    except RsvpNotFound:
        raise _not_found("RSVP for this meeting") from None
    return {"cancelled": rsvp_id, "promoted": promoted}


@router.post("/{meeting_id}/rsvps/{rsvp_id}/attendance")
async def mark_attended(check_in: CheckInDep, rsvps: RsvpsDep, meeting_id: str, rsvp_id: str,
                        organiser: CurrentOrganiser) -> JSONResponse:
    try:
        await check_in.record_attendance(meeting_id, rsvp_id, "organiser", organiser)
    except MeetingNotFound:
        raise _not_found() from None
    except RsvpNotFound:
        raise _not_found("RSVP for this meeting") from None
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    except CheckInRefused as exc:
        return problem(409, str(exc))
    return JSONResponse(views.rsvp_json(await rsvps.get(rsvp_id)))


@router.post("/{meeting_id}/walk-ins", status_code=201)
async def add_walk_in(check_in: CheckInDep, rsvps: RsvpsDep, meetings: MeetingsDep, meeting_id: str,
                      body: PersonRequest, organiser: CurrentOrganiser) -> JSONResponse:
    await _check_member(meetings, body, organiser)
    try:
        form = validate_rsvp(name=body.name, email=body.email, member_id=body.member_id, guests=body.guests,
                             join_network=body.join_network, postcode=body.postcode)
        rsvp_id = await check_in.walk_in(meeting_id, form, organiser)
    except InvalidInput as exc:
        return invalid(exc)
    except MeetingNotFound:
        raise _not_found() from None
    except NotYourMeeting as exc:
        return problem(403, str(exc))
    except CheckInRefused as exc:
        return problem(409, str(exc))
    return JSONResponse(views.rsvp_json(await rsvps.get(rsvp_id)), status_code=201)
