"""What the campaigns service's routes declare they need, as `Annotated[..., Depends(...)]` aliases: its use cases,
the pages' templates, the settings they read, and who is calling. The composition root (main.py) puts the objects
on the app; a test swaps any of them with `dependency_overrides`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates

from services.campaigns.actions import ActionsService
from services.campaigns.domain import CampaignNotFound
from services.campaigns.engagement import EngagementService
from services.campaigns.letters import MpLetters
from services.campaigns.service import CampaignsService
from shared.auth import OrganiserScope, require_api_token, require_organiser
from shared.config import Settings
from shared.ratelimit import Limits
from shared.uow import UnitsOfWork
from shared.web import client_ip


async def _campaigns(request: Request) -> CampaignsService:
    return request.app.state.campaigns  # type: ignore[no-any-return]


async def _actions(request: Request) -> ActionsService:
    return request.app.state.actions  # type: ignore[no-any-return]


async def _letters(request: Request) -> MpLetters:
    return request.app.state.letters  # type: ignore[no-any-return]


async def _engagement(request: Request) -> EngagementService:
    return request.app.state.engagement  # type: ignore[no-any-return]


async def _limits(request: Request) -> Limits:
    return request.app.state.limits  # type: ignore[no-any-return]


async def _uows(request: Request) -> UnitsOfWork:
    return request.app.state.runtime.uows  # type: ignore[no-any-return]


async def _settings(request: Request) -> Settings:
    return request.app.state.runtime.settings  # type: ignore[no-any-return]


async def _templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates  # type: ignore[no-any-return]


async def _secret_key(settings: Annotated[Settings, Depends(_settings)]) -> str:
    return settings.secret_key


async def _base_url(settings: Annotated[Settings, Depends(_settings)]) -> str:
    return settings.public_base_url.rstrip("/")


Campaigns = Annotated[CampaignsService, Depends(_campaigns)]
Actions = Annotated[ActionsService, Depends(_actions)]
Letters = Annotated[MpLetters, Depends(_letters)]
LimitsDep = Annotated[Limits, Depends(_limits)]
ClientIp = Annotated[str, Depends(client_ip)]
Engagement = Annotated[EngagementService, Depends(_engagement)]
UnitsOfWorkDep = Annotated[UnitsOfWork, Depends(_uows)]
Templates = Annotated[Jinja2Templates, Depends(_templates)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SecretKey = Annotated[str, Depends(_secret_key)]
BaseUrl = Annotated[str, Depends(_base_url)]
Organiser = Annotated[OrganiserScope, Depends(require_organiser)]
ApiCaller = Annotated[OrganiserScope, Depends(require_api_token)]


async def _own_campaign(campaign_id: str, organiser: Organiser, campaigns: Campaigns) -> Any:
    """The campaign at `{campaign_id}` if the organiser's scope covers it: 404 when there is none, 403 when not."""
    try:
        campaign = await campaigns.get_campaign(campaign_id)
    except CampaignNotFound:
        raise HTTPException(404, "There is no campaign with that id") from None
    if not await campaigns.covers_campaign(organiser, campaign):
        raise HTTPException(403, f"You organise {organiser.describe()}; this campaign is not in it")
    return campaign


OwnCampaign = Annotated[Any, Depends(_own_campaign)]
