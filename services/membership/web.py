"""Membership's public pages: the join form and its thank-you page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.membership.domain import (
    CONSENT_WORDING,
    DEFAULT_ENGAGEMENT_LEVELS,
    InvalidJoin,
    validate_join,
)
from services.membership.service import MembershipService
from shared.web import client_ip

router = APIRouter(tags=["join"])


def _service(request: Request) -> MembershipService:
    return request.app.state.membership


def _render_join(request: Request, *, values: dict, errors: dict[str, str], status: int = 200) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(
        request,
        "join.html",
        {
            "values": values,
            "errors": errors,
            "levels": DEFAULT_ENGAGEMENT_LEVELS,
            "consent_wording": CONSENT_WORDING,
        },
        status_code=status,
    )


@router.get("/join", response_class=HTMLResponse)
async def join_form(request: Request) -> HTMLResponse:
    return _render_join(request, values={"engagement_level": "informed"}, errors={})


@router.post("/join", response_class=HTMLResponse)
async def join_submit(
    request: Request,
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    postcode: Annotated[str, Form()] = "",
    email_consent: Annotated[str, Form()] = "",
    engagement_level: Annotated[str, Form()] = "informed",
    website: Annotated[str, Form()] = "",  # honeypot: people never see it, bots fill it
) -> Response:
    values = {
        "name": name,
        "email": email,
        "postcode": postcode,
        "email_consent": bool(email_consent),
        "engagement_level": engagement_level,
    }
    if website:
        # Look exactly like success, so a bot learns nothing; store nothing.
        return RedirectResponse("/join/thanks", status_code=303)
    try:
        application = validate_join(
            name=name,
            email=email,
            postcode=postcode,
            email_consent=bool(email_consent),
            engagement_level=engagement_level,
        )
    except InvalidJoin as invalid:
        return _render_join(request, values=values, errors=invalid.errors, status=422)
    await _service(request).join(application, ip=client_ip(request))
    return RedirectResponse("/join/thanks", status_code=303)


@router.get("/join/thanks", response_class=HTMLResponse)
async def join_thanks(request: Request) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(request, "join_thanks.html", {})
