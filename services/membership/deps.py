"""What membership's routes need, declared in their signatures (`Annotated[..., Depends(...)]` aliases): the use
cases the composition root (`main.py`) built, the settings, and the signed-in organiser.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from services.membership.accounts import OrganiserAccounts
from services.membership.directory import Directory
from services.membership.front_door import FrontDoor
from services.membership.join_followups import JoinFollowups
from services.membership.join_forms import JoinForms
from services.membership.joins import Joins
from services.membership.member_data import MemberData
from services.membership.member_page import MemberPage
from services.membership.member_rights import MemberRights
from services.membership.origins import AllowedOrigins
from services.membership.privacy import PrivacyNotices
from services.membership.revoking import Revoking
from services.membership.roster import Roster
from services.membership.workspace import OrganiserHome
from shared import auth
from shared.config import Settings
from shared.uow import UnitsOfWork


def _state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency returning what `main.create_app` put in the app's state under `name` (a coroutine, so FastAPI
    calls it on the event loop: a plain function would be sent to a worker thread and back on every request)."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    return get


async def _uows(request: Request) -> UnitsOfWork:
    return request.app.state.runtime.uows


async def _settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


JoinsDep = Annotated[Joins, Depends(_state("joins"))]
JoinFormsDep = Annotated[JoinForms, Depends(_state("join_forms"))]
JoinFollowupsDep = Annotated[JoinFollowups, Depends(_state("join_followups"))]
MemberRightsDep = Annotated[MemberRights, Depends(_state("member_rights"))]
MemberDataDep = Annotated[MemberData, Depends(_state("member_data"))]
OriginsDep = Annotated[AllowedOrigins, Depends(_state("origins"))]
AccountsDep = Annotated[OrganiserAccounts, Depends(_state("accounts"))]
RevokingDep = Annotated[Revoking, Depends(_state("revoking"))]
DirectoryDep = Annotated[Directory, Depends(_state("directory"))]
MemberPageDep = Annotated[MemberPage, Depends(_state("member_page"))]
RosterDep = Annotated[Roster, Depends(_state("roster"))]
OrganiserHomeDep = Annotated[OrganiserHome, Depends(_state("organiser_home"))]
FrontDoorDep = Annotated[FrontDoor, Depends(_state("front_door"))]
PrivacyNoticesDep = Annotated[PrivacyNotices, Depends(_state("privacy_notices"))]
SettingsDep = Annotated[Settings, Depends(_settings)]
UnitsOfWorkDep = Annotated[UnitsOfWork, Depends(_uows)]


class SignInNeeded(Exception):
    """No valid organiser session: pages send people to sign in, JSON callers get 401."""


async def current_organiser(request: Request) -> auth.OrganiserScope:
    """The signed-in organiser: a session not revoked, of an account still active here (both asked in one statement:
    `revoking.SessionsOfActiveAccounts`, membership's revocation record). (A form posted from another site never
    gets this far: `shared/web.py` `RefuseCrossSiteForms`.)"""
    who = await auth.optional_organiser(request)
    if who is None:
        raise SignInNeeded()
    return who


CurrentOrganiser = Annotated[auth.OrganiserScope, Depends(current_organiser)]
