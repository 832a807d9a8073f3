"""Public pages: the campaigns at /campaigns, a page per campaign and per ask with its action form, live counts.

Forms work without JavaScript; a bot that fills the hidden `website` field sees success and nothing is stored.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.campaigns import views
from services.campaigns.domain import (
    ActionRefused,
    NoConstituency,
    closed_reason,
    validate_action,
)
from services.campaigns.service import AskNotFound, CampaignNotFound
from shared.contact import normalise_postcode
from shared.errors import InvalidInput

router = APIRouter(tags=["public pages"])


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return views.templates(request).TemplateResponse(request, name, context, status_code=status)


def _message(request: Request, title: str, message: str, status: int) -> HTMLResponse:
    return _page(request, "message.html", {"title": title, "message": message}, status)


def _not_found(request: Request) -> HTMLResponse:
    return _message(request, "Campaign not found", "There is no campaign or action at this address.", 404)


async def _partners(request: Request, ids: list[str]) -> list[str]:
    names = {u.unit_id: u.name for u in await views.service(request).units()}
    return [names.get(p, p) for p in ids]


@router.get("/campaigns", response_class=HTMLResponse)
async def listing(request: Request) -> HTMLResponse:
    svc = views.service(request)
    rows = await svc.list_campaigns(limit=200)
    totals = {r.id: sum((await svc.counts(r.id)).values()) for r in rows}
    return _page(request, "campaigns_list.html", {
        "live": [r for r in rows if r.status == "live"], "closed": [r for r in rows if r.status == "closed"][:20],
        "totals": totals})


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_page(request: Request, campaign_id: str, member: str = "") -> HTMLResponse:
    svc = views.service(request)
    try:
        campaign = await svc.get_campaign(campaign_id)
    except CampaignNotFound:
        return _not_found(request)
    asks = await svc.asks_of(campaign_id)
    return _page(request, "campaign.html", {
        "campaign": campaign, "asks": asks, "counts": await svc.counts(campaign_id), "member": member,
        "partners": await _partners(request, list(campaign.partner_ids)),
        "closed": closed_reason(campaign_status=campaign.status, ask_status="open")})


@router.get("/campaigns/{campaign_id}/counts.json")
async def live_counts(request: Request, campaign_id: str) -> JSONResponse:
    """Actions per ask, for the pages' live counts (they refresh from this without reloading)."""
    counts = await views.service(request).counts(campaign_id)
    return JSONResponse({"campaign_id": campaign_id, "counts": counts, "total": sum(counts.values())},
                        headers={"Cache-Control": "no-store"})


async def _load(request: Request, campaign_id: str, ask_id: str) -> tuple[Any, Any] | None:
    svc = views.service(request)
    try:
        campaign = await svc.get_campaign(campaign_id)
        ask = await svc.get_ask(ask_id, campaign_id)
    except (CampaignNotFound, AskNotFound):
        return None
    return campaign, ask


async def _render_ask(request: Request, campaign: Any, ask: Any, *, values: dict[str, Any], errors: dict[str, str],
                      status: int = 200, refused: str | None = None, template: str = "ask.html",
                      extra: dict[str, Any] | None = None) -> HTMLResponse:
    svc = views.service(request)
    counts = await svc.counts(campaign.id)
    closed = refused or closed_reason(campaign_status=campaign.status, ask_status=ask.status)
    context = {
        "campaign": campaign, "ask": ask, "count": counts.get(ask.id, 0), "values": values, "errors": errors,
        "closed": closed, "meeting": await svc.meeting(ask.meeting_id) if ask.kind == "attend" else None,
        "pledges": await svc.pledges(ask_id=ask.id, limit=50) if ask.kind == "pledge" else [],
        "share_url": ask.share_url or f"{views.base_url(request)}/campaigns/{campaign.id}",
    }
    context.update(extra or {})
    return _page(request, template, context, status)


@router.get("/campaigns/{campaign_id}/asks/{ask_id}", response_class=HTMLResponse)
async def ask_page(request: Request, campaign_id: str, ask_id: str, member: str = "") -> HTMLResponse:
    found = await _load(request, campaign_id, ask_id)
    if found is None:
        return _not_found(request)
    return await _render_ask(request, *found, values={"member": member}, errors={})


@router.post("/campaigns/{campaign_id}/asks/{ask_id}", response_class=HTMLResponse)
async def take_action(
    request: Request,
    campaign_id: str,
    ask_id: str,
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    postcode: Annotated[str, Form()] = "",
    join_network: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    pledge_text: Annotated[str, Form()] = "",
    letter_subject: Annotated[str, Form()] = "",
    letter_body: Annotated[str, Form()] = "",
    step: Annotated[str, Form()] = "",
    member: Annotated[str, Form()] = "",
    website: Annotated[str, Form()] = "",  # honeypot: people never see it, bots fill it
) -> Response:
    found = await _load(request, campaign_id, ask_id)
    if found is None:
        return _not_found(request)
    campaign, ask = found
    thanks = f"/campaigns/{campaign_id}/asks/{ask_id}/thanks"
    if website:
        return RedirectResponse(thanks, status_code=303)  # look like success to a bot; store nothing
    svc = views.service(request)
    values = {"name": name, "email": email, "postcode": postcode, "join_network": bool(join_network),
              "comment": comment, "pledge_text": pledge_text, "letter_subject": letter_subject,
              "letter_body": letter_body, "member": member}
    member_id = views.member_from_token(views.secret_key(request), member)
    if ask.kind in ("share", "attend"):
        return RedirectResponse(f"/campaigns/{campaign_id}/asks/{ask_id}", status_code=303)
    if ask.kind == "write_to_mp" and step != "send":
        return await _find_mp(request, campaign, ask, values, member_id)
    try:
        form = validate_action(ask.kind, member_id=member_id, name=name, email=email, postcode=postcode,
                               join_network=bool(join_network), comment=comment, pledge_text=pledge_text,
                               letter_subject=letter_subject, letter_body=letter_body)
        outcome = await svc.take_action(ask_id, form, source="form")
    except ActionRefused as exc:
        return await _render_ask(request, campaign, ask, values=values, errors={}, status=409, refused=str(exc))
    except InvalidInput as exc:
        template = "letter.html" if ask.kind == "write_to_mp" and "postcode" not in exc.errors else "ask.html"
        extra = await _letter_context(request, values) if template == "letter.html" else None
        return await _render_ask(request, campaign, ask, values=values, errors=exc.errors, status=422,
                                 template=template, extra=extra)
    query = {"already": "1"} if outcome.already else {}
    return RedirectResponse(thanks + (f"?{urlencode(query)}" if query else ""), status_code=303)


