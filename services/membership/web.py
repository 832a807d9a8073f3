"""Membership's public pages: the join form (also embedded in other sites, and as JSON), its thank-you page,
the double opt-in confirmation link, and the link that confirms a join for a member's address.

A person never learns from these answers whether an address is already a member: a new join, a join
again, a join stopped by the per-email limit and a bot caught by the honeypot all look the same.
The links emailed to confirm something only show a page: the POST from its button does it (mail scanners
follow links).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from services.membership import join_followups as followups
from services.membership.deps import JoinFollowupsDep, JoinFormsDep, JoinsDep, OriginsDep, SettingsDep
from services.membership.domain import JoinOptions, origin_of, validate_extras
from services.membership.join_followups import usable_key
from services.membership.join_forms import HONEYPOT, LIST_FIELDS, TEXT_FIELDS, form_from
from services.membership.joins import MemberNotFound
from services.membership.member_requests import RequestNotValid
from shared import tokens
from shared.config import Settings

router = APIRouter(tags=["join"])

MAX_BODY = 64 * 1024


def remote_ip(request: Request) -> str:
    """The caller's address as uvicorn resolved it (X-Forwarded-For is trusted only from the gateway)."""
    return request.client.host if request.client else "unknown"


def own_origin(settings: Settings) -> str | None:
    return origin_of(settings.public_base_url)


def page(
    request: Request, name: str, context: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status, headers=headers)


def message_page(request: Request, title: str, message: str, status: int = 200) -> HTMLResponse:
    return page(request, "message.html", {"title": title, "message": message}, status)


def _render_join(
    request: Request, options: JoinOptions, *, values: dict[str, Any], errors: dict[str, str], status: int = 200
) -> HTMLResponse:
    return page(
        request,
        "join.html",
        {"values": values, "errors": errors, "options": options, "groups_by_region": _groups_by_region(options)},
        status,
    )


def _groups_by_region(options: JoinOptions) -> list[tuple[str, list[Any]]]:
    return [(r.name, [g for g in options.groups if g.parent_id == r.id]) for r in options.regions]


def _form_values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in {*TEXT_FIELDS, "email_consent", HONEYPOT, "redirect"}:
        value = form.get(key)
        if isinstance(value, str):
            values[key] = value
    for key in LIST_FIELDS:
        values[key] = [v for v in form.getlist(key) if isinstance(v, str)]
    return values


@router.get("/join", response_class=HTMLResponse)
async def join_form(
    request: Request, joins: JoinsDep, settings: SettingsDep, redirect: str = "", source: str = "", region: str = ""
) -> HTMLResponse:
    """The short join: name, email, postcode, how involved, consent. The browser gets its join key here, before
    anything is typed, so the answer to the join itself can say nothing (join_followups.py)."""
    options = await joins.options()
    values = {"redirect": redirect, "source": source, "region": region, "consent_version": options.consent_version}
    response = _render_join(request, options, values=values, errors={})
    if usable_key(request.cookies.get(followups.COOKIE)) is None:
        response.set_cookie(
            followups.COOKIE,
            followups.new_key(),
            max_age=int(followups.LIFETIME.total_seconds()),
            path=followups.COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=settings.public_base_url.startswith("https://") or request.url.scheme == "https",
        )
    return response


