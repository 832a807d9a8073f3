"""The organisers' JSON API under /campaigns/api: campaigns and asks, pledge moderation, the MP dataset, the
engagement ladder and the long tail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.campaigns import views
from services.campaigns.deps import Actions, BaseUrl, Campaigns, Engagement, Letters, Organiser, OwnCampaign
from services.campaigns.domain import ActionNotFound, NoConstituency, NotYours, validate_ladder
from shared.auth import OrganiserScope
from shared.errors import InvalidInput
from shared.web import DaysAgo

router = APIRouter(prefix="/campaigns/api", tags=["campaigns (organisers)"])


class AskRequest(BaseModel):
    """One concrete ask: a petition, a pledge, write to your MP, attend a meeting, or share."""

    kind: str
    title: str = ""
    description: str = ""
    body: str = Field(default="", description="petition text, pledge prompt, letter template or share message")
    addressee: str | None = Field(default=None, description="who a petition is addressed to")
    goal: int | None = Field(default=None, description="how many actions the organisers aim for")
    letter_subject: str | None = None
    meeting_id: str | None = None
    share_url: str | None = None


class CampaignRequest(BaseModel):
    title: str = ""
    summary: str = ""
    goal: str = ""
    scope_type: str = "network"
    scope_id: str | None = None
    issues: list[str] = []
    partner_ids: list[str] = []
    asks: list[AskRequest] = []


class ModerationRequest(BaseModel):
    decision: str = Field(description="approved, rejected or pending")


def problem(status: int, message: str, errors: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status)


def invalid(exc: InvalidInput) -> JSONResponse:
    return problem(422, "Some fields need changing: " + "; ".join(exc.errors.values()), exc.errors)


async def _campaign_out(campaigns: Campaigns, actions: Actions, base_url: str, campaign_id: str,
                        status: int = 200) -> JSONResponse:
    row = await campaigns.get_campaign(campaign_id)
    body = views.campaign_json(row, await campaigns.asks_of(campaign_id), await actions.counts(campaign_id), base_url)
    return JSONResponse(body, status_code=status)


@router.post("/campaigns", status_code=201)
async def launch_campaign(body: CampaignRequest, organiser: Organiser, campaigns: Campaigns, actions: Actions,
                          base_url: BaseUrl) -> JSONResponse:
    raw = body.model_dump(exclude={"asks"})
    try:
        campaign_id = await campaigns.launch(raw, organiser, [a.model_dump() for a in body.asks])
    except InvalidInput as exc:
        return invalid(exc)
    except NotYours as exc:
        return problem(403, str(exc))
    return await _campaign_out(campaigns, actions, base_url, campaign_id, 201)


@router.get("/campaigns")
async def list_campaigns(organiser: Organiser, campaigns: Campaigns, base_url: BaseUrl) -> dict[str, Any]:
    rows = await campaigns.campaigns_for(organiser)
    return {"campaigns": [views.campaign_json(r, base=base_url) for r in rows]}


@router.get("/campaigns/{campaign_id}")
async def get_campaign(campaign_id: str, campaign: OwnCampaign, campaigns: Campaigns, actions: Actions,
                       base_url: BaseUrl) -> JSONResponse:
    return await _campaign_out(campaigns, actions, base_url, campaign_id)


@router.post("/campaigns/{campaign_id}/asks", status_code=201)
async def add_ask(campaign_id: str, body: AskRequest, campaign: OwnCampaign, organiser: Organiser,
                  campaigns: Campaigns, base_url: BaseUrl) -> JSONResponse:
    try:
        ask_id = await campaigns.add_ask(campaign_id, body.model_dump(), organiser)
    except InvalidInput as exc:
        return invalid(exc)
    except NotYours as exc:
        return problem(403, str(exc))
    ask = await campaigns.get_ask(ask_id)
    return JSONResponse(views.ask_json(ask, 0, base_url), status_code=201)


@router.post("/campaigns/{campaign_id}/close")
async def close_campaign(campaign_id: str, campaign: OwnCampaign, organiser: Organiser, campaigns: Campaigns,
                         actions: Actions, base_url: BaseUrl) -> JSONResponse:
    await campaigns.close(campaign_id, organiser)
    return await _campaign_out(campaigns, actions, base_url, campaign_id)


@router.get("/pledges")
async def pledges(organiser: Organiser, campaigns: Campaigns, actions: Actions,
                  status: str = "pending") -> dict[str, Any]:
    """Pledges waiting for moderation (or approved / rejected ones) in the organiser's campaigns."""
    mine = [c.id for c in await campaigns.campaigns_for(organiser)]
    rows = await actions.pledges(campaign_ids=mine, moderation=status, limit=500)
    return {"pledges": [{"id": r.id, "campaign_id": r.campaign_id, "ask_id": r.ask_id, "name": r.name,
                         "pledge_text": r.pledge_text, "moderation": r.moderation,
                         "created_at": r.created_at.isoformat()} for r in rows]}


