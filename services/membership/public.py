"""The network's public front door: the home page (`/`) and the privacy notice (`/privacy`, older versions at
`/privacy?version=N`), both shown to anyone, without signing in."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.membership.deps import FrontDoorDep, PrivacyNoticesDep
from services.membership.web import message_page, page

router = APIRouter(tags=["public pages"])


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, front_door: FrontDoorDep) -> HTMLResponse:
    contents = await front_door.home()
    return page(
        request,
        "home.html",
        {"description": contents.description, "meetings": contents.meetings, "campaigns": contents.campaigns},
    )


@router.get("/privacy", response_class=HTMLResponse)
async def privacy_notice(request: Request, notices: PrivacyNoticesDep, version: str = "") -> HTMLResponse:
    """The notice in force, or the version a member agreed to (from their consent record)."""
    wanted = int(version) if version.isdigit() else None
    current = await notices.notice()
    notice = await notices.notice(wanted) if wanted else current
    if notice is None or current is None:
        return message_page(
            request,
            "There is no such version of our privacy notice",
            "Read the privacy notice in force at /privacy.",
            404,
        )
    context = {"notice": notice, "current": notice.version == current.version, "versions": await notices.versions()}
    return page(request, "privacy.html", context)