@router.post("/join")
async def join_submit(
    request: Request, forms: JoinFormsDep, origins: OriginsDep, settings: SettingsDep, followed: JoinFollowupsDep
) -> Response:
    """The join form: HTML (from our page or any site embedding it) or JSON (a site's own script)."""
    if "application/json" in request.headers.get("content-type", ""):
        return await _join_json(request, forms, origins, settings)
    form = await request.form()
    values = _form_values(form)
    redirect = values.get("redirect", "").strip()
    ours = own_origin(settings)
    thanks = "/join/thanks"
    site = None
    if redirect:
        target = origin_of(redirect)
        if target is None or (target != ours and not await origins.is_allowed(target)):
            return message_page(
                request,
                "This form cannot send you back to that site",
                "The site that showed you this form is not one we work with, so nothing was sent. "
                "Join on our own page instead.",
                400,
            )
        thanks, site = redirect, (target if target != ours else None)
    else:
        origin = origin_of(request.headers.get("origin", ""))
        site = origin if origin and origin != ours else None
    result = await forms.submit(values, remote_ip(request), site)
    if result.too_many:
        return message_page(
            request, "Too many sign-ups from your connection", "Please wait a few minutes and try again.", 429
        )
    if result.errors:
        values["email_consent"] = bool(values.get("email_consent"))
        values.setdefault("consent_version", result.options.consent_version)
        return _render_join(request, result.options, values=values, errors=result.errors, status=422)
    key = usable_key(request.cookies.get(followups.COOKIE))
    if key is not None and thanks == "/join/thanks":
        await followed.remember(key, result.application, result.outcome)
    return RedirectResponse(thanks, status_code=303)


def _cors(origin: str | None) -> dict[str, str]:
    if not origin:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


async def _caller_origin(
    request: Request, origins: OriginsDep, settings: SettingsDep
) -> tuple[str | None, bool]:
    """The Origin of a cross-origin call and whether it may make it (same-origin and no Origin are fine)."""
    origin = origin_of(request.headers.get("origin", ""))
    if origin is None or origin == own_origin(settings):
        return None, True
    return origin, await origins.is_allowed(origin)


@router.options("/join")
async def join_preflight(request: Request, origins: OriginsDep, settings: SettingsDep) -> Response:
    origin, allowed = await _caller_origin(request, origins, settings)
    if not allowed:
        return Response(status_code=403)
    return Response(status_code=204, headers=_cors(origin))


async def _join_json(
    request: Request, forms: JoinFormsDep, origins: OriginsDep, settings: SettingsDep
) -> JSONResponse:
    origin, allowed = await _caller_origin(request, origins, settings)
    if not allowed:
        return JSONResponse({"error": "This site may not post to the join form"}, status_code=403)
    headers = _cors(origin)
    body = await request.body()
    try:
        data = json.loads(body) if len(body) <= MAX_BODY else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return JSONResponse({"error": "Send the form as a JSON object"}, status_code=400, headers=headers)
    result = await forms.submit(data, remote_ip(request), origin)
    if result.too_many:
        return JSONResponse(
            {"error": "Too many sign-ups from this connection: try again in a few minutes"},
            status_code=429,
            headers=headers,
        )
    if result.errors:
        return JSONResponse({"errors": result.errors}, status_code=422, headers=headers)
    received = {"status": "received"}
    application, options = result.application, result.options
    if application is None:  # a bot caught by the honeypot
        return JSONResponse(received, status_code=202, headers=headers)
    # What the person typed places them; saying where tells nothing about whether they were a member.
    region = options.resolve(options.regions, application.region_id or "")
    group = options.resolve(options.groups, application.suggested_group_id or "")
    return JSONResponse(
        {
            **received,
            "region": {"id": region.id, "name": region.name} if region else None,
            "suggested_group": {"id": group.id, "name": group.name} if group else None,
        },
        status_code=202,
        headers=headers,
    )


