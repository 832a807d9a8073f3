"""Organisers' pages under /campaigns/organise: their campaigns, a new campaign, asks, pledge moderation, the long
tail of members who have not taken part, the MP dataset and the engagement ladder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.campaigns import views
from services.campaigns.domain import ASK_KINDS
from services.campaigns.service import ActionNotFound, CampaignNotFound, NotYours
from shared import auth, tokens
from shared.auth import OrganiserScope, require_organiser
from shared.errors import InvalidInput
from shared.exports import csv_text
from shared.web import DaysAgo

router = APIRouter(prefix="/campaigns/organise", tags=["organiser pages"])
Organiser = Annotated[OrganiserScope, Depends(require_organiser)]


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return views.templates(request).TemplateResponse(request, name, context, status_code=status)


@router.get("/sign-in")
async def sign_in(request: Request, token: str, next: str = "/campaigns/organise") -> Response:
    """Exchange a signed organiser token for the session cookie (membership's /signin is the usual way in)."""
    try:
        auth.verify(views.secret_key(request), token)
    except tokens.InvalidToken:
        raise HTTPException(401, "This sign-in link is not valid or has expired") from None
    target = next if next.startswith("/") and not next.startswith("//") else "/campaigns/organise"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, token, max_age=auth.SESSION_MAX_AGE_S, httponly=True, samesite="lax",
                        path="/")
    return response


@router.get("", response_class=HTMLResponse)
async def my_campaigns(request: Request, organiser: Organiser) -> HTMLResponse:
    svc = views.service(request)
    rows = await svc.campaigns_for(organiser)
    totals = {r.id: sum((await svc.counts(r.id)).values()) for r in rows}
    return _page(request, "organise_list.html", {"campaigns": rows, "totals": totals, "organiser": organiser})


async def _partner_units(request: Request) -> list[Any]:
    return [u for u in await views.service(request).units() if u.kind == "partner"]


@router.get("/new", response_class=HTMLResponse)
async def new_campaign_form(request: Request, organiser: Organiser) -> HTMLResponse:
    values = {"scope_type": organiser.scope_type, "scope_id": organiser.scope_id or "", "partner_ids": []}
    return _page(request, "organise_new.html", {"values": values, "errors": {}, "organiser": organiser,
                                                "partners": await _partner_units(request)})


@router.post("/new", response_class=HTMLResponse)
async def new_campaign(request: Request, organiser: Organiser) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: str(form.get(k, "")) for k in ("title", "summary", "goal", "scope_type", "scope_id",
                                                                 "issues")}
    values["partner_ids"] = [str(p) for p in form.getlist("partner_ids")]
    try:
        campaign_id = await views.service(request).launch(values, organiser)
    except (InvalidInput, NotYours) as exc:
        errors = exc.errors if isinstance(exc, InvalidInput) else {"scope_id": str(exc)}
        return _page(request, "organise_new.html", {"values": values, "errors": errors, "organiser": organiser,
                                                    "partners": await _partner_units(request)}, 422)
    return RedirectResponse(f"/campaigns/organise/campaigns/{campaign_id}", status_code=303)


async def _own(request: Request, campaign_id: str, organiser: OrganiserScope) -> Any:
    svc = views.service(request)
    try:
        campaign = await svc.get_campaign(campaign_id)
    except CampaignNotFound:
        raise HTTPException(404, "There is no campaign with that id") from None
    if not await svc.covers_campaign(organiser, campaign):
        raise HTTPException(403, f"You organise {organiser.describe()}; this campaign is not in it")
    return campaign


async def _campaign_page(request: Request, campaign: Any, organiser: OrganiserScope, *,
                         values: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                         status: int = 200) -> HTMLResponse:
    svc = views.service(request)
    return _page(request, "organise_campaign.html", {
        "campaign": campaign, "asks": await svc.asks_of(campaign.id), "counts": await svc.counts(campaign.id),
        "values": values or {"kind": "petition"}, "errors": errors or {}, "kinds": ASK_KINDS,
        "meetings": await svc.upcoming_meetings(), "organiser": organiser}, status)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_admin(request: Request, campaign_id: str, organiser: Organiser) -> HTMLResponse:
    return await _campaign_page(request, await _own(request, campaign_id, organiser), organiser)


