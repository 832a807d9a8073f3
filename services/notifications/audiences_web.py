"""Saved audiences' pages, under /notifications/organise/mailings/audiences: the list by name, changing one (its
name and who it is), and deleting one (asked first). Saving one and choosing one happen on the compose page
(mailings_web.py). An audience outside the organiser's scope is not found, like a mailing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.notifications.domain import MailingAudience, audience_name_errors, describe_audience
from services.notifications.mailings_web import DAY_FIELDS, MailingsDep, audience_context, form_audience
from services.notifications.saved_audiences import SavedAudiences
from services.notifications.web import Organiser, _page
from shared.auth import OrganiserScope

router = APIRouter(prefix="/notifications/organise/mailings/audiences", tags=["organiser pages"])
BASE = "/notifications/organise/mailings/audiences"


async def _audience(saved: SavedAudiences, who: OrganiserScope, audience_id: str) -> Any:
    async with saved.uows.begin() as uow:
        row = await saved.get(uow.session, who, audience_id)
    if row is None:
        raise HTTPException(404, "No saved audience of yours has this address")
    return row


@router.get("", response_class=HTMLResponse)
async def list_audiences(
    request: Request, organiser: Organiser, mailings: MailingsDep, saved: str = ""
) -> HTMLResponse:
    audiences = SavedAudiences(mailings)
    async with mailings.uows.begin() as uow:
        rows = await audiences.list_for(uow.session, organiser)
        names = {u.unit_id: u.name for u in await mailings.units_for(uow.session, organiser)}
    items = [(row, describe_audience(MailingAudience.from_json(row.audience), names)) for row in rows]
    return await _page(request, "organise_audiences.html", {"organiser": organiser, "items": items, "saved": saved})


async def _edit_page(
    request: Request,
    who: OrganiserScope,
    mailings: Any,
    row: Any,
    values: dict[str, Any],
    audience: MailingAudience,
    errors: dict[str, str],
    status: int = 200,
) -> HTMLResponse:
    async with mailings.uows.begin() as uow:
        context = await audience_context(uow.session, who, mailings, audience)
    return await _page(
        request,
        "organise_audience.html",
        {**context, "organiser": who, "row": row, "values": values, "errors": errors},
        status,
    )


@router.get("/{audience_id}", response_class=HTMLResponse)
async def audience_page(request: Request, audience_id: str, organiser: Organiser, mailings: MailingsDep) -> Response:
    row = await _audience(SavedAudiences(mailings), organiser, audience_id)
    values = {"audience_name": row.name, **{f: str(row.audience.get(f) or "") for f in DAY_FIELDS}}
    return await _edit_page(request, organiser, mailings, row, values, MailingAudience.from_json(row.audience), {})


@router.post("/{audience_id}")
async def change_audience(request: Request, audience_id: str, organiser: Organiser, mailings: MailingsDep) -> Response:
    saved = SavedAudiences(mailings)
    row = await _audience(saved, organiser, audience_id)
    form = await request.form()
    name = str(form.get("audience_name", ""))
    values = {"audience_name": name, **{f: str(form.get(f, "")) for f in DAY_FIELDS}}
    async with mailings.uows.begin() as uow:
        allowed = {u.unit_id for u in await mailings.units_for(uow.session, organiser)}
        audience, errors = form_audience(form, allowed)
        taken = await saved.name_taken(uow.session, organiser, name, except_id=row.id)
        errors.update(audience_name_errors(name, taken))
        if not errors:
            await saved.change(uow, row.id, name, audience)
    if errors:
        return await _edit_page(request, organiser, mailings, row, values, audience, errors, 422)
    return RedirectResponse(f"{BASE}?saved=changed", status_code=303)


@router.get("/{audience_id}/delete", response_class=HTMLResponse)
async def confirm_delete(request: Request, audience_id: str, organiser: Organiser, mailings: MailingsDep) -> Response:
    row = await _audience(SavedAudiences(mailings), organiser, audience_id)
    return await _page(request, "organise_audience_delete.html", {"organiser": organiser, "row": row})


@router.post("/{audience_id}/delete")
async def delete_audience(request: Request, audience_id: str, organiser: Organiser, mailings: MailingsDep) -> Response:
    saved = SavedAudiences(mailings)
    row = await _audience(saved, organiser, audience_id)
    async with mailings.uows.begin() as uow:
        await saved.delete(uow, row.id)
    return RedirectResponse(f"{BASE}?saved=deleted", status_code=303)


ROUTERS = (router,)
