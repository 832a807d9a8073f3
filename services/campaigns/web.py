"""Public pages: the campaigns at /campaigns, a page per campaign and per ask with its action form, live counts.

Forms work without JavaScript; a bot that fills the hidden `website` field sees success and nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.campaigns.deps import Actions, BaseUrl, Campaigns, ClientIp, Letters, LimitsDep, SecretKey
from services.campaigns.domain import (
    ACTION_PER_EMAIL,
    ACTION_PER_IP,
    LETTER_PER_EMAIL,
    LETTER_PER_IP,
    ActionNotFound,
    ActionRefused,
    AskNotFound,
    CampaignNotFound,
    NoConstituency,
    closed_reason,
    validate_action,
)
from services.campaigns.views import Pages, PagesDep, member_from_token
from shared import tokens
from shared.contact import normalise_email, normalise_postcode
from shared.errors import InvalidInput

router = APIRouter(tags=["public pages"])


def _not_found(pages: Pages) -> HTMLResponse:
    return pages.message("Campaign not found", "There is no campaign or action at this address.", 404)


@router.get("/campaigns", response_class=HTMLResponse)
async def listing(pages: PagesDep, campaigns: Campaigns, actions: Actions) -> HTMLResponse:
    rows = await campaigns.list_campaigns(limit=200)
    totals = {r.id: sum((await actions.counts(r.id)).values()) for r in rows}
    return pages.render("campaigns_list.html", {
        "live": [r for r in rows if r.status == "live"], "closed": [r for r in rows if r.status == "closed"][:20],
        "totals": totals})


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_page(pages: PagesDep, campaigns: Campaigns, actions: Actions, campaign_id: str,
                        member: str = "") -> HTMLResponse:
    try:
        campaign = await campaigns.public_campaign(campaign_id)
    except CampaignNotFound:
        return _not_found(pages)
    names = {u.unit_id: u.name for u in await campaigns.units()}
    return pages.render("campaign.html", {
        "campaign": campaign, "asks": await campaigns.asks_of(campaign_id), "counts": await actions.counts(campaign_id),
        "member": member, "partners": [names.get(p, p) for p in campaign.partner_ids],
        "closed": closed_reason(campaign_status=campaign.status, ask_status="open")})


@router.get("/campaigns/{campaign_id}/counts.json")
async def live_counts(actions: Actions, campaign_id: str) -> JSONResponse:
    """Actions per ask, for the pages' live counts (they refresh from this without reloading)."""
    counts = await actions.counts(campaign_id)
    return JSONResponse({"campaign_id": campaign_id, "counts": counts, "total": sum(counts.values())},
                        headers={"Cache-Control": "no-store"})


@dataclass
class AskPages:
    """An ask's pages: its form (with what was typed and what to fix), the letter step, the thanks page."""

    pages: PagesDep
    campaigns: Campaigns
    actions: Actions
    letters: Letters
    base_url: BaseUrl
    secret_key: SecretKey
    limits: LimitsDep
    ip: ClientIp

    async def load(self, campaign_id: str, ask_id: str) -> tuple[Any, Any] | None:
        try:
            campaign = await self.campaigns.public_campaign(campaign_id)
            ask = await self.campaigns.get_ask(ask_id, campaign_id)
        except (CampaignNotFound, AskNotFound):
            return None
        return campaign, ask

    def campaign_url(self, campaign: Any) -> str:
        return f"{self.base_url}/campaigns/{campaign.id}"

    async def render(self, campaign: Any, ask: Any, *, values: dict[str, Any], errors: dict[str, str],
                     status: int = 200, refused: str | None = None, template: str = "ask.html",
                     extra: dict[str, Any] | None = None) -> HTMLResponse:
        counts = await self.actions.counts(campaign.id)
        closed = refused or closed_reason(campaign_status=campaign.status, ask_status=ask.status)
        context = {
            "campaign": campaign, "ask": ask, "count": counts.get(ask.id, 0), "values": values, "errors": errors,
            "closed": closed, "meeting": await self.campaigns.meeting(ask.meeting_id) if ask.kind == "attend" else None,
            "pledges": await self.actions.pledges(ask_id=ask.id, limit=50) if ask.kind == "pledge" else [],
            "share_url": ask.share_url or self.campaign_url(campaign),
        }
        context.update(extra or {})
        return self.pages.render(template, context, status)

    async def letter_context(self, values: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"constituency": await self.letters.constituency_for(values.get("postcode", ""))}
        except NoConstituency:
            return {"constituency": None}

    async def find_mp(self, campaign: Any, ask: Any, values: dict[str, Any], member_id: str | None) -> HTMLResponse:
        """Step one of writing to an MP: who is writing, and their postcode; then the letter, ready to edit."""
        refused = closed_reason(campaign_status=campaign.status, ask_status=ask.status)
        if refused:
            return await self.render(campaign, ask, values=values, errors={}, status=409, refused=refused)
        errors: dict[str, str] = {}
        try:
            validate_action("write_to_mp", member_id=member_id, name=values["name"], email=values["email"],
                            postcode=values["postcode"], join_network=values["join_network"],
                            letter_subject="-", letter_body="-")
        except InvalidInput as exc:
            errors = exc.errors
        if errors:
            return await self.render(campaign, ask, values=values, errors=errors, status=422)
        try:
            constituency = await self.letters.constituency_for(values["postcode"])
        except NoConstituency as exc:
            return await self.render(campaign, ask, values=values, errors=exc.errors, status=422)
        values = {**values, "postcode": normalise_postcode(values["postcode"]),
                  "letter_subject": ask.letter_subject or "",
                  "letter_body": self.letters.letter_draft(ask, constituency, name=" ".join(values["name"].split()),
                                                           postcode=normalise_postcode(values["postcode"]))}
        return await self.render(campaign, ask, values=values, errors={}, template="letter.html",
                                 extra={"constituency": constituency})


