"""Organisers' pages under /campaigns/organise: their campaigns, a new campaign, asks, pledge moderation, the long
tail of members who have not taken part, the MP dataset and the engagement ladder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.campaigns.deps import (
    Actions,
    Campaigns,
    Engagement,
    Letters,
    Organiser,
    OwnCampaign,
    SecretKey,
)
from services.campaigns.domain import ASK_KINDS, ActionNotFound, NotYours
from services.campaigns.engagement import LongTail
from services.campaigns.views import Pages, PagesDep
from shared import auth, tokens
from shared.auth import OrganiserScope
from shared.errors import InvalidInput
from shared.exports import csv_text
from shared.web import DaysAgo

router = APIRouter(prefix="/campaigns/organise", tags=["organiser pages"])


@router.get("/sign-in")
async def sign_in(secret_key: SecretKey, token: str, next: str = "/campaigns/organise") -> Response:
    """Exchange a signed organiser token for the session cookie (membership's /signin is the usual way in)."""
    try:
        auth.verify(secret_key, token)
    except tokens.InvalidToken:
        raise HTTPException(401, "This sign-in link is not valid or has expired") from None
    target = next if next.startswith("/") and not next.startswith("//") else "/campaigns/organise"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, token, max_age=auth.SESSION_MAX_AGE_S, httponly=True, samesite="lax",
                        path="/")
    return response


@router.get("", response_class=HTMLResponse)
async def my_campaigns(pages: PagesDep, organiser: Organiser, campaigns: Campaigns,
                       actions: Actions) -> HTMLResponse:
    rows = await campaigns.campaigns_for(organiser)
    totals = {r.id: sum((await actions.counts(r.id)).values()) for r in rows}
    return pages.render("organise_list.html", {"campaigns": rows, "totals": totals, "organiser": organiser})


async def _partner_units(campaigns: Campaigns) -> list[Any]:
    return [u for u in await campaigns.units() if u.kind == "partner"]


@router.get("/new", response_class=HTMLResponse)
async def new_campaign_form(pages: PagesDep, organiser: Organiser, campaigns: Campaigns) -> HTMLResponse:
    values = {"scope_type": organiser.scope_type, "scope_id": organiser.scope_id or "", "partner_ids": []}
    return pages.render("organise_new.html", {"values": values, "errors": {}, "organiser": organiser,
                                              "partners": await _partner_units(campaigns)})


@router.post("/new", response_class=HTMLResponse)
async def new_campaign(request: Request, pages: PagesDep, organiser: Organiser, campaigns: Campaigns) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: str(form.get(k, "")) for k in ("title", "summary", "goal", "scope_type", "scope_id",
                                                                 "issues")}
    values["partner_ids"] = [str(p) for p in form.getlist("partner_ids")]
    try:
        campaign_id = await campaigns.launch(values, organiser)
    except (InvalidInput, NotYours) as exc:
        errors = exc.errors if isinstance(exc, InvalidInput) else {"scope_id": str(exc)}
        return pages.render("organise_new.html", {"values": values, "errors": errors, "organiser": organiser,
                                                  "partners": await _partner_units(campaigns)}, 422)
    return RedirectResponse(f"/campaigns/organise/campaigns/{campaign_id}", status_code=303)


