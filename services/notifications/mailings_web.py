"""Organisers' mailings pages, under /notifications/organise/mailings: the list, compose (subject, Markdown, the
audience with its live count), preview as a member, a test to yourself, send now or at a time (asked first),
and the report. Also the click counter every mailing's web links go through: /notifications/r/<token>.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from services.notifications.domain import (
    MailingAudience,
    audience_name_errors,
    mailing_errors,
    mailing_is_editable,
    parse_mailing_audience,
)
from services.notifications.mailings import Mailings
from services.notifications.saved_audiences import SavedAudiences
from services.notifications.web import Organiser, _page
from shared.auth import OrganiserScope
from shared.scope_picker import KIND_WORDS
from shared.web import MAX_PAGE, page_count

router = APIRouter(prefix="/notifications/organise/mailings", tags=["organiser pages"])
clicks_router = APIRouter(tags=["mailings"])
# Times organisers type are the network's local time.
NETWORK_TZ = ZoneInfo("Europe/London")
BASE = "/notifications/organise/mailings"
MAILINGS_PER_PAGE = 50
DAY_FIELDS = ("joined_within_days", "took_part_within_days", "quiet_for_days")


def _mailings(request: Request) -> Mailings:
    return request.app.state.mailings  # type: ignore[no-any-return]


MailingsDep = Annotated[Mailings, Depends(_mailings)]


class AudienceCount(BaseModel):
    count: int


def _audience_from(
    units: list[str],
    interests: list[str],
    levels: list[str],
    days: str,
    exclude: list[str],
    allowed: set[str],
    took_part: str = "",
    quiet: str = "",
) -> tuple[MailingAudience, dict[str, str]]:
    return parse_mailing_audience(
        units,
        interests,
        levels,
        days,
        exclude,
        allowed_units=allowed,
        took_part_within_days=took_part,
        quiet_for_days=quiet,
    )


def form_audience(form: FormData, allowed: set[str]) -> tuple[MailingAudience, dict[str, str]]:
    def many(name: str) -> list[str]:
        return [str(v) for v in form.getlist(name)]

    return _audience_from(
        many("unit"),
        many("interest"),
        many("level"),
        str(form.get("joined_within_days", "")),
        many("exclude"),
        allowed,
        str(form.get("took_part_within_days", "")),
        str(form.get("quiet_for_days", "")),
    )


def checked_audience(chosen: MailingAudience, allowed: set[str]) -> tuple[MailingAudience, dict[str, str]]:
    """A stored audience checked again as if typed: a place the organiser no longer organises is refused."""
    return _audience_from(
        list(chosen.unit_ids),
        list(chosen.interests),
        list(chosen.levels),
        str(chosen.joined_within_days or ""),
        list(chosen.exclude_unit_ids),
        allowed,
        str(chosen.took_part_within_days or ""),
        str(chosen.quiet_for_days or ""),
    )


async def _mailing(mailings: Mailings, who: OrganiserScope, mailing_id: str) -> Any:
    async with mailings.uows.begin() as uow:
        row = await mailings.get(uow.session, who, mailing_id)
    if row is None:
        raise HTTPException(404, "No mailing of yours has this address")
    return row


async def _compose(
    request: Request,
    who: OrganiserScope,
    mailings: Mailings,
    mailing: Any,
    values: dict[str, Any],
    audience: MailingAudience,
    errors: dict[str, str],
    status: int = 200,
    saved: str = "",
    used_name: str = "",
) -> HTMLResponse:
    async with mailings.uows.begin() as uow:
        context = await audience_context(uow.session, who, mailings, audience)
        context["saved_audiences"] = await SavedAudiences(mailings).list_for(uow.session, who)
    return await _page(
        request,
        "organise_mailing.html",
        {
            **context,
            "organiser": who,
            "mailing": mailing,
            "values": values,
            "errors": errors,
            "saved": saved,
            "used_name": used_name,
        },
        status,
    )


async def audience_context(
    session: AsyncSession, who: OrganiserScope, mailings: Mailings, audience: MailingAudience
) -> dict[str, Any]:
    """What a page with the audience fields shows: the choices by name, the chosen ones, the live count."""
    units = await mailings.units_for(session, who)
    interests, levels = await mailings.choices(session)
    return {
        "audience": audience,
        "unit_items": [(u.unit_id, f"{u.name} ({KIND_WORDS.get(u.kind, u.kind)})") for u in units],
        "interest_items": [(i, i) for i in interests],
        "level_items": [(level, level.replace("_", " ").capitalize()) for level in levels],
        "count": await mailings.count(session, who, audience),
    }


@router.get("", response_class=HTMLResponse)
async def list_mailings(request: Request, organiser: Organiser, mailings: MailingsDep, page: int = 1) -> HTMLResponse:
    """The mailings the organiser may see, newest first, `MAILINGS_PER_PAGE` a page; times in UK time."""
    page = min(max(1, page), MAX_PAGE)
    async with mailings.uows.begin() as uow:
        rows, total = await mailings.page_for(uow.session, organiser, MAILINGS_PER_PAGE, (page - 1) * MAILINGS_PER_PAGE)
        pages = page_count(total, MAILINGS_PER_PAGE)
        if page > pages:  # past the end (an old link): the last page
            page = pages
            rows, total = await mailings.page_for(
                uow.session, organiser, MAILINGS_PER_PAGE, (page - 1) * MAILINGS_PER_PAGE
            )
    return await _page(
        request,
        "organise_mailings.html",
        {"organiser": organiser, "mailings": rows, "page": page, "pages": pages, "total": total, "tz": NETWORK_TZ},
    )


@router.get("/new", response_class=HTMLResponse)
async def new_mailing(request: Request, organiser: Organiser, mailings: MailingsDep) -> HTMLResponse:
    return await _compose(request, organiser, mailings, None, {}, MailingAudience(), {})


@router.get("/count", response_model=AudienceCount, responses={422: {"description": "Not a valid audience"}})
async def audience_count(
    organiser: Organiser,
    mailings: MailingsDep,
    unit: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI reads the default, never mutates it)
    interest: Annotated[list[str], Query()] = [],  # noqa: B006
    level: Annotated[list[str], Query()] = [],  # noqa: B006
    joined_within_days: str = "",
    exclude: Annotated[list[str], Query()] = [],  # noqa: B006
    took_part_within_days: str = "",
    quiet_for_days: str = "",
) -> JSONResponse:
    """How many people this audience reaches now, consent and suppressions applied (the compose page's live
    count)."""
    async with mailings.uows.begin() as uow:
        allowed = {u.unit_id for u in await mailings.units_for(uow.session, organiser)}
        audience, errors = _audience_from(
            unit, interest, level, joined_within_days, exclude, allowed, took_part_within_days, quiet_for_days
        )
        if errors:
            return JSONResponse({"detail": " ".join(errors.values())}, status_code=422)
        return JSONResponse({"count": await mailings.count(uow.session, organiser, audience)})


async def _save(request: Request, organiser: OrganiserScope, mailings: Mailings, mailing: Any) -> Response:
    form = await request.form()
    subject, body = str(form.get("subject", "")), str(form.get("body", ""))
    async with mailings.uows.begin() as uow:
        allowed = {u.unit_id for u in await mailings.units_for(uow.session, organiser)}
    audience, errors = form_audience(form, allowed)
    values = {
        "subject": subject,
        "body": body,
        "audience_name": str(form.get("audience_name", "")),
        **{f: str(form.get(f, "")) for f in DAY_FIELDS},
    }
    action = form.get("action")
    if action == "count":
        return await _compose(request, organiser, mailings, mailing, values, audience, errors, 422 if errors else 200)
    if action == "use_audience":
        return await _use_audience(request, organiser, mailings, mailing, values, str(form.get("saved_audience", "")))
    if action == "save_audience":
        return await _save_audience(request, organiser, mailings, mailing, values, audience, errors)
    errors.update(mailing_errors(subject, body))
    if errors:
        return await _compose(request, organiser, mailings, mailing, values, audience, errors, 422)
    async with mailings.uows.begin() as uow:
        mailing_id = await mailings.save(uow, organiser, mailing.id if mailing else None, subject, body, audience)
    return RedirectResponse(f"{BASE}/{mailing_id}?saved=draft", status_code=303)


async def _use_audience(
    request: Request, who: OrganiserScope, mailings: Mailings, mailing: Any, values: dict[str, Any], audience_id: str
) -> Response:
    """The compose page again with a saved audience chosen (the subject and words as they were typed)."""
    saved = SavedAudiences(mailings)
    async with mailings.uows.begin() as uow:
        row = await saved.get(uow.session, who, audience_id) if audience_id else None
        allowed = {u.unit_id for u in await mailings.units_for(uow.session, who)}
    if row is None:
        errors = {"saved_audience": "Choose one of your saved audiences from the list"}
        return await _compose(request, who, mailings, mailing, values, MailingAudience(), errors, 422)
    audience, errors = checked_audience(MailingAudience.from_json(row.audience), allowed)
    values.update({f: str(row.audience.get(f) or "") for f in DAY_FIELDS})
    status = 422 if errors else 200
    return await _compose(request, who, mailings, mailing, values, audience, errors, status, "used", row.name)


async def _save_audience(
    request: Request,
    who: OrganiserScope,
    mailings: Mailings,
    mailing: Any,
    values: dict[str, Any],
    audience: MailingAudience,
    errors: dict[str, str],
) -> Response:
    """Keep the audience as chosen under the name typed, and show the compose page again as it was."""
    saved = SavedAudiences(mailings)
    name = values["audience_name"]
    async with mailings.uows.begin() as uow:
        errors = {**errors, **audience_name_errors(name, await saved.name_taken(uow.session, who, name))}
        if not errors:
            await saved.create(uow, who, name, audience)
    if errors:
        return await _compose(request, who, mailings, mailing, values, audience, errors, 422)
    return await _compose(request, who, mailings, mailing, values, audience, {}, saved="audience")


@router.post("")
async def create_mailing(request: Request, organiser: Organiser, mailings: MailingsDep) -> Response:
    return await _save(request, organiser, mailings, None)


@router.get("/{mailing_id}", response_class=HTMLResponse)
async def mailing_page(
    request: Request, mailing_id: str, organiser: Organiser, mailings: MailingsDep, saved: str = ""
) -> Response:
    mailing = await _mailing(mailings, organiser, mailing_id)
    if not mailing_is_editable(mailing.status):
        return RedirectResponse(f"{BASE}/{mailing_id}/report", status_code=303)
    values = {
        "subject": mailing.subject,
        "body": mailing.body,
        **{f: str(mailing.audience.get(f) or "") for f in DAY_FIELDS},
    }
    audience = MailingAudience.from_json(mailing.audience)
    return await _compose(request, organiser, mailings, mailing, values, audience, {}, saved=saved)


def _require_draft(mailing: Any) -> None:
    if not mailing_is_editable(mailing.status):
        raise HTTPException(409, "This mailing is no longer a draft: it can't be changed or sent again")


@router.post("/{mailing_id}")
async def update_mailing(request: Request, mailing_id: str, organiser: Organiser, mailings: MailingsDep) -> Response:
    mailing = await _mailing(mailings, organiser, mailing_id)
    _require_draft(mailing)
    return await _save(request, organiser, mailings, mailing)


@router.get("/{mailing_id}/preview", response_class=HTMLResponse)
async def preview(
    request: Request, mailing_id: str, organiser: Organiser, mailings: MailingsDep, member: str = ""
) -> HTMLResponse:
    mailing = await _mailing(mailings, organiser, mailing_id)
    async with mailings.uows.begin() as uow:
        p = await mailings.preview(uow.session, organiser, mailing, member or None)
        people = await mailings.sample(uow.session, organiser, MailingAudience.from_json(mailing.audience))
    return await _page(
        request, "organise_mailing_preview.html", {"organiser": organiser, "mailing": mailing, "p": p, "people": people}
    )


@router.post("/{mailing_id}/test")
async def send_test(request: Request, mailing_id: str, organiser: Organiser, mailings: MailingsDep) -> Response:
    """The email to the organiser's own address, and nobody else's."""
    mailing = await _mailing(mailings, organiser, mailing_id)
    async with mailings.uows.begin() as uow:
        if not await mailings.send_test(uow, organiser, mailing):
            raise HTTPException(409, "Your address has not reached the email service yet: try again in a minute")
    return RedirectResponse(f"{BASE}/{mailing_id}?saved=test", status_code=303)


@router.get("/{mailing_id}/send", response_class=HTMLResponse)
async def confirm_send(request: Request, mailing_id: str, organiser: Organiser, mailings: MailingsDep) -> HTMLResponse:
    mailing = await _mailing(mailings, organiser, mailing_id)
    _require_draft(mailing)
    async with mailings.uows.begin() as uow:
        count = await mailings.count(uow.session, organiser, MailingAudience.from_json(mailing.audience))
    return await _page(
        request,
        "organise_mailing_send.html",
        {"organiser": organiser, "mailing": mailing, "count": count, "errors": {}},
    )


def _send_at(when: str, at: str) -> tuple[datetime | None, str | None]:
    """None for now; else the local time typed, in UTC; or what is wrong with it."""
    if when == "now":
        return None, None
    if when != "later":
        return None, "Choose to send it now or at a time"
    try:
        local = datetime.fromisoformat(at.strip())
    except ValueError:
        return None, "Enter the date and time to send it"
    if local.tzinfo is None:
        local = local.replace(tzinfo=NETWORK_TZ)
    if local.astimezone(UTC) <= datetime.now(UTC):
        return None, "Choose a time in the future, or send it now"
    return local.astimezone(UTC), None


@router.post("/{mailing_id}/send")
async def send(request: Request, mailing_id: str, organiser: Organiser, mailings: MailingsDep) -> Response:
    mailing = await _mailing(mailings, organiser, mailing_id)
    _require_draft(mailing)
    form = await request.form()
    send_at, error = _send_at(str(form.get("when", "")), str(form.get("send_at", "")))
    if error:
        async with mailings.uows.begin() as uow:
            count = await mailings.count(uow.session, organiser, MailingAudience.from_json(mailing.audience))
        return await _page(
            request,
            "organise_mailing_send.html",
            {
                "organiser": organiser,
                "mailing": mailing,
                "count": count,
                "errors": {"when": error},
                "values": {"send_at": form.get("send_at", "")},
            },
            422,
        )
    async with mailings.uows.begin() as uow:
        if not await mailings.schedule(uow, mailing_id, send_at):
            raise HTTPException(409, "This mailing is no longer a draft")
    return RedirectResponse(f"{BASE}/{mailing_id}/report", status_code=303)


@router.post("/{mailing_id}/unschedule")
async def unschedule(request: Request, mailing_id: str, organiser: Organiser, mailings: MailingsDep) -> Response:
    await _mailing(mailings, organiser, mailing_id)
    async with mailings.uows.begin() as uow:
        if not await mailings.unschedule(uow, mailing_id):
            raise HTTPException(409, "This mailing has started sending: it can't be stopped now")
    return RedirectResponse(f"{BASE}/{mailing_id}?saved=unscheduled", status_code=303)


@router.get("/{mailing_id}/report", response_class=HTMLResponse)
async def report(
    request: Request, mailing_id: str, organiser: Organiser, mailings: MailingsDep, page: int = 1
) -> HTMLResponse:
    """What happened to a mailing's emails, its clicks in aggregate, and who it went to (a page at a time)."""
    mailing = await _mailing(mailings, organiser, mailing_id)
    async with mailings.uows.begin() as uow:
        numbers = await mailings.report(uow.session, mailing, page)
    send_at = mailing.send_at.astimezone(NETWORK_TZ) if mailing.send_at else None
    return await _page(
        request,
        "organise_mailing_report.html",
        {"organiser": organiser, "mailing": mailing, "r": numbers, "send_at": send_at, "tz": NETWORK_TZ},
    )


@clicks_router.get(
    "/notifications/r/{token}",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "To the link's address"}, 404: {"description": "Not a link of a mailing"}},
)
async def follow_link(token: str, mailings: MailingsDep) -> Response:
    """Count a click on a mailing's link (how many, never who) and go to its address."""
    url = await mailings.click(token)
    if url is None:
        raise HTTPException(404, "This link is not one of ours, or has expired")
    return RedirectResponse(url, status_code=302)


ROUTERS = (router, clicks_router)
