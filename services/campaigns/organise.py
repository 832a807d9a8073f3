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
)
from services.campaigns.domain import (
    ASK_KIND_LABELS,
    ASK_KINDS,
    ActionNotFound,
    NotYours,
    validate_campaign,
    validate_ladder,
)
from services.campaigns.engagement import LONG_TAIL_COLUMNS, EngagementService, LongTail
from services.campaigns.views import Pages, PagesDep
from shared.auth import OrganiserScope
from shared.errors import InvalidInput
from shared.exports import csv_chunks, csv_download
from shared.scope_picker import NETWORK, UNKNOWN_CHOICE, choice_value, read_choice, scope_choices, scope_label
from shared.web import MAX_PAGE, DaysAgo

router = APIRouter(prefix="/campaigns/organise", tags=["organiser pages"])


CAMPAIGNS_PAGE = 25


@router.get("", response_class=HTMLResponse)
async def my_campaigns(pages: PagesDep, organiser: Organiser, campaigns: Campaigns, page: str = "1") -> HTMLResponse:
    """The organiser's campaigns, 25 a page (live first, the latest launched first), each with its actions counted
    for the page's campaigns in one query."""
    page_no = min(max(int(page) if page.isdigit() else 1, 1), MAX_PAGE)
    rows, totals, names = await campaigns.organiser_page(organiser, limit=CAMPAIGNS_PAGE + 1,
                                                         offset=(page_no - 1) * CAMPAIGNS_PAGE)
    has_next, rows = len(rows) > CAMPAIGNS_PAGE, rows[:CAMPAIGNS_PAGE]
    for_whom = {r.id: scope_label(r.scope_type, r.scope_id, names) for r in rows}
    return pages.render("organise_list.html", {"campaigns": rows, "totals": totals, "organiser": organiser,
                                               "for_whom": for_whom, "page_no": page_no, "has_next": has_next})


@router.get("/home.json")
async def home_part(organiser: Organiser, campaigns: Campaigns, actions: Actions) -> dict[str, Any]:
    """What the organisers' home (membership's /admin) shows from campaigns: live campaigns and pledges waiting."""
    mine = await campaigns.campaigns_for(organiser)
    pending = await actions.pledges(campaign_ids=[c.id for c in mine], moderation="pending", limit=200)
    return {"live_campaigns": sum(1 for c in mine if c.status == "live"), "pledges_to_moderate": len(pending)}


def _other_problems(values: dict[str, Any]) -> dict[str, str]:
    """What else is wrong with a new campaign whose scope is not one offered, so the form says it all at once."""
    try:
        validate_campaign({**values, "scope_type": NETWORK, "scope_id": None})
    except InvalidInput as exc:
        return exc.errors
    return {}


async def _new_campaign_page(pages: Pages, campaigns: Campaigns, organiser: OrganiserScope, values: dict[str, Any],
                             errors: dict[str, str], status: int = 200) -> HTMLResponse:
    units = await campaigns.units()
    return pages.render("organise_new.html", {
        "values": values, "errors": errors, "organiser": organiser, "scope_groups": scope_choices(units, organiser),
        "partners": [u for u in units if u.kind == "partner"]}, status)


@router.get("/new", response_class=HTMLResponse)
async def new_campaign_form(pages: PagesDep, organiser: Organiser, campaigns: Campaigns) -> HTMLResponse:
    values = {"scope": choice_value(organiser.scope_type, organiser.scope_id), "partner_ids": []}
    return await _new_campaign_page(pages, campaigns, organiser, values, {})


