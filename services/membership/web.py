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

from services.membership.domain import (
    InvalidJoin,
    JoinApplication,
    JoinForm,
    JoinOptions,
    origin_of,
    validate_join,
)
from services.membership.service import MemberNotFound, MembershipService
from shared import tokens

router = APIRouter(tags=["join"])

MAX_BODY = 64 * 1024
HONEYPOT = "website"
LIST_FIELDS = ("interests", "groups", "subteams")
TEXT_FIELDS = (
    "name",
    "email",
    "postcode",
    "consent_version",
    "engagement_level",
    "region",
    "skills",
    "time_available",
    "organisation",
    "organisation_name",
    "source",
)


def service(request: Request) -> MembershipService:
    return request.app.state.membership


def remote_ip(request: Request) -> str:
    """The caller's address as uvicorn resolved it (X-Forwarded-For is trusted only from the gateway)."""
    return request.client.host if request.client else "unknown"


def own_origin(request: Request) -> str | None:
    return origin_of(request.app.state.runtime.settings.public_base_url)


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


def _form_from(data: dict[str, Any]) -> JoinForm:
    def text(name: str) -> str:
        value = data.get(name, "")
        return value if isinstance(value, str) else ""

    def items(name: str) -> list[str]:
        value = data.get(name) or []
        if isinstance(value, str):
            value = [value]
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    consent = data.get("email_consent")
    form = JoinForm(
        email_consent=consent is True or (isinstance(consent, str) and consent.lower() in ("yes", "on", "true", "1"))
    )
    for name in TEXT_FIELDS:
        setattr(form, name, text(name))
    for name in LIST_FIELDS:
        setattr(form, name, items(name))
    return form


def _validated(
    data: dict[str, Any], options: JoinOptions, site: str | None
) -> tuple[JoinApplication | None, dict[str, str]]:
    """The application, or None and what to fix (nothing to fix for a bot caught by the honeypot)."""
    if data.get(HONEYPOT):
        return None, {}
    try:
        return validate_join(_form_from(data), options, site=site), {}
    except InvalidJoin as invalid:
        return None, invalid.errors


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
async def join_form(request: Request, redirect: str = "", source: str = "", region: str = "") -> HTMLResponse:
    options = await service(request).join_options()
    values = {"redirect": redirect, "source": source, "region": region, "consent_version": options.consent_version}
    return _render_join(request, options, values=values, errors={})


@router.post("/join")
async def join_submit(request: Request) -> Response:
    """The join form: HTML (from our page or any site embedding it) or JSON (a site's own script)."""
    if "application/json" in request.headers.get("content-type", ""):
        return await _join_json(request)
    svc = service(request)
    ip = remote_ip(request)
    form = await request.form()
    values = _form_values(form)
    redirect = values.get("redirect", "").strip()
    ours = own_origin(request)
    thanks = "/join/thanks"
    site = None
    if redirect:
        target = origin_of(redirect)
        if target is None or (target != ours and not await svc.is_allowed_origin(target)):
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
    too_many = (
        "Too many sign-ups from your connection",
        "Please wait a few minutes and try again.",
    )
    options = await svc.join_options()
    application, errors = _validated(values, options, site)
    if application is None:
        # Counted against the address like any attempt; a bot caught by the honeypot learns nothing.
        if not (await svc.allow_join_from(ip)).allowed:
            return message_page(request, *too_many, 429)
        if values.get(HONEYPOT):
            return RedirectResponse(thanks, status_code=303)
        values["email_consent"] = bool(values.get("email_consent"))
        values.setdefault("consent_version", options.consent_version)
        return _render_join(request, options, values=values, errors=errors, status=422)
    if not (await request.app.state.join_batcher.submit(application, ip=ip)).address_allowed:
        return message_page(request, *too_many, 429)
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


async def _caller_origin(request: Request) -> tuple[str | None, bool]:
    """The Origin of a cross-origin call and whether it may make it (same-origin and no Origin are fine)."""
    origin = origin_of(request.headers.get("origin", ""))
    if origin is None or origin == own_origin(request):
        return None, True
    return origin, await service(request).is_allowed_origin(origin)


@router.options("/join")
async def join_preflight(request: Request) -> Response:
    origin, allowed = await _caller_origin(request)
    if not allowed:
        return Response(status_code=403)
    return Response(status_code=204, headers=_cors(origin))


async def _join_json(request: Request) -> JSONResponse:
    svc = service(request)
    origin, allowed = await _caller_origin(request)
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
    ip = remote_ip(request)
    too_many = JSONResponse(
        {"error": "Too many sign-ups from this connection: try again in a few minutes"},
        status_code=429,
        headers=headers,
    )
    received = {"status": "received"}
    options = await svc.join_options()
    application, errors = _validated(data, options, origin)
    if application is None:
        # Counted against the address like any attempt; a bot caught by the honeypot learns nothing.
        if not (await svc.allow_join_from(ip)).allowed:
            return too_many
        if data.get(HONEYPOT):
            return JSONResponse(received, status_code=202, headers=headers)
        return JSONResponse({"errors": errors}, status_code=422, headers=headers)
    if not (await request.app.state.join_batcher.submit(application, ip=ip)).address_allowed:
        return too_many
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
async def confirm_email(request: Request, token: str = "") -> HTMLResponse:
    """The link in the welcome email: confirms the address (double opt-in) and publishes MemberConfirmed."""
    secret = request.app.state.runtime.settings.secret_key
    try:
        payload = tokens.verify(secret, tokens.CONFIRM_EMAIL, token, tokens.CONFIRM_MAX_AGE_S)
        member_id = str(payload["m"])
    except (tokens.InvalidToken, KeyError, TypeError) as exc:
        reason = str(exc) if isinstance(exc, tokens.InvalidToken) else "This link is not valid"
        return message_page(
            request, "We could not confirm your email address", f"{reason}. Join again to get a new link.", 400
        )
    try:
        await service(request).confirm(member_id)
    except MemberNotFound:
        return message_page(
            request,
            "We could not confirm your email address",
            "This link is not valid any more. Join again to get a new link.",
            404,
        )
    return page(request, "confirmed.html", {})
