"""OSDI as Action Network serves it: petitions, their signatures, a person's signatures and the record signature
helper (HAL+JSON).

A petition is an ask of kind `petition`. Authentication is the `OSDI-API-Token` header; collections page with
`page` and `per_page` (at most 25). Petitions are public, so every key reads them; a key reads and records
signatures only on petitions of campaigns its scope covers (anything else is a 403). Signatures carry no name or
address: the person is a link. docs/api.md is the integrator's guide.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.campaigns.deps import Actions, ApiCaller, BaseUrl, Campaigns
from services.campaigns.domain import ActionNotFound, ActionRefused, AskNotFound, validate_action
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
    without_paging,
)

router = osdi.router()


def _petition(request: Request, base_url: str, a: Any, total: int) -> dict[str, Any]:
    api = api_url(request)
    return {
        "identifiers": identifiers(a.id),
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
            "curies": CURIES,
        },
    }


def _signature(request: Request, x: Any) -> dict[str, Any]:
    api = api_url(request)
    sig: dict[str, Any] = {
        "identifiers": identifiers(x.id),
        "created_date": x.created_at.isoformat(),
        "modified_date": x.created_at.isoformat(),
        "comments": x.comment,
        "_links": {
            "self": {"href": f"{api}/petitions/{x.ask_id}/signatures/{x.id}"},
            "osdi:petition": {"href": f"{api}/petitions/{x.ask_id}"},
            "curies": CURIES,
        },
    }
    if x.member_id:
        sig["_links"]["osdi:person"] = {"href": f"{api}/people/{x.member_id}"}
    return sig


@router.get("/petitions", responses=osdi.page_of("petitions"))
async def list_petitions(request: Request, caller: ApiCaller, campaigns: Campaigns, actions: Actions,
                         base_url: BaseUrl, page: Page = 1, per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    rows, total = await campaigns.petitions(limit=per_page, offset=(page - 1) * per_page, within=caller)
    items = []
    for a in rows:
        items.append(_petition(request, base_url, a, (await actions.counts(a.campaign_id)).get(a.id, 0)))
    return hal(collection(without_paging(request), "petitions", items, total, page, per_page))


async def _petition_of(campaigns: Campaigns, ask_id: str, caller: OrganiserScope | None = None) -> Any:
    """The petition of the path; 404 when there is none or, with `caller`, when the key's scope does not cover it
    (a key learns nothing of petitions outside its scope, not even that they exist)."""
    try:
        return await campaigns.petition(bare_id(ask_id), within=caller)
    except AskNotFound:
        osdi.refuse(404, "There is no petition with that id")


@router.get("/petitions/{ask_id}", responses=osdi.one("The petition"))
async def get_petition(request: Request, ask_id: str, caller: ApiCaller, campaigns: Campaigns, actions: Actions,
                       base_url: BaseUrl) -> JSONResponse:
    a = await _petition_of(campaigns, ask_id, caller)
    return hal(_petition(request, base_url, a, (await actions.counts(a.campaign_id)).get(a.id, 0)))


@router.get("/petitions/{ask_id}/signatures", responses=osdi.page_of("signatures"))
async def list_signatures(request: Request, ask_id: str, caller: ApiCaller, campaigns: Campaigns, actions: Actions,
                          page: Page = 1, per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    a = await _petition_of(campaigns, ask_id, caller)
    total = (await actions.counts(a.campaign_id)).get(a.id, 0)
    rows = await actions.actions_of(a.id, limit=per_page, offset=(page - 1) * per_page)
    items = [_signature(request, x) for x in rows]
    return hal(collection(without_paging(request), "signatures", items, total, page, per_page))


@router.get("/petitions/{ask_id}/signatures/{action_id}", responses=osdi.one("The signature"))
async def get_signature(request: Request, ask_id: str, action_id: str, caller: ApiCaller, campaigns: Campaigns,
                        actions: Actions) -> JSONResponse:
    a = await _petition_of(campaigns, ask_id, caller)
    try:
        x = await actions.get_action(bare_id(action_id))
    except ActionNotFound:
        x = None
    if x is None or x.ask_id != a.id:
        return hal_error(404, "There is no signature with that id on this petition")
    return hal(_signature(request, x))


@router.get("/people/{person_id}/signatures", responses=osdi.page_of("signatures"))
async def person_signatures(request: Request, person_id: str, caller: ApiCaller, campaigns: Campaigns,
                            page: Page = 1, per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    """The person's signatures on petitions the key's scope covers (none at all for someone it may not see)."""
    rows = await campaigns.signatures_of_member(bare_id(person_id), caller)
    return osdi.page_held(request, "signatures", rows, _signature, page, per_page)


@router.get("/people/{person_id}/signatures/{action_id}", responses=osdi.one("The signature"))
async def person_signature(request: Request, person_id: str, action_id: str, caller: ApiCaller,
                           campaigns: Campaigns) -> JSONResponse:
    rows = await campaigns.signatures_of_member(bare_id(person_id), caller)
    return osdi.one_held(request, rows, action_id, _signature, "signature")


class SignatureHelperRequest(BaseModel):
    """Action Network's record signature helper: a person (matched by email address, or added) signs the
    petition; or, as Action Network's signature POST, `_links.osdi:person` names a member already known."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    person: OsdiPerson | None = None
    links: PersonLinks | None = Field(None, alias="_links")
    comments: str = Field("", max_length=10_000)
    add_tags: list[str] = Field([], max_length=100)


@router.post("/petitions/{ask_id}/signatures", status_code=201,
             responses={201: osdi.one("The new signature")[200],
                        200: osdi.one("The person had signed already: their signature, unchanged")[200],
                        409: {"description": "The petition is closed"}})
async def record_signature_helper(request: Request, ask_id: str, body: SignatureHelperRequest,
                                  caller: ApiCaller, campaigns: Campaigns, actions: Actions) -> JSONResponse:
    """201 with the new signature, or 200 with the existing one when this person had signed already."""
    a = await _petition_of(campaigns, ask_id, caller)
    p = body.person or OsdiPerson()
    member_id = person_id_of(body.links)
    if body.person is None and member_id is None:
        return hal_error(400, 'Send {"person": {"email_addresses": [{"address": "…"}]}} or '
                              '{"_links": {"osdi:person": {"href": ".../people/<id>"}}}')
    try:
        form = validate_action("petition", member_id=member_id, name=p.name, email=p.email, postcode=p.postcode,
                               join_network=bool(p.postcode and p.name), comment=body.comments, name_optional=True)
        outcome = await actions.take_action(a.id, form, source="osdi")
    except InvalidInput as exc:
        return hal_error(400, "; ".join(exc.errors.values()))
    except ActionRefused as exc:
        return hal_error(409, str(exc))
    return hal(_signature(request, await actions.get_action(outcome.action_id)), 200 if outcome.already else 201)