@router.post("/new", response_class=HTMLResponse)
async def new_campaign(request: Request, pages: PagesDep, organiser: Organiser, campaigns: Campaigns) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: str(form.get(k, "")) for k in ("title", "summary", "goal", "scope", "issues")}
    values["partner_ids"] = [str(p) for p in form.getlist("partner_ids")]
    chosen = read_choice(values["scope"], scope_choices(await campaigns.units(), organiser))
    try:
        if chosen is None:
            raise InvalidInput({**_other_problems(values), "scope": UNKNOWN_CHOICE})
        values["scope_type"], values["scope_id"] = chosen
        campaign_id = await campaigns.launch(values, organiser, draft=True)
    except (InvalidInput, NotYours) as exc:
        errors = exc.errors if isinstance(exc, InvalidInput) else {"scope": str(exc)}
        return await _new_campaign_page(pages, campaigns, organiser, values, errors, 422)
    return RedirectResponse(f"/campaigns/organise/campaigns/{campaign_id}", status_code=303)


async def _campaign_page(pages: Pages, campaigns: Campaigns, actions: Actions, campaign: Any,
                         organiser: OrganiserScope, *, values: dict[str, Any] | None = None,
                         errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    """The campaign's page; its ask form shows the fields of the kind chosen (`values["kind"]`), a chooser first."""
    values = values or {}
    return pages.render("organise_campaign.html", {
        "campaign": campaign, "asks": await campaigns.asks_of(campaign.id), "counts": await actions.counts(campaign.id),
        "values": values, "errors": errors or {}, "kinds": ASK_KINDS,
        "kind": values.get("kind") if values.get("kind") in ASK_KIND_LABELS else None,
        "meetings": await campaigns.upcoming_meetings(), "organiser": organiser}, status)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_admin(pages: PagesDep, campaign: OwnCampaign, organiser: Organiser, campaigns: Campaigns,
                         actions: Actions, kind: str = "") -> HTMLResponse:
    """`kind`: the kind of ask chosen in the form's first step (a GET, so it works without JavaScript)."""
    return await _campaign_page(pages, campaigns, actions, campaign, organiser, values={"kind": kind})


@router.get("/campaigns/{campaign_id}/preview", response_class=HTMLResponse)
async def preview(pages: PagesDep, campaign: OwnCampaign, campaigns: Campaigns, actions: Actions) -> HTMLResponse:
    """The public page as a member will see it, marked as a preview (a draft has no public page yet)."""
    names = {u.unit_id: u.name for u in await campaigns.units()}
    return pages.render("campaign.html", {
        "campaign": campaign, "asks": await campaigns.asks_of(campaign.id), "counts": await actions.counts(campaign.id),
        "member": "", "partners": [names.get(p, p) for p in campaign.partner_ids], "closed": None, "preview": True})


async def _publish_page(pages: Pages, campaigns: Campaigns, campaign: Any, errors: dict[str, str],
                        status: int = 200) -> HTMLResponse:
    return pages.render("organise_publish.html", {"campaign": campaign, "asks": await campaigns.asks_of(campaign.id),
                                                  "errors": errors}, status)


@router.get("/campaigns/{campaign_id}/publish", response_class=HTMLResponse)
async def confirm_publish(pages: PagesDep, campaign: OwnCampaign, campaigns: Campaigns) -> HTMLResponse:
    """Publishing announces the campaign to its members: the organiser confirms it on a page of its own first."""
    return await _publish_page(pages, campaigns, campaign, {})


@router.post("/campaigns/{campaign_id}/publish", response_class=HTMLResponse)
async def publish(pages: PagesDep, campaign_id: str, campaign: OwnCampaign, organiser: Organiser,
                  campaigns: Campaigns) -> Response:
    try:
        await campaigns.publish(campaign_id, organiser)
    except InvalidInput as exc:
        return await _publish_page(pages, campaigns, campaign, exc.errors, 422)
    return RedirectResponse(f"/campaigns/organise/campaigns/{campaign_id}", status_code=303)


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


@router.get("/campaigns/{campaign_id}/close", response_class=HTMLResponse)
async def confirm_close(pages: PagesDep, campaign: OwnCampaign, actions: Actions) -> HTMLResponse:
    """Closing ends every ask for good: the organiser confirms it on a page of its own first."""
    total = sum((await actions.counts(campaign.id)).values())
    return pages.render("organise_close.html", {"campaign": campaign, "total": total})


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


def _joined_before(days: int) -> datetime | None:
    return datetime.now(UTC) - timedelta(days=days) if days > 0 else None


async def _long_tail(engagement: Engagement, organiser: OrganiserScope, region: str, group: str,
                     days: int) -> LongTail:
    return await engagement.long_tail(organiser, region_id=region or None, group_id=group or None,
                                      joined_before=_joined_before(days))


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
    rows = engagement.long_tail_rows(organiser, region_id=region or None, group_id=group or None,
                                     joined_before=_joined_before(days))
    return csv_download(csv_chunks(LONG_TAIL_COLUMNS, rows), "long-tail.csv")


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


LADDER_FIELDS = ("level", "label", "min_actions", "min_attended", "min_total", "roles")


def _ladder_rows(form: Any) -> list[dict[str, str]]:
    """The levels as the form sent them (`label-0`, `min_actions-0`, …), in order; a new level's row left empty
    is no level."""
    count = str(form.get("levels", "0"))
    rows = []
    for i in range(min(int(count), 20) if count.isascii() and count.isdigit() else 0):
        row = {f: str(form.get(f"{f}-{i}", "")).strip() for f in LADDER_FIELDS}
        if row["level"] or any(row[f] for f in ("label", "min_actions", "min_attended", "min_total", "roles")):
            rows.append(row)
    return rows


def _as_ladder_input(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """What `validate_ladder` reads: a new level is named after its label; roles are separated by commas."""
    return [{**r, "level": r["level"] or r["label"], "roles": [x for x in r["roles"].split(",")]} for r in rows]


def _ladder_errors(errors: dict[str, str]) -> dict[str, str]:
    """`levels[2]` becomes the third level's name field, so the summary links to it."""
    return {(f"label-{k[7:-1]}" if k.startswith("levels[") else k): v for k, v in errors.items()}


async def _ladder_page(pages: Pages, organiser: OrganiserScope, engagement: EngagementService,
                       rows: list[dict[str, str]], errors: dict[str, str], status: int = 200) -> HTMLResponse:
    blank = {f: "" for f in LADDER_FIELDS}
    return pages.render("organise_ladder.html", {"rows": [*rows, blank], "errors": errors, "organiser": organiser,
                                                 "change": await engagement.ladder_change()}, status)


@router.get("/ladder", response_class=HTMLResponse)
async def ladder(pages: PagesDep, organiser: Organiser, engagement: Engagement) -> HTMLResponse:
    """The ladder's rules (a form for network organisers), and how far moving the members to the last one saved has
    got."""
    rows = [{k: (", ".join(v) if k == "roles" else str(v)) for k, v in r.as_dict().items()}
            for r in await engagement.ladder()]
    return await _ladder_page(pages, organiser, engagement, rows, {})


@router.post("/ladder", response_class=HTMLResponse)
async def change_ladder(request: Request, pages: PagesDep, organiser: Organiser,
                        engagement: Engagement) -> Response:
    """Validate the ladder as edited; when members would change level, say how many and ask first (`confirm`).
    Saved, it is in force at once; the members it moves are moved in the background (the first of them before this
    answers: a small change is done), and the page says how far it has got."""
    if not organiser.is_network:
        raise HTTPException(403, "Only network organisers can change the engagement ladder")
    form = await request.form()
    rows = _ladder_rows(form)
    try:
        new = validate_ladder(_as_ladder_input(rows))
    except InvalidInput as exc:
        return await _ladder_page(pages, organiser, engagement, rows, _ladder_errors(exc.errors), 422)
    moving = await engagement.members_moving(new)
    if moving and form.get("confirm") != "yes":
        return pages.render("organise_ladder_confirm.html", {"rows": rows, "moving": moving, "ladder": new})
    change = await engagement.set_ladder(new, expected=moving)
    return pages.render("organise_ladder_saved.html", {"change": change, "ladder": new})
