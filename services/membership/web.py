"""Membership's public pages: the join form (also embedded in other sites, and as JSON), its thank-you page,
and the double opt-in confirmation link.

A person never learns from these answers whether an address is already a member: a new join, a join
again, a join stopped by the per-email limit and a bot caught by the honeypot all look the same.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from services.membership.deps import JoinFormsDep, JoinsDep, OriginsDep, SettingsDep
from services.membership.domain import JoinOptions, origin_of
from services.membership.join_forms import HONEYPOT, LIST_FIELDS, TEXT_FIELDS
from services.membership.joins import MemberNotFound
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
    request: Request, joins: JoinsDep, redirect: str = "", source: str = "", region: str = ""
) -> HTMLResponse:
    options = await joins.options()
    values = {"redirect": redirect, "source": source, "region": region, "consent_version": options.consent_version}
    return _render_join(request, options, values=values, errors={})


@router.post("/join")
async def join_submit(
    request: Request, forms: JoinFormsDep, origins: OriginsDep, settings: SettingsDep
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


@router.get("/join/thanks", response_class=HTMLResponse)
async def join_thanks(request: Request) -> HTMLResponse:
    return page(request, "join_thanks.html", {})


@router.get("/join/confirm", response_class=HTMLResponse)
async def confirm_email(request: Request, joins: JoinsDep, settings: SettingsDep, token: str = "") -> HTMLResponse:
    """The link in the welcome email: confirms the address (double opt-in) and publishes MemberConfirmed."""
    try:
        payload = tokens.verify(settings.secret_key, tokens.CONFIRM_EMAIL, token, tokens.CONFIRM_MAX_AGE_S)
        member_id = str(payload["m"])
    except (tokens.InvalidToken, KeyError, TypeError) as exc:
        reason = str(exc) if isinstance(exc, tokens.InvalidToken) else "This link is not valid"
        return message_page(
            request, "We could not confirm your email address", f"{reason}. Join again to get a new link.", 400
        )
    try:
        await joins.confirm(member_id)
    except MemberNotFound:
        return message_page(
            request,
            "We could not confirm your email address",
            "This link is not valid any more. Join again to get a new link.",
            404,
        )
    return page(request, "confirmed.html", {})