AskPagesDep = Annotated[AskPages, Depends()]


@router.get("/campaigns/{campaign_id}/asks/{ask_id}", response_class=HTMLResponse)
async def ask_page(asks: AskPagesDep, campaign_id: str, ask_id: str, member: str = "") -> HTMLResponse:
    found = await asks.load(campaign_id, ask_id)
    if found is None:
        return _not_found(asks.pages)
    return await asks.render(*found, values={"member": member}, errors={})


@router.post("/campaigns/{campaign_id}/asks/{ask_id}", response_class=HTMLResponse)
async def take_action(
    asks: AskPagesDep,
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
    found = await asks.load(campaign_id, ask_id)
    if found is None:
        return _not_found(asks.pages)
    campaign, ask = found
    thanks = f"/campaigns/{campaign_id}/asks/{ask_id}/thanks"
    if website:
        return RedirectResponse(thanks, status_code=303)  # look like success to a bot; store nothing
    values = {"name": name, "email": email, "postcode": postcode, "join_network": bool(join_network),
              "comment": comment, "pledge_text": pledge_text, "letter_subject": letter_subject,
              "letter_body": letter_body, "member": member}
    sending = ask.kind != "write_to_mp" or step == "send"  # a letter's first step only finds the MP
    address = normalise_email(email)
    per_ip = [ACTION_PER_IP] + ([LETTER_PER_IP] if ask.kind == "write_to_mp" and sending else [])
    per_address = LETTER_PER_EMAIL if ask.kind == "write_to_mp" else ACTION_PER_EMAIL
    address_allowed = await asks.limits.check(asks.ip, per_ip, [(per_address, address)] if address and sending else [])
    member_id = member_from_token(asks.secret_key, member)
    if ask.kind in ("share", "attend"):
        return RedirectResponse(f"/campaigns/{campaign_id}/asks/{ask_id}", status_code=303)
    if not sending:
        return await asks.find_mp(campaign, ask, values, member_id)
    try:
        form = validate_action(ask.kind, member_id=member_id, name=name, email=email, postcode=postcode,
                               join_network=bool(join_network), comment=comment, pledge_text=pledge_text,
                               letter_subject=letter_subject, letter_body=letter_body)
        if address_allowed:  # over its limit, that address gets no more email from us: answer as always
            await asks.actions.take_action(ask_id, form, source="form")
    except ActionRefused as exc:
        return await asks.render(campaign, ask, values=values, errors={}, status=409, refused=str(exc))
    except InvalidInput as exc:
        template = "letter.html" if ask.kind == "write_to_mp" and "postcode" not in exc.errors else "ask.html"
        extra = await asks.letter_context(values) if template == "letter.html" else None
        return await asks.render(campaign, ask, values=values, errors=exc.errors, status=422, template=template,
                                 extra=extra)
    # The same answer for a first time and a repeat, whoever's address it was (decision "repeats reveal nothing").
    return RedirectResponse(thanks, status_code=303)


@router.post("/campaigns/{campaign_id}/asks/{ask_id}/share")
async def share(asks: AskPagesDep, campaign_id: str, ask_id: str, channel: Annotated[str, Form()] = "",
                member: Annotated[str, Form()] = "", website: Annotated[str, Form()] = "") -> Response:
    """Count the share, then send the person on to the place they chose to share on."""
    found = await asks.load(campaign_id, ask_id)
    if found is None:
        return _not_found(asks.pages)
    campaign, ask = found
    target = share_link(channel, ask.body or campaign.title, ask.share_url or asks.campaign_url(campaign),
                        campaign.title)
    if website or ask.kind != "share" or target is None:
        return RedirectResponse(target or f"/campaigns/{campaign_id}/asks/{ask_id}", status_code=303)
    await asks.limits.check(asks.ip, [ACTION_PER_IP])
    member_id = member_from_token(asks.secret_key, member)
    try:
        form = validate_action("share", member_id=member_id, channel=channel)
        await asks.actions.take_action(ask_id, form, source="form")
    except ActionRefused as exc:
        return await asks.render(campaign, ask, values={}, errors={}, status=409, refused=str(exc))
    except InvalidInput as exc:
        return await asks.render(campaign, ask, values={}, errors=exc.errors, status=422)
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
async def thanks(asks: AskPagesDep, campaign_id: str, ask_id: str) -> HTMLResponse:
    found = await asks.load(campaign_id, ask_id)
    if found is None:
        return _not_found(asks.pages)
    campaign, ask = found
    others = [a for a in await asks.campaigns.asks_of(campaign_id) if a.id != ask_id and a.status == "open"]
    return asks.pages.render("thanks.html", {
        "campaign": campaign, "ask": ask, "count": (await asks.actions.counts(campaign_id))
        .get(ask_id, 0), "next_asks": others if campaign.status == "live" else []})


# A letter to an MP, confirmed by its writer from the link emailed to them ----------------------------------
@dataclass
class LetterPages:
    """The page a letter's confirmation link opens: GET shows the letter (mail scanners follow links, so
    opening it sends nothing), its button POSTs the confirmation."""

    pages: PagesDep
    campaigns: Campaigns
    actions: Actions
    secret_key: SecretKey
    limits: LimitsDep
    ip: ClientIp

    async def letter(self, token: str) -> Any | None:
        try:
            payload = tokens.verify(self.secret_key, tokens.CONFIRM_LETTER, token, tokens.CONFIRM_LETTER_MAX_AGE_S)
            return await self.actions.letter(str(payload["a"]))
        except (tokens.InvalidToken, ActionNotFound, KeyError, TypeError):
            return None

    def unknown(self) -> HTMLResponse:
        return self.pages.message("Link not recognised", "This link to confirm a letter is not valid or has "
                                  "expired. You can write your letter again from the campaign's page.", 404)

    async def render(self, letter: Any, token: str, *, sent: bool, status: int = 200,
                     refused: str | None = None) -> HTMLResponse:
        campaign = await self.campaigns.get_campaign(letter.campaign_id)
        return self.pages.render("confirm_letter.html", {"letter": letter, "campaign": campaign, "sent": sent,
                                                        "refused": refused, "token": token}, status)


LetterPagesDep = Annotated[LetterPages, Depends()]


@router.get("/campaigns/letters/{token}", response_class=HTMLResponse)
async def letter_to_confirm(letters: LetterPagesDep, token: str) -> HTMLResponse:
    letter = await letters.letter(token)
    if letter is None:
        return letters.unknown()
    return await letters.render(letter, token, sent=letter.letter_confirmed_at is not None)


@router.post("/campaigns/letters/{token}", response_class=HTMLResponse)
async def confirm_letter(letters: LetterPagesDep, token: str) -> HTMLResponse:
    await letters.limits.check(letters.ip, [ACTION_PER_IP])
    letter = await letters.letter(token)
    if letter is None:
        return letters.unknown()
    try:
        await letters.actions.confirm_letter(letter.id)
    except ActionRefused as exc:
        return await letters.render(letter, token, sent=False, status=409, refused=str(exc))
    return await letters.render(await letters.actions.letter(letter.id), token, sent=True)
