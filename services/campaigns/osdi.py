"""OSDI as Action Network serves it: petitions, their signatures and the record signature helper (HAL+JSON).

A petition is an ask of kind `petition`. Authentication is the `OSDI-API-Token` header; collections page with
`page` and `per_page` (at most 25). Signatures carry no name or address: the person is a link.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.campaigns.deps import Actions, ApiCaller, BaseUrl, Campaigns
from services.campaigns.domain import ActionNotFound, ActionRefused, AskNotFound, validate_action
from shared import osdi
from shared.errors import InvalidInput
from shared.osdi import MAX_PER_PAGE, Page, PerPage, api_url, collection, hal, hal_error, without_paging

router = APIRouter(prefix=osdi.PREFIX, tags=["OSDI"])


def _petition(request: Request, base_url: str, a: Any, total: int) -> dict[str, Any]:
    api = api_url(request)
    return {
        "identifiers": [f"groundswell:{a.id}"],
        "origin_system": "Groundswell",
        "title": a.title,
        "description": a.description,
        "petition_text": a.body,
        "browser_url": f"{base_url}/campaigns/{a.campaign_id}/asks/{a.id}",
        "target": [{"name": a.addressee}] if a.addressee else [],
        "total_signatures": total,
        "created_date": a.created_at.isoformat(),
        "modified_date": a.created_at.isoformat(),
        "groundswell:campaign": {"id": a.campaign_id, "title": a.campaign_title},
        "groundswell:goal": a.goal,
        "groundswell:status": "closed" if a.campaign_status == "closed" or a.status == "closed" else "open",
        "_links": {
            "self": {"href": f"{api}/petitions/{a.id}"},
            "osdi:signatures": {"href": f"{api}/petitions/{a.id}/signatures"},
            "osdi:record_signature_helper": {"href": f"{api}/petitions/{a.id}/signatures"},
        },
    }


def _signature(request: Request, x: Any) -> dict[str, Any]:
    api = api_url(request)
    sig: dict[str, Any] = {
        "identifiers": [f"groundswell:{x.id}"],
        "created_date": x.created_at.isoformat(),
        "modified_date": x.created_at.isoformat(),
        "comments": x.comment,
        "_links": {
            "self": {"href": f"{api}/petitions/{x.ask_id}/signatures/{x.id}"},
            "osdi:petition": {"href": f"{api}/petitions/{x.ask_id}"},
        },
    }
    if x.member_id:
        sig["_links"]["osdi:person"] = {"href": f"{api}/people/{x.member_id}"}
    return sig


@router.get("/petitions")
async def list_petitions(request: Request, caller: ApiCaller, campaigns: Campaigns, actions: Actions,
                         base_url: BaseUrl, page: Page = 1, per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    rows, total = await campaigns.petitions(limit=per_page, offset=(page - 1) * per_page, within=caller)
    items = []
    for a in rows:
        items.append(_petition(request, base_url, a, (await actions.counts(a.campaign_id)).get(a.id, 0)))
    return hal(collection(without_paging(request), "petitions", items, total, page, per_page))


@router.get("/petitions/{ask_id}")
async def get_petition(request: Request, ask_id: str, caller: ApiCaller, campaigns: Campaigns, actions: Actions,
                       base_url: BaseUrl) -> JSONResponse:
    try:
        a = await campaigns.petition(ask_id, within=caller)
    except AskNotFound:
        return hal_error(404, "There is no petition with that id")
    return hal(_petition(request, base_url, a, (await actions.counts(a.campaign_id)).get(a.id, 0)))


@router.get("/petitions/{ask_id}/signatures")
async def list_signatures(request: Request, ask_id: str, caller: ApiCaller, campaigns: Campaigns, actions: Actions,
                          page: Page = 1, per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    try:
        a = await campaigns.petition(ask_id, within=caller)
    except AskNotFound:
        return hal_error(404, "There is no petition with that id")
    total = (await actions.counts(a.campaign_id)).get(a.id, 0)
    rows = await actions.actions_of(ask_id, limit=per_page, offset=(page - 1) * per_page)
    items = [_signature(request, x) for x in rows]
    return hal(collection(without_paging(request), "signatures", items, total, page, per_page))


@router.get("/petitions/{ask_id}/signatures/{action_id}")
async def get_signature(request: Request, ask_id: str, action_id: str, caller: ApiCaller, campaigns: Campaigns,
                        actions: Actions) -> JSONResponse:
    try:
        await campaigns.petition(ask_id, within=caller)
        x = await actions.get_action(action_id)
    except (AskNotFound, ActionNotFound):
        x = None
    if x is None or x.ask_id != ask_id:
        return hal_error(404, "There is no signature with that id on this petition")
    return hal(_signature(request, x))


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


class SignatureHelperRequest(BaseModel):
    """Action Network's record signature helper: a person (matched or added) signs the petition."""

    person: OsdiPerson
    comments: str = ""
    add_tags: list[str] = []


@router.post("/petitions/{ask_id}/signatures")
async def record_signature_helper(request: Request, ask_id: str, body: SignatureHelperRequest,
                                  caller: ApiCaller, campaigns: Campaigns, actions: Actions) -> JSONResponse:
    """201 with the new signature, or 200 with the existing one when this person had signed already."""
    try:
        await campaigns.petition(ask_id, within=caller)
    except AskNotFound:
        return hal_error(404, "There is no petition with that id")
    p = body.person
    email = next((e.address for e in p.email_addresses if e.primary), None) or (
        p.email_addresses[0].address if p.email_addresses else "")
    postcode = p.postal_addresses[0].postal_code if p.postal_addresses else ""
    try:
        form = validate_action("petition", name=f"{p.given_name} {p.family_name}", email=email, postcode=postcode,
                               join_network=bool(postcode), comment=body.comments)
        outcome = await actions.take_action(ask_id, form, source="osdi")
    except InvalidInput as exc:
        return hal_error(400, "; ".join(exc.errors.values()))
    except ActionRefused as exc:
        return hal_error(409, str(exc))
    return hal(_signature(request, await actions.get_action(outcome.action_id)), 200 if outcome.already else 201)
