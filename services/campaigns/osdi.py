"""OSDI as Action Network serves it: petitions, their signatures and the record signature helper (HAL+JSON).

A petition is an ask of kind `petition`. Authentication is the `OSDI-API-Token` header; collections page with
`page` and `per_page` (at most 25). Signatures carry no name or address: the person is a link.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.campaigns import views
from services.campaigns.auth import OrganiserScope, require_api_token
from services.campaigns.domain import ActionRefused, InvalidInput, validate_action
from services.campaigns.service import ActionNotFound, AskNotFound

router = APIRouter(prefix="/api/v2", tags=["OSDI"])
ApiCaller = Annotated[OrganiserScope, Depends(require_api_token)]
HAL = "application/hal+json"
MAX_PER_PAGE = 25
CURIES = [{"name": "osdi", "href": "https://opensupporter.github.io/osdi-docs/{rel}", "templated": True}]
Page = Annotated[int, Query(ge=1)]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE)]


def hal(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=HAL)


def hal_error(status: int, message: str) -> JSONResponse:
    return hal({"error": message}, status)


def _api(request: Request) -> str:
    return views.base_url(request) + "/api/v2"


def _petition(request: Request, a: Any, total: int) -> dict[str, Any]:
    api = _api(request)
    return {
        "identifiers": [f"groundswell:{a.id}"],
        "origin_system": "Groundswell",
        "title": a.title,
        "description": a.description,
        "petition_text": a.body,
        "browser_url": f"{views.base_url(request)}/campaigns/{a.campaign_id}/asks/{a.id}",
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
    api = _api(request)
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


def _collection(request: Request, name: str, items: list[dict[str, Any]], total: int, page: int,
                per_page: int) -> dict[str, Any]:
    url = str(request.url.remove_query_params(["page", "per_page"]))
    sep = "&" if "?" in url else "?"
    pages = max(1, math.ceil(total / per_page))
    links: dict[str, Any] = {
        "self": {"href": f"{url}{sep}page={page}&per_page={per_page}"},
        f"osdi:{name}": [item["_links"]["self"] for item in items],
        "curies": CURIES,
    }
    if page < pages:
        links["next"] = {"href": f"{url}{sep}page={page + 1}&per_page={per_page}"}
    if page > 1:
        links["previous"] = {"href": f"{url}{sep}page={page - 1}&per_page={per_page}"}
    return {"total_pages": pages, "per_page": per_page, "page": page, "total_records": total,
            "_links": links, "_embedded": {f"osdi:{name}": items}}


@router.get("/petitions")
async def list_petitions(request: Request, caller: ApiCaller, page: Page = 1,
                         per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    svc = views.service(request)
    rows, total = await svc.petitions(limit=per_page, offset=(page - 1) * per_page)
    items = []
    for a in rows:
        items.append(_petition(request, a, (await svc.counts(a.campaign_id)).get(a.id, 0)))
    return hal(_collection(request, "petitions", items, total, page, per_page))


@router.get("/petitions/{ask_id}")
async def get_petition(request: Request, ask_id: str, caller: ApiCaller) -> JSONResponse:
    svc = views.service(request)
    try:
        a = await svc.petition(ask_id)
    except AskNotFound:
        return hal_error(404, "There is no petition with that id")
    return hal(_petition(request, a, (await svc.counts(a.campaign_id)).get(a.id, 0)))


@router.get("/petitions/{ask_id}/signatures")
async def list_signatures(request: Request, ask_id: str, caller: ApiCaller, page: Page = 1,
                          per_page: PerPage = MAX_PER_PAGE) -> JSONResponse:
    svc = views.service(request)
    try:
        a = await svc.petition(ask_id)
    except AskNotFound:
        return hal_error(404, "There is no petition with that id")
    total = (await svc.counts(a.campaign_id)).get(a.id, 0)
    rows = await svc.actions_of(ask_id, limit=per_page, offset=(page - 1) * per_page)
    return hal(_collection(request, "signatures", [_signature(request, x) for x in rows], total, page, per_page))


@router.get("/petitions/{ask_id}/signatures/{action_id}")
async def get_signature(request: Request, ask_id: str, action_id: str, caller: ApiCaller) -> JSONResponse:
    try:
        x = await views.service(request).get_action(action_id)
    except ActionNotFound:
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
                                  caller: ApiCaller) -> JSONResponse:
    """201 with the new signature, or 200 with the existing one when this person had signed already."""
    svc = views.service(request)
    try:
        await svc.petition(ask_id)
    except AskNotFound:
        return hal_error(404, "There is no petition with that id")
    p = body.person
    email = next((e.address for e in p.email_addresses if e.primary), None) or (
        p.email_addresses[0].address if p.email_addresses else "")
    postcode = p.postal_addresses[0].postal_code if p.postal_addresses else ""
    try:
        form = validate_action("petition", name=f"{p.given_name} {p.family_name}", email=email, postcode=postcode,
                               join_network=bool(postcode), comment=body.comments)
        outcome = await svc.take_action(ask_id, form, source="osdi")
    except InvalidInput as exc:
        return hal_error(400, "; ".join(exc.errors.values()))
    except ActionRefused as exc:
        return hal_error(409, str(exc))
    return hal(_signature(request, await svc.get_action(outcome.action_id)), 200 if outcome.already else 201)
