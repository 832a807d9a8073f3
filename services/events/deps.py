"""What the events service's routes need, as FastAPI dependencies: a route's signature says what it uses, and a
test can swap any of them with `app.dependency_overrides`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from services.events.checkin import CheckIn
from services.events.meetings import Meetings
from services.events.rsvps import Rsvps
from services.events.service import EventsService
from services.events.views import Pages
from shared.auth import OrganiserScope, require_api_token, require_organiser
from shared.config import Settings
from shared.ratelimit import Limits
from shared.web import client_ip


async def events(request: Request) -> EventsService:
    return request.app.state.events


async def settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


async def templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


EventsDep = Annotated[EventsService, Depends(events)]
SettingsDep = Annotated[Settings, Depends(settings)]
TemplatesDep = Annotated[Jinja2Templates, Depends(templates)]


async def meetings(service: EventsDep) -> Meetings:
    return service.meetings


async def rsvps(service: EventsDep) -> Rsvps:
    return service.rsvps


async def check_in(service: EventsDep) -> CheckIn:
    return service.check_in


async def limits(service: EventsDep) -> Limits:
    return service.limits


async def pages(request: Request, t: TemplatesDep) -> Pages:
    return Pages(request, t)


async def secret_key(s: SettingsDep) -> str:
    return s.secret_key


async def base_url(s: SettingsDep) -> str:
    """The address people use (PUBLIC_BASE_URL), without a trailing slash."""
    return s.public_base_url.rstrip("/")


MeetingsDep = Annotated[Meetings, Depends(meetings)]
RsvpsDep = Annotated[Rsvps, Depends(rsvps)]
CheckInDep = Annotated[CheckIn, Depends(check_in)]
LimitsDep = Annotated[Limits, Depends(limits)]
ClientIp = Annotated[str, Depends(client_ip)]
PagesDep = Annotated[Pages, Depends(pages)]
SecretKey = Annotated[str, Depends(secret_key)]
BaseUrl = Annotated[str, Depends(base_url)]
CurrentOrganiser = Annotated[OrganiserScope, Depends(require_organiser)]
ApiCaller = Annotated[OrganiserScope, Depends(require_api_token)]