@router.post("/pledges/{action_id}")
async def moderate(action_id: str, body: ModerationRequest, organiser: Organiser,
                   actions: Actions) -> dict[str, Any]:
    try:
        state = await actions.moderate(action_id, body.decision, organiser)
    except ActionNotFound:
        raise HTTPException(404, "There is no pledge with that id") from None
    except NotYours as exc:
        raise HTTPException(403, str(exc)) from None
    except InvalidInput as exc:
        raise HTTPException(422, exc.errors["decision"]) from None
    return {"id": action_id, "moderation": state}


def _network_only(organiser: OrganiserScope, what: str) -> None:
    if not organiser.is_network:
        raise HTTPException(403, f"Only network organisers can {what}")


@router.put("/mps")
async def load_mps(request: Request, organiser: Organiser, letters: Letters,
                   replace: bool = True) -> JSONResponse:
    """Replace (or with `replace=false`, add to) the MP dataset: the CSV of docs/campaigns.md as the body."""
    _network_only(organiser, "change the MP dataset")
    csv_text = (await request.body()).decode("utf-8-sig", errors="replace")
    try:
        n, k = await letters.load_mp_dataset(csv_text, replace=replace)
    except InvalidInput as exc:
        return problem(422, exc.errors["file"], exc.errors)
    return JSONResponse({"constituencies": n, "postcodes": k})


@router.get("/mps/lookup")
async def lookup_mp(postcode: str, organiser: Organiser, letters: Letters) -> dict[str, Any]:
    try:
        c = await letters.constituency_for(postcode)
    except NoConstituency as exc:
        raise HTTPException(404, exc.errors["postcode"]) from None
    return {"code": c.code, "name": c.name, "mp_name": c.mp_name, "mp_party": c.mp_party, "mp_email": c.mp_email}


@router.get("/engagement/ladder")
async def get_ladder(organiser: Organiser, engagement: Engagement) -> dict[str, Any]:
    """The ladder in force, and how far moving the members to the last one saved has got (`change`)."""
    change = await engagement.ladder_change()
    return {"levels": [r.as_dict() for r in await engagement.ladder()],
            "change": change.as_dict() if change else None}


@router.put("/engagement/ladder")
async def set_ladder(organiser: Organiser, engagement: Engagement,
                     levels: Annotated[list[dict[str, Any]], Body(embed=True)]) -> JSONResponse:
    """Replace the ladder (lowest level first), in force at once; the members it moves are moved and each move
    published. 200 when all have moved (`members_changed`), 202 while the rest move in the background (`change`;
    GET this address to follow it)."""
    _network_only(organiser, "change the engagement ladder")
    try:
        ladder = validate_ladder(levels)
    except InvalidInput as exc:
        return invalid(exc)
    change = await engagement.set_ladder(ladder)
    return JSONResponse({"levels": [r.as_dict() for r in ladder], "members_changed": change.moved,
                         "change": change.as_dict()}, 202 if change.moving else 200)


@router.get("/engagement/members/{member_id}")
async def member_engagement(member_id: str, organiser: Organiser, engagement: Engagement,
                            campaigns: Campaigns) -> dict[str, Any]:
    row = await engagement.member(member_id)
    if row is None:
        raise HTTPException(404, "No member with that id has reached the campaigns service")
    ancestors = await campaigns.member_places(row.group_ids)
    if not organiser.covers("member", None, row.region_id, ancestors=ancestors + list(row.subteam_ids)):
        raise HTTPException(403, f"You organise {organiser.describe()}; this member is not in it")
    return {"member_id": row.member_id, "level": row.level, "level_since": row.level_since.isoformat()
            if row.level_since else None, "actions": row.actions, "attended": row.attended, "status": row.status,
            "region_id": row.region_id, "group_ids": list(row.group_ids)}


@router.get("/engagement/long-tail")
async def long_tail(organiser: Organiser, engagement: Engagement, region: str = "", group: str = "",
                    joined_days_ago: DaysAgo = 0) -> dict[str, Any]:
    """Members who joined (at least `joined_days_ago` days ago) and have taken no action nor come to a meeting."""
    before = datetime.now(UTC) - timedelta(days=joined_days_ago) if joined_days_ago > 0 else None
    tail = await engagement.long_tail(organiser, region_id=region or None, group_id=group or None,
                                      joined_before=before)
    return {"total": tail.total, "by_place": tail.by_place,
            "members": [{**m, "joined_at": m["joined_at"].isoformat() if m["joined_at"] else None}
                        for m in tail.members]}