async def _letter_context(request: Request, values: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"constituency": await views.service(request).constituency_for(values.get("postcode", ""))}
    except NoConstituency:
        return {"constituency": None}


async def _find_mp(request: Request, campaign: Any, ask: Any, values: dict[str, Any],
                   member_id: str | None) -> HTMLResponse:
    """Step one of writing to an MP: who is writing, and their postcode; then the letter, ready to edit."""
    refused = closed_reason(campaign_status=campaign.status, ask_status=ask.status)
    if refused:
        return await _render_ask(request, campaign, ask, values=values, errors={}, status=409, refused=refused)
    errors: dict[str, str] = {}
    try:
        validate_action("write_to_mp", member_id=member_id, name=values["name"], email=values["email"],
                        postcode=values["postcode"], join_network=values["join_network"],
                        letter_subject="-", letter_body="-")
    except InvalidInput as exc:
        errors = exc.errors
    if errors:
        return await _render_ask(request, campaign, ask, values=values, errors=errors, status=422)
    svc = views.service(request)
    try:
        constituency = await svc.constituency_for(values["postcode"])
    except NoConstituency as exc:
        return await _render_ask(request, campaign, ask, values=values, errors=exc.errors, status=422)
    values = {**values, "postcode": normalise_postcode(values["postcode"]),
              "letter_subject": ask.letter_subject or "",
              "letter_body": svc.letter_draft(ask, constituency, name=" ".join(values["name"].split()),
                                              postcode=normalise_postcode(values["postcode"]))}
    return await _render_ask(request, campaign, ask, values=values, errors={}, template="letter.html",
                             extra={"constituency": constituency})


@router.post("/campaigns/{campaign_id}/asks/{ask_id}/share")
async def share(request: Request, campaign_id: str, ask_id: str, channel: Annotated[str, Form()] = "",
                member: Annotated[str, Form()] = "", website: Annotated[str, Form()] = "") -> Response:
    """Count the share, then send the person on to the place they chose to share on."""
    found = await _load(request, campaign_id, ask_id)
    if found is None:
        return _not_found(request)
    campaign, ask = found
    target = share_link(channel, ask.body or campaign.title,
                        ask.share_url or f"{views.base_url(request)}/campaigns/{campaign.id}", campaign.title)
    if website or ask.kind != "share" or target is None:
        return RedirectResponse(target or f"/campaigns/{campaign_id}/asks/{ask_id}", status_code=303)
    member_id = views.member_from_token(views.secret_key(request), member)
    try:
        form = validate_action("share", member_id=member_id, channel=channel)
        await views.service(request).take_action(ask_id, form, source="form")
    except ActionRefused as exc:
        return await _render_ask(request, campaign, ask, values={}, errors={}, status=409, refused=str(exc))
    except InvalidInput as exc:
        return await _render_ask(request, campaign, ask, values={}, errors=exc.errors, status=422)
    return RedirectResponse(target, status_code=303)


def share_link(channel: str, message: str, url: str, title: str) -> str | None:
    text = f"{message} {url}".strip()
    return {
        "email": f"mailto:?{urlencode({'subject': title, 'body': text}, quote_via=quote)}",
        "whatsapp": f"https://wa.me/?{urlencode({'text': text}, quote_via=quote)}",
        "bluesky": f"https://bsky.app/intent/compose?{urlencode({'text': text}, quote_via=quote)}",
        "facebook": f"https://www.facebook.com/sharer/sharer.php?{urlencode({'u': url}, quote_via=quote)}",
        "x": f"https://x.com/intent/post?{urlencode({'text': message, 'url': url}, quote_via=quote)}",
    }.get(channel)


@router.get("/campaigns/{campaign_id}/asks/{ask_id}/thanks", response_class=HTMLResponse)
async def thanks(request: Request, campaign_id: str, ask_id: str, already: str = "") -> HTMLResponse:
    found = await _load(request, campaign_id, ask_id)
    if found is None:
        return _not_found(request)
    campaign, ask = found
    svc = views.service(request)
    asks = [a for a in await svc.asks_of(campaign_id) if a.id != ask_id and a.status == "open"]
    return _page(request, "thanks.html", {
        "campaign": campaign, "ask": ask, "already": bool(already), "count": (await svc.counts(campaign_id))
        .get(ask_id, 0), "next_asks": asks if campaign.status == "live" else []})
