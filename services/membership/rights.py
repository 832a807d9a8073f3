"""Members' own pages, reached by signed links from their emails without a password: preferences, one-click
unsubscribe (RFC 8058), leaving, a download of everything held about them, and erasure.

Link tokens are made by notifications with `shared.tokens.member_link` (purposes `preferences` and
`unsubscribe`, payload `{"m": member id}`); a forged, altered or expired one changes nothing. The preferences
link is not a key to everything: a download or an erasure asked for with it is done only once confirmed through
a fresh link emailed to the member, valid for half an hour and used once (`/me/confirm`, decision 0006). A link
only shows a page; the POST from its button acts (mail scanners follow links).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.membership.deps import JoinsDep, MemberDataDep, MemberRightsDep, SettingsDep
from services.membership.domain import (
    DOWNLOAD,
    EMAIL_TOPICS,
    ERASE,
    REQUEST_LIFETIME,
    InvalidJoin,
    PreferencesForm,
    validate_preferences,
)
from services.membership.joins import Joins, MemberNotFound
from services.membership.member_data import MemberData, download_file
from services.membership.member_requests import RequestNotValid
from services.membership.member_rights import MemberRights, TooManyRequests
from services.membership.web import message_page, page, remote_ip
from shared import tokens
from shared.config import Settings

router = APIRouter(tags=["members' rights"])


class BadLink(Exception):
    """A member link that cannot be honoured."""


def member_from(settings: Settings, token: str, purpose: str = tokens.PREFERENCES) -> str:
    max_age = tokens.UNSUBSCRIBE_MAX_AGE_S if purpose == tokens.UNSUBSCRIBE else tokens.PREFERENCES_MAX_AGE_S
    try:
        payload = tokens.verify(settings.secret_key, purpose, token, max_age)
        return str(payload["m"])
    except (tokens.InvalidToken, KeyError, TypeError):
        raise BadLink() from None


def bad_link(request: Request, exc: Exception | None = None) -> HTMLResponse:
    return message_page(
        request,
        "This link does not work",
        "It may have expired, or been changed on its way to you. Every email from us has a fresh link at the bottom.",
        400,
    )


def gone(request: Request) -> HTMLResponse:
    return message_page(request, "We hold nothing about you", "There is no membership for this link any more.", 404)


async def _form(request: Request) -> dict[str, Any]:
    form = await request.form()
    data: dict[str, Any] = {k: form.get(k) for k in form.keys()}
    for name in ("email_topics", "interests", "groups", "subteams"):
        data[name] = [v for v in form.getlist(name) if isinstance(v, str)]
    return data


async def _preferences_page(
    request: Request,
    rights: MemberRights,
    joins: Joins,
    token: str,
    member_id: str,
    *,
    errors: dict[str, str] | None = None,
    saved: bool = False,
    status: int = 200,
) -> HTMLResponse:
    view = await rights.member_view(member_id)
    options = await joins.options()
    member = view["member"]
    topics = member.email_topics if member.email_topics is not None else [c.key for c in EMAIL_TOPICS]
    return page(
        request,
        "preferences.html",
        {
            "token": token,
            "member": member,
            "options": options,
            "topics": EMAIL_TOPICS,
            "chosen_topics": topics if member.email_consent else [],
            "group_ids": view["group_ids"],
            "subteam_ids": view["subteam_ids"],
            "errors": errors or {},
            "saved": saved,
        },
        status,
    )


@router.get("/preferences", response_class=HTMLResponse)
async def preferences(
    request: Request, rights: MemberRightsDep, joins: JoinsDep, settings: SettingsDep, token: str = ""
) -> HTMLResponse:
    try:
        return await _preferences_page(request, rights, joins, token, member_from(settings, token))
    except BadLink:
        return bad_link(request)
    except MemberNotFound:
        return gone(request)


@router.post("/preferences", response_class=HTMLResponse)
async def save_preferences(
    request: Request, rights: MemberRightsDep, joins: JoinsDep, settings: SettingsDep
) -> HTMLResponse:
    data = await _form(request)
    token = str(data.get("token") or "")
    try:
        member_id = member_from(settings, token)
        chosen = validate_preferences(
            PreferencesForm(
                email_consent=data.get("email_consent") == "yes",
                email_topics=data["email_topics"],
                engagement_level=str(data.get("engagement_level") or ""),
                interests=data["interests"],
                groups=data["groups"],
                subteams=data["subteams"],
            ),
            await joins.options(),
        )
    except BadLink:
        return bad_link(request)
    except InvalidJoin as invalid:
        return await _preferences_page(request, rights, joins, token, member_id, errors=invalid.errors, status=422)
    try:
        await rights.update_preferences(member_id, chosen)
        return await _preferences_page(request, rights, joins, token, member_id, saved=True)
    except MemberNotFound:
        return gone(request)


@router.get("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe_form(request: Request, settings: SettingsDep, token: str = "") -> HTMLResponse:
    """An email client or scanner may fetch this link: it only shows a button, it changes nothing."""
    try:
        member_from(settings, token, tokens.UNSUBSCRIBE)
    except BadLink:
        return bad_link(request)
    return page(request, "unsubscribe.html", {"token": token})


@router.post("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe(
    request: Request, rights: MemberRightsDep, settings: SettingsDep, token: str = ""
) -> HTMLResponse:
    """The button, or a mail client's RFC 8058 one-click POST (`List-Unsubscribe=One-Click`, token in the URL)."""
    form = await request.form()
    one_click = form.get("List-Unsubscribe") == "One-Click"
    token = token or str(form.get("token") or "")
    try:
        member_id = member_from(settings, token, tokens.UNSUBSCRIBE)
        await rights.unsubscribe(member_id, source="one-click" if one_click else "unsubscribe-page")
    except BadLink:
        return bad_link(request)
    except MemberNotFound:
        return gone(request)
    return page(request, "unsubscribed.html", {})