async def _campaign_page(pages: Pages, campaigns: Campaigns, actions: Actions, campaign: Any,
                         organiser: OrganiserScope, *, values: dict[str, Any] | None = None,
                         errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    return pages.render("organise_campaign.html", {
        "campaign": campaign, "asks": await campaigns.asks_of(campaign.id), "counts": await actions.counts(campaign.id),
        "values": values or {"kind": "petition"}, "errors": errors or {}, "kinds": ASK_KINDS,
        "meetings": await campaigns.upcoming_meetings(), "organiser": organiser}, status)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_admin(pages: PagesDep, campaign: OwnCampaign, organiser: Organiser, campaigns: Campaigns,
                         actions: Actions) -> HTMLResponse:
    return await _campaign_page(pages, campaigns, actions, campaign, organiser)


@router.post("/campaigns/{campaign_id}/asks", response_class=HTMLResponse)
async def add_ask(request: Request, pages: PagesDep, campaign_id: str, campaign: OwnCampaign, organiser: Organiser,
                  campaigns: Campaigns, actions: Actions) -> Response:
    form = await request.form()
    values = {k: str(form.get(k, "")) for k in ("kind", "title", "description", "body", "addressee", "goal",
                                                 "letter_subject", "meeting_id", "share_url")}
    try:
        await campaigns.add_ask(campaign_id, values, organiser)
    except InvalidInput as exc:
        return await _campaign_page(pages, campaigns, actions, campaign, organiser, values=values, errors=exc.errors,
                                    status=422)
    return RedirectResponse(f"/campaigns/organise/campaigns/{campaign_id}", status_code=303)


@router.post("/campaigns/{campaign_id}/close")
async def close_campaign(campaign_id: str, campaign: OwnCampaign, organiser: Organiser,
                         campaigns: Campaigns) -> Response:
    await campaigns.close(campaign_id, organiser)
    return RedirectResponse(f"/campaigns/organise/campaigns/{campaign_id}", status_code=303)


@router.get("/pledges", response_class=HTMLResponse)
async def pledge_queue(pages: PagesDep, organiser: Organiser, campaigns: Campaigns, actions: Actions) -> HTMLResponse:
    mine = await campaigns.campaigns_for(organiser)
    rows = await actions.pledges(campaign_ids=[c.id for c in mine], moderation="pending", limit=200)
    return pages.render("organise_pledges.html", {"pledges": rows, "titles": {c.id: c.title for c in mine}})


@router.post("/pledges/{action_id}")
async def moderate_pledge(action_id: str, organiser: Organiser, actions: Actions,
                          decision: Annotated[str, Form()] = "") -> Response:
    try:
        await actions.moderate(action_id, decision, organiser)
    except ActionNotFound:
        raise HTTPException(404, "There is no pledge with that id") from None
    except NotYours as exc:
        raise HTTPException(403, str(exc)) from None
    except InvalidInput as exc:
        raise HTTPException(422, exc.errors["decision"]) from None
    return RedirectResponse("/campaigns/organise/pledges", status_code=303)


async def _long_tail(engagement: Engagement, organiser: OrganiserScope, region: str, group: str,
                     days: int) -> LongTail:
    before = datetime.now(UTC) - timedelta(days=days) if days > 0 else None
    return await engagement.long_tail(organiser, region_id=region or None, group_id=group or None,
                                      joined_before=before)


@router.get("/long-tail", response_class=HTMLResponse)
async def long_tail(pages: PagesDep, organiser: Organiser, engagement: Engagement, campaigns: Campaigns,
                    region: str = "", group: str = "", days: DaysAgo = 0) -> HTMLResponse:
    tail = await _long_tail(engagement, organiser, region, group, days)
    units = await campaigns.units()
    return pages.render("organise_long_tail.html", {
        "tail": tail, "filters": {"region": region, "group": group, "days": days}, "organiser": organiser,
        "regions": [u for u in units if u.kind == "region"], "groups": [u for u in units if u.kind == "group"]})


@router.get("/long-tail.csv")
async def long_tail_csv(organiser: Organiser, engagement: Engagement, region: str = "", group: str = "",
                        days: DaysAgo = 0) -> Response:
    tail = await _long_tail(engagement, organiser, region, group, days)
    rows = [[m["name"], m["email"], m["region"], "; ".join(m["groups"]),
             m["joined_at"].isoformat() if m["joined_at"] else "", m["member_id"]] for m in tail.members]
    return Response(csv_text([["name", "email", "region", "groups", "joined_at", "member_id"], *rows]),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="long-tail.csv"'})


@router.get("/mps", response_class=HTMLResponse)
async def mp_dataset(pages: PagesDep, organiser: Organiser, letters: Letters) -> HTMLResponse:
    n, k = await letters.mp_dataset_size()
    return pages.render("organise_mps.html", {"constituencies": n, "postcodes": k, "errors": {},
                                                "organiser": organiser})


@router.post("/mps", response_class=HTMLResponse)
async def upload_mp_dataset(pages: PagesDep, organiser: Organiser, letters: Letters, file: UploadFile,
                            mode: Annotated[str, Form()] = "replace") -> HTMLResponse:
    if not organiser.is_network:
        raise HTTPException(403, "Only network organisers can change the MP dataset")
    errors: dict[str, str] = {}
    try:
        await letters.load_mp_dataset((await file.read()).decode("utf-8-sig", errors="replace"),
                                  replace=mode != "add")
    except InvalidInput as exc:
        errors = exc.errors
    n, k = await letters.mp_dataset_size()
    return pages.render("organise_mps.html", {"constituencies": n, "postcodes": k, "errors": errors,
                                                "organiser": organiser, "loaded": not errors},
                 422 if errors else 200)


@router.get("/ladder", response_class=HTMLResponse)
async def ladder(pages: PagesDep, organiser: Organiser, engagement: Engagement) -> HTMLResponse:
    return pages.render("organise_ladder.html", {"ladder": await engagement.ladder()})
