"""What membership's routes need, declared in their signatures (`Annotated[..., Depends(...)]` aliases): the use
cases the composition root (`main.py`) built, the settings, and the signed-in organiser.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request

from services.membership.accounts import OrganiserAccounts
from services.membership.directory import Directory
from services.membership.join_forms import JoinForms
from services.membership.joins import Joins
from services.membership.member_rights import MemberRights
from services.membership.origins import AllowedOrigins
from services.membership.roster import Roster
from shared import auth
from shared.config import Settings
from shared.uow import UnitsOfWork


def _joins(request: Request) -> Joins:
    return request.app.state.joins


def _join_forms(request: Request) -> JoinForms:
    return request.app.state.join_forms


def _member_rights(request: Request) -> MemberRights:
    return request.app.state.member_rights


def _origins(request: Request) -> AllowedOrigins:
    return request.app.state.origins


def _accounts(request: Request) -> OrganiserAccounts:
    return request.app.state.accounts


def _directory(request: Request) -> Directory:
    return request.app.state.directory


def _roster(request: Request) -> Roster:
    return request.app.state.roster


def _settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


def _uows(request: Request) -> UnitsOfWork:
    return request.app.state.runtime.uows


JoinsDep = Annotated[Joins, Depends(_joins)]
JoinFormsDep = Annotated[JoinForms, Depends(_join_forms)]
MemberRightsDep = Annotated[MemberRights, Depends(_member_rights)]
OriginsDep = Annotated[AllowedOrigins, Depends(_origins)]
AccountsDep = Annotated[OrganiserAccounts, Depends(_accounts)]
DirectoryDep = Annotated[Directory, Depends(_directory)]
RosterDep = Annotated[Roster, Depends(_roster)]
SettingsDep = Annotated[Settings, Depends(_settings)]
UnitsOfWorkDep = Annotated[UnitsOfWork, Depends(_uows)]


class SignInNeeded(Exception):
    """No valid organiser session: pages send people to sign in, JSON callers get 401."""


async def current_organiser(request: Request, accounts: AccountsDep) -> auth.OrganiserScope:
    """The signed-in organiser, still active here; a POST from another site is refused (CSRF)."""
    who = auth.optional_organiser(request)
    if who is None or who.key_id is not None:
        raise SignInNeeded()
    row = await accounts.organiser(who.organiser_id)
    if row is None or row.status != "active":
        raise SignInNeeded()
    if request.method == "POST":
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
            raise HTTPException(403, "This form was sent from another site")
    return who


CurrentOrganiser = Annotated[auth.OrganiserScope, Depends(current_organiser)]