async def _render_thanks(
    request: Request,
    joins: JoinsDep,
    followed: JoinFollowupsDep,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The thank-you page: next steps from where the postcode typed places them, and "tell us more" while it is
    open; the same whatever the address (nothing stored about a member is read)."""
    followup = await followed.find(usable_key(request.cookies.get(followups.COOKIE)))
    options = await joins.options()
    context = {
        "steps": await followed.next_steps(followup),
        "tell_more": followup is not None and followup.open,
        "told": followup is not None and not followup.open,
        "options": options,
        "groups_by_region": _groups_by_region(options),
        "values": values or {},
        "errors": errors or {},
    }
    return page(request, "join_thanks.html", context, status)


@router.get("/join/thanks", response_class=HTMLResponse)
async def join_thanks(request: Request, joins: JoinsDep, followed: JoinFollowupsDep) -> HTMLResponse:
    return await _render_thanks(request, joins, followed)


@router.post("/join/more", response_class=HTMLResponse)
async def tell_more(request: Request, joins: JoinsDep, followed: JoinFollowupsDep) -> Response:
    """"Tell us more" from the thank-you page: kept for the join this browser just made (see join_followups.py)."""
    form = await request.form()
    values = _form_values(form)
    errors: dict[str, str] = {}
    extras = validate_extras(form_from(values), await joins.options(), errors)
    if errors:
        return await _render_thanks(request, joins, followed, values=values, errors=errors, status=422)
    if not await followed.tell_more(usable_key(request.cookies.get(followups.COOKIE)), extras):
        return message_page(
            request,
            "We could not keep this",
            "This form works for a day after you join, once, from the browser you joined with. To change what we "
            "know about you, use the preferences link at the foot of any email from us.",
            400,
        )
    return RedirectResponse("/join/thanks", status_code=303)


def _confirm_token(settings: Settings, token: str) -> str:
    """The member a double opt-in link names; raises InvalidToken."""
    payload = tokens.verify(settings.secret_key, tokens.CONFIRM_EMAIL, token, tokens.CONFIRM_MAX_AGE_S)
    if not isinstance(payload, dict) or not isinstance(payload.get("m"), str):
        raise tokens.InvalidToken("This link is not valid")
    return payload["m"]


def _not_confirmed(request: Request, reason: str, status: int = 400) -> HTMLResponse:
    return message_page(
        request, "We could not confirm your email address", f"{reason}. Join again to get a new link.", status
    )


@router.get("/join/confirm", response_class=HTMLResponse)
async def confirm_email_page(
    request: Request, joins: JoinsDep, settings: SettingsDep, token: str = ""
) -> HTMLResponse:
    """The link in the welcome email: a page with a button (opening it confirms nothing: mail scanners follow
    links)."""
    try:
        member_id = _confirm_token(settings, token)
    except tokens.InvalidToken as exc:
        return _not_confirmed(request, str(exc))
    if not await joins.confirmable(member_id):
        return _not_confirmed(request, "This link is not valid any more", 404)
    return page(request, "confirm_email.html", {"token": token})


@router.post("/join/confirm", response_class=HTMLResponse)
async def confirm_email(request: Request, joins: JoinsDep, settings: SettingsDep) -> HTMLResponse:
    """The button on the confirmation page: confirms the address (double opt-in), publishes MemberConfirmed."""
    form = await request.form()
    try:
        member_id = _confirm_token(settings, str(form.get("token") or ""))
    except tokens.InvalidToken as exc:
        return _not_confirmed(request, str(exc))
    try:
        await joins.confirm(member_id)
    except MemberNotFound:
        return _not_confirmed(request, "This link is not valid any more", 404)
    return page(request, "confirmed.html", {})


def _change_not_valid(request: Request, exc: RequestNotValid) -> HTMLResponse:
    return message_page(
        request,
        "This link does not work",
        f"{exc.reason}: it may have expired, been used already, or been replaced by a newer email from us. "
        "Nothing about your membership has changed.",
        400,
    )


@router.get("/join/changes", response_class=HTMLResponse)
async def join_change_page(request: Request, joins: JoinsDep, token: str = "") -> HTMLResponse:
    """The link emailed after a join for a member's address: what confirming would change, and a button. Opening
    it changes nothing."""
    try:
        change = await joins.join_change(token)
    except RequestNotValid as exc:
        return _change_not_valid(request, exc)
    return page(request, "join_change.html", {"token": token, "changes": change.changes, "left": change.left})


@router.post("/join/changes", response_class=HTMLResponse)
async def confirm_join_change(request: Request, joins: JoinsDep) -> HTMLResponse:
    """The button on that page: the join's changes are made, once."""
    form = await request.form()
    try:
        await joins.confirm_join_change(str(form.get("token") or ""))
    except RequestNotValid as exc:
        return _change_not_valid(request, exc)
    return message_page(
        request, "Thank you: your membership is up to date", "The changes you confirmed are made."
    )