def _check_your_email(request: Request, action: str) -> HTMLResponse:
    minutes = int(REQUEST_LIFETIME[action].total_seconds() // 60)
    what = "download your data" if action == DOWNLOAD else "erase everything we hold about you"
    return message_page(
        request,
        "Check your email",
        f"We have sent you a link to {what}. It works once, for {minutes} minutes. Nothing happens until you "
        "open it and press its button.",
    )


def _too_many(request: Request, exc: TooManyRequests) -> HTMLResponse:
    minutes = max(1, -(-exc.retry_after_s // 60))
    answer = message_page(
        request,
        "You have asked several times already",
        "We have sent you links to confirm in the last hour: the newest one in your email works. "
        f"If none has arrived, check your spam folder, or ask again in {minutes} minute{'s' if minutes != 1 else ''}.",
        429,
    )
    answer.headers["Retry-After"] = str(exc.retry_after_s)
    return answer


def _form_for_link(request: Request, settings: Settings, token: str, template: str) -> HTMLResponse:
    """A page whose form acts for the preferences link's member (showing it changes nothing)."""
    try:
        member_from(settings, token)
    except BadLink:
        return bad_link(request)
    return page(request, template, {"token": token, "errors": {}})


@router.get("/me/data", response_class=HTMLResponse)
async def download_form(request: Request, settings: SettingsDep, token: str = "") -> HTMLResponse:
    """A button that emails a link to the download (the preferences link alone does not download)."""
    return _form_for_link(request, settings, token, "download.html")


@router.post("/me/data", response_class=HTMLResponse)
async def ask_for_download(request: Request, rights: MemberRightsDep, settings: SettingsDep) -> HTMLResponse:
    form = await request.form()
    try:
        await rights.ask_to_confirm(member_from(settings, str(form.get("token") or "")), DOWNLOAD, remote_ip(request))
    except BadLink:
        return bad_link(request)
    except MemberNotFound:
        return gone(request)
    except TooManyRequests as exc:
        return _too_many(request, exc)
    return _check_your_email(request, DOWNLOAD)


def _request_not_valid(request: Request, exc: RequestNotValid) -> HTMLResponse:
    return message_page(
        request,
        "This link does not work",
        f"{exc.reason}: it works once, for a short time. Ask again from the link at the bottom of any email from us.",
        400,
    )


@router.get("/me/confirm", response_class=HTMLResponse)
async def confirm_request_page(request: Request, rights: MemberRightsDep, token: str = "") -> HTMLResponse:
    """The link emailed to confirm a download or an erasure: a page with a button (opening it does nothing)."""
    try:
        asked = await rights.requested(token)
    except RequestNotValid as exc:
        return _request_not_valid(request, exc)
    return page(request, "confirm_request.html", {"token": token, "action": asked.kind})


@router.post("/me/confirm", response_class=HTMLResponse)
async def confirm_request(request: Request, rights: MemberRightsDep, member_data: MemberDataDep) -> HTMLResponse:
    """The button: the erasure, or gathering the download from every service (its link is emailed), once."""
    form = await request.form()
    try:
        asked = await rights.requested(str(form.get("token") or ""), use=True)
    except RequestNotValid as exc:
        return _request_not_valid(request, exc)
    if asked.kind == ERASE:
        if not await rights.erase(asked.member_id, actor=f"member:{asked.member_id}"):
            return gone(request)
        return message_page(
            request,
            "Everything about you is being erased",
            "Your membership and everything we held about you are deleted, here and in every part of the network.",
        )
    await member_data.request(asked.member_id)
    return message_page(
        request,
        "We are gathering your data",
        "Each part of the network is adding what it holds about you. We will email you a link to download it all, "
        "usually within a few minutes.",
    )


async def _download(rights: MemberRights, member_data: MemberData, token: str) -> dict[str, Any]:
    request_id, member_id = await member_data.ready_request(token)
    return download_file(await rights.everything_about(member_id), await member_data.parts(request_id))


@router.get("/me/download", response_class=HTMLResponse)
async def download_page(
    request: Request, rights: MemberRightsDep, member_data: MemberDataDep, token: str = ""
) -> HTMLResponse:
    """The emailed link: everything held about the member, readable, with a button for the file."""
    try:
        data = await _download(rights, member_data, token)
    except RequestNotValid as exc:
        return _request_not_valid(request, exc)
    except MemberNotFound:
        return gone(request)
    return page(request, "download_ready.html", {"token": token, "data": data})


@router.post("/me/download", response_class=Response, responses={200: {"content": {"application/json": {}}}})
async def download_file_of(request: Request, rights: MemberRightsDep, member_data: MemberDataDep) -> Response:
    """The button: the same, as a JSON file."""
    form = await request.form()
    try:
        data = await _download(rights, member_data, str(form.get("token") or ""))
    except RequestNotValid as exc:
        return _request_not_valid(request, exc)
    except MemberNotFound:
        return gone(request)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-data.json"', "Cache-Control": "no-store"},
    )


@router.get("/me/leave", response_class=HTMLResponse)
async def leave_form(request: Request, settings: SettingsDep, token: str = "") -> HTMLResponse:
    return _form_for_link(request, settings, token, "leave.html")


@router.post("/me/leave", response_class=HTMLResponse)
async def leave(request: Request, rights: MemberRightsDep, settings: SettingsDep) -> HTMLResponse:
    form = await request.form()
    try:
        member_id = member_from(settings, str(form.get("token") or ""))
        await rights.leave(member_id, str(form.get("reason") or ""))
    except BadLink:
        return bad_link(request)
    except MemberNotFound:
        return gone(request)
    return message_page(request, "You have left the network", "We will not email you again. Thank you for all you did.")


@router.get("/me/erase", response_class=HTMLResponse)
async def erase_form(request: Request, settings: SettingsDep, token: str = "") -> HTMLResponse:
    return _form_for_link(request, settings, token, "erase.html")


@router.post("/me/erase", response_class=HTMLResponse)
async def erase(request: Request, rights: MemberRightsDep, settings: SettingsDep) -> HTMLResponse:
    form = await request.form()
    token = str(form.get("token") or "")
    try:
        member_id = member_from(settings, token)
    except BadLink:
        return bad_link(request)
    if form.get("confirm") != "erase":
        errors = {"confirm": "Tick the box to confirm that everything about you should be erased"}
        return page(request, "erase.html", {"token": token, "errors": errors}, 422)
    try:
        await rights.ask_to_confirm(member_id, ERASE, remote_ip(request))
    except MemberNotFound:
        return gone(request)
    except TooManyRequests as exc:
        return _too_many(request, exc)
    return _check_your_email(request, ERASE)