@router.post("/campaigns/{campaign_id}/asks", response_class=HTMLResponse)
async def add_ask(request: Request, campaign_id: str, organiser: Organiser) -> Response:
    campaign = await _own(request, campaign_id, organiser)
    form = await request.form()
    values = {k: str(form.get(k, "")) for k in ("kind", "title", "description", "body", "addressee", "goal",
                                                 "letter_subject", "meeting_id", "share_url")}
    try:
        await views.service(request).add_ask(campaign_id, values, organiser)
    except InvalidInput as exc:
        return await _campaign_page(request, campaign, organiser, values=values, errors=exc.errors, status=422)
    return RedirectResponse(f"/campaigns/organise/campaigns/{campaign_id}", status_code=303)


@router.post("/campaigns/{campaign_id}/close")
async def close_campaign(request: Request, campaign_id: str, organiser: Organiser) -> Response:
    await _own(request, campaign_id, organiser)
    await views.service(request).close(campaign_id, organiser)
    return RedirectResponse(f"/campaigns/organise/campaigns/{campaign_id}", status_code=303)


@router.get("/pledges", response_class=HTMLResponse)
async def pledge_queue(request: Request, organiser: Organiser) -> HTMLResponse:
    svc = views.service(request)
    mine = await svc.campaigns_for(organiser)
    rows = await svc.pledges(campaign_ids=[c.id for c in mine], moderation="pending", limit=200)
    return _page(request, "organise_pledges.html", {"pledges": rows, "titles": {c.id: c.title for c in mine}})


@router.post("/pledges/{action_id}")
async def moderate_pledge(request: Request, action_id: str, organiser: Organiser,
                          decision: Annotated[str, Form()] = "") -> Response:
    try:
        await views.service(request).moderate(action_id, decision, organiser)
    except ActionNotFound:
        raise HTTPException(404, "There is no pledge with that id") from None
    except NotYours as exc:
        raise HTTPException(403, str(exc)) from None
    except InvalidInput as exc:
        raise HTTPException(422, exc.errors["decision"]) from None
    return RedirectResponse("/campaigns/organise/pledges", status_code=303)


async def _long_tail(request: Request, organiser: OrganiserScope, region: str, group: str, days: int) -> Any:
    before = datetime.now(UTC) - timedelta(days=days) if days > 0 else None
    return await views.engagement(request).long_tail(organiser, region_id=region or None, group_id=group or None,
                                                     joined_before=before)


@router.get("/long-tail", response_class=HTMLResponse)
async def long_tail(request: Request, organiser: Organiser, region: str = "", group: str = "",
                    days: DaysAgo = 0) -> HTMLResponse:
    tail = await _long_tail(request, organiser, region, group, days)
    units = await views.service(request).units()
    return _page(request, "organise_long_tail.html", {
        "tail": tail, "filters": {"region": region, "group": group, "days": days}, "organiser": organiser,
        "regions": [u for u in units if u.kind == "region"], "groups": [u for u in units if u.kind == "group"]})


@router.get("/long-tail.csv")
async def long_tail_csv(request: Request, organiser: Organiser, region: str = "", group: str = "",
                        days: DaysAgo = 0) -> Response:
    tail = await _long_tail(request, organiser, region, group, days)
    rows = [[m["member_id"], m["region"], "; ".join(m["groups"]), m["joined_at"].isoformat() if m["joined_at"] else ""]
            for m in tail.members]
    return Response(csv_text([["member_id", "region", "groups", "joined_at"], *rows]),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="long-tail.csv"'})


@router.get("/mps", response_class=HTMLResponse)
async def mp_dataset(request: Request, organiser: Organiser) -> HTMLResponse:
    n, k = await views.service(request).mp_dataset_size()
    return _page(request, "organise_mps.html", {"constituencies": n, "postcodes": k, "errors": {},
                                                "organiser": organiser})


@router.post("/mps", response_class=HTMLResponse)
async def upload_mp_dataset(request: Request, organiser: Organiser, file: UploadFile,
                            mode: Annotated[str, Form()] = "replace") -> HTMLResponse:
    if not organiser.is_network:
        raise HTTPException(403, "Only network organisers can change the MP dataset")
    svc = views.service(request)
    errors: dict[str, str] = {}
    try:
        await svc.load_mp_dataset((await file.read()).decode("utf-8-sig", errors="replace"),
                                  replace=mode != "add")
    except InvalidInput as exc:
        errors = exc.errors
    n, k = await svc.mp_dataset_size()
    return _page(request, "organise_mps.html", {"constituencies": n, "postcodes": k, "errors": errors,
                                                "organiser": organiser, "loaded": not errors},
                 422 if errors else 200)


@router.get("/ladder", response_class=HTMLResponse)
async def ladder(request: Request, organiser: Organiser) -> HTMLResponse:
    return _page(request, "organise_ladder.html", {"ladder": await views.engagement(request).ladder()})
