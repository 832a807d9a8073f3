"""Organisers' pages: sign-in with a second factor, setting a password, the member list (search, filters,
CSV), a member's details, the network's regions, groups, sub-teams and partners, roles, organiser
invitations, API keys and the audit log.

The front door (the home page's description and the privacy notice) is edited here by the network's organisers.

Sign-in sets the shared session token (`shared/auth.py`) as the `gs_organiser` cookie, which every
service behind the gateway reads; JSON callers get the token itself to send as a Bearer token.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.membership import enrolment_qr
from services.membership.accounts import AccountProblem, InvalidLink, OrganiserAccounts, SignInRefused, TooManyAttempts
from services.membership.deps import (
    AccountsDep,
    CurrentOrganiser,
    DirectoryDep,
    FrontDoorDep,
    JoinsDep,
    MemberPageDep,
    MemberRightsDep,
    OrganiserHomeDep,
    OriginsDep,
    PrivacyNoticesDep,
    RevokingDep,
    RosterDep,
    SettingsDep,
)
from services.membership.directory import KIND_NAMES, ROLES, Directory
from services.membership.domain import Unit
from services.membership.front_door import FrontDoor
from services.membership.member_page import MemberPage, MemberView
from services.membership.origins import AllowedOrigins
from services.membership.privacy import PrivacyNotices
from services.membership.revoking import CannotRevoke
from services.membership.roster import MemberFilters, Roster
from services.membership.web import message_page, page, remote_ip
from shared import auth
from shared.contact import collapse_spaces
from shared.deadletters import dead_letter_counts, read_dead_letters
from shared.errors import InvalidInput
from shared.exports import csv_download
from shared.web import MAX_PAGE

router = APIRouter(tags=["organiser pages"])
SCOPE_NAMES = {"network": "The whole network", "region": "A region", "group": "A local group", "subteam": "A sub-team"}


def sign_in_needed(request: Request, exc: Exception) -> Response:
    """The answer when a route's `CurrentOrganiser` is missing (`deps.SignInNeeded`)."""
    if request.method == "GET" and "text/html" in request.headers.get("accept", "text/html"):
        return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)
    return JSONResponse(
        {"detail": "Sign in as an organiser to do this"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


def _context(who: auth.OrganiserScope, **extra: Any) -> dict[str, Any]:
    return {"who": who, "scope_names": SCOPE_NAMES, **extra}


# -- signing in ------------------------------------------------------------------------------------


def _safe_next(value: str) -> str:
    """Only a path on this site (never another site's address) to go to after signing in."""
    return value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/admin"


@router.get("/signin", response_class=HTMLResponse)
async def sign_in_form(request: Request, next: str = "/admin") -> HTMLResponse:
    return page(request, "signin.html", {"values": {"next": _safe_next(next)}, "error": None})


@router.post("/signin", responses={
    400: {"description": "A JSON body that is not an object"},
    401: {"description": "The email address, password or code is not right"},
    429: {"description": "Too many attempts for this account or from this address: Retry-After says how long to wait"},
})
async def sign_in(request: Request, accounts: AccountsDep, settings: SettingsDep) -> Response:
    as_json = "application/json" in request.headers.get("content-type", "")
    try:
        data: Any = await request.json() if as_json else dict(await request.form())
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return JSONResponse({"error": "Send email, password and code as a JSON object"}, status_code=400)
    email, password, code = (str(data.get(k) or "") for k in ("email", "password", "code"))
    next_path = _safe_next(str(data.get("next") or "/admin"))
    problem, status, headers = None, 200, dict[str, str]()
    try:
        scope, token = await accounts.sign_in(email, password, code, ip=remote_ip(request))
    except SignInRefused:
        problem, status = "The email address, password or code is not right", 401
    except TooManyAttempts as wait:
        problem, status = f"Too many attempts to sign in: wait {_duration(wait.retry_after_s)} and try again", 429
        headers = {"Retry-After": str(wait.retry_after_s)}
    if problem is not None:
        if as_json:
            return JSONResponse({"error": problem}, status_code=status, headers=headers)
        values = {"email": email, "next": next_path}
        return page(request, "signin.html", {"values": values, "error": problem}, status, headers)
    if as_json:
        return JSONResponse(
            {
                "token": token,
                "organiser_id": scope.organiser_id,
                "scope_type": scope.scope_type,
                "scope_id": scope.scope_id,
                "expires_in": auth.SESSION_MAX_AGE_S,
            }
        )
    response = RedirectResponse(next_path, status_code=303)
    # Secure whenever the public address is https, or this request reached us over https (a TLS terminator).
    secure = settings.public_base_url.startswith("https://") or request.url.scheme == "https"
    response.set_cookie(
        auth.SESSION_COOKIE,
        token,
        max_age=auth.SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )
    return response


def _duration(seconds: int) -> str:
    """A wait in words: `45 seconds`, `2 minutes`, `1 hour`."""
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    hours = math.ceil(minutes / 60)
    return "1 hour" if hours == 1 else f"{hours} hours"


@router.post("/signin/out")
async def sign_out(request: Request, revoking: RevokingDep) -> Response:
    """End the session everywhere (every service refuses it from now on), not just in this browser."""
    who = await auth.optional_organiser(request)
    if who is not None:
        await revoking.sign_out(who)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


@router.get("/organisers/set-password", response_class=HTMLResponse)
async def set_password_form(request: Request, accounts: AccountsDep, token: str = "") -> HTMLResponse:
    try:
        enrolment = await accounts.enrolment(token)
    except InvalidLink:
        return _invalid_link(request)
    context = {"enrolment": enrolment, "token": token, "errors": {}, "qr_svg": enrolment_qr.svg(enrolment.otpauth_uri)}
    return page(request, "set_password.html", context)


def _invalid_link(request: Request) -> HTMLResponse:
    return message_page(
        request,
        "This link does not work",
        "It may have expired or been used already. Ask an organiser of the network for a new invitation.",
        400,
    )


@router.post("/organisers/set-password", response_class=HTMLResponse)
async def set_password(request: Request, accounts: AccountsDep) -> HTMLResponse:
    form = await request.form()
    token, password, confirm, code = (str(form.get(k) or "") for k in ("token", "password", "confirm", "code"))
    svc = accounts
    try:
        codes = await svc.set_password(token, password, confirm, code)
    except InvalidLink:
        return _invalid_link(request)
    except AccountProblem as problem:
        enrolment = await svc.enrolment(token)
        context = {"enrolment": enrolment, "token": token, "errors": problem.errors,
                   "qr_svg": enrolment_qr.svg(enrolment.otpauth_uri)}
        return page(request, "set_password.html", context, 422)
    return page(request, "recovery_codes.html", {"codes": codes})


# -- members ---------------------------------------------------------------------------------------


def _filters(request: Request) -> MemberFilters:
    filters = MemberFilters()
    for name in ("q", "region_id", "group_id", "subteam_id", "interest", "engagement_level", "confirmed", "status"):
        setattr(filters, name, request.query_params.get(name, "")[:200])
    return filters


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


# The member list counts matches up to this many and says "more than" beyond: an exact count reads every member in
# scope at each page view (a million for a network organiser); the dashboard counts the network from its tallies.
COUNT_UP_TO = 10_000


# The most groups a search of the group picker offers to choose from.
GROUP_CHOICES = 20


def _pick_group(typed: str, groups: Sequence[Unit]) -> tuple[Unit | None, list[Unit]]:
    """The members list's group picker: a group searched for by part of its name (a network has hundreds, too many
    to send as a list at every view). The group whose whole name was typed, or the only one whose name contains it;
    otherwise no group and every one that matches, for the organiser to choose from."""
    typed = collapse_spaces(typed).lower()
    if not typed:
        return None, []
    matches = [g for g in groups if typed in g.name.lower()]
    exact = [g for g in matches if g.name.lower() == typed]
    if len(exact) == 1:
        return exact[0], []
    if len(matches) == 1:
        return matches[0], []
    return None, sorted(exact or matches, key=lambda g: g.name.lower())


@router.get("/members", response_class=HTMLResponse)
async def member_list(request: Request, who: CurrentOrganiser, roster: RosterDep, joins: JoinsDep) -> HTMLResponse:
    filters = _filters(request)
    options = await joins.options()
    typed_group = request.query_params.get("group", "")[:200]
    group_choices: list[Unit] = []
    if typed_group.strip() and not filters.group_id:
        picked, group_choices = _pick_group(typed_group, options.groups)
        filters.group_id = picked.id if picked else ""
    group = options.resolve(options.groups, filters.group_id) if filters.group_id else None
    page_no = min(max(_int(request.query_params.get("page"), 1), 1), MAX_PAGE)
    per_page = min(max(_int(request.query_params.get("per_page"), 25), 1), 100)
    rows, total = await roster.page(who, filters, page_no, per_page, count_up_to=COUNT_UP_TO)
    query = {k: v for k, v in filters.as_dict().items()}
    more = total > COUNT_UP_TO
    return page(
        request,
        "members.html",
        _context(
            who,
            rows=rows,
            total=total,
            more=more,
            count_up_to=COUNT_UP_TO,
            page_no=page_no,
            pages=None if more else max(math.ceil(total / per_page), 1),
            has_next=len(rows) == per_page if more else page_no < math.ceil(total / per_page),
            filters=filters,
            options=options,
            query=query,
            unit_names={u.id: u.name for u in (*options.regions, *options.groups)},
            group_name=group.name if group else ("" if filters.group_id else typed_group),
            group_choices=group_choices[:GROUP_CHOICES],
            group_matches=len(group_choices),
            typed_group=typed_group.strip() if not filters.group_id else "",
        ),
    )


@router.get("/members/export.csv")
async def member_export(request: Request, who: CurrentOrganiser, roster: RosterDep) -> Response:
    chunks, count = await roster.export_csv(who, _filters(request))
    return csv_download(chunks, "members.csv", {"X-Exported-Rows": str(count), "Cache-Control": "no-store"})


NOT_YOURS = "There is no member with that id in the part of the network you look after"


@router.get("/members/{member_id}", response_class=HTMLResponse)
async def member_details(
    request: Request, who: CurrentOrganiser, member_page: MemberPageDep, member_id: str,
) -> HTMLResponse:
    view = await member_page.view(who, member_id)
    if view is None:
        raise HTTPException(404, NOT_YOURS)
    return _member_page(request, who, view)


def _member_page(
    request: Request,
    who: auth.OrganiserScope,
    view: MemberView,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    """The member page: their details, what they did across the services, organisers' notes and their tags."""
    context = _context(
        who, **view.details, role_names=ROLES, units=view.units, timeline=view.timeline,
        last_action=view.last_action, notes=view.notes, authors=view.authors, tagged=view.tagged,
        other_tags=view.other_tags, errors=errors or {}, values=values or {},
    )
    return page(request, "member.html", context, 422 if errors else 200)


async def _view_or_404(who: auth.OrganiserScope, member_page: MemberPage, member_id: str) -> MemberView:
    """The member page as it is now (not audited again: the change that failed is what is recorded)."""
    view = await member_page.view(who, member_id, audit=False)
    if view is None:
        raise HTTPException(404, NOT_YOURS)
    return view


async def _member_or_404(who: auth.OrganiserScope, roster: Roster, member_id: str) -> dict[str, Any]:
    details = await roster.member(who, member_id, audit=False)
    if details is None:
        raise HTTPException(404, NOT_YOURS)
    return details


@router.post("/members/{member_id}/notes", response_class=HTMLResponse,
             responses={404: {"description": NOT_YOURS}, 422: {"description": "The note is empty or too long"}})
async def add_note(
    request: Request, who: CurrentOrganiser, roster: RosterDep, member_page: MemberPageDep, member_id: str,
) -> Response:
    """An organiser notes something about a member (a call, what they offered); others in scope read it."""
    await _member_or_404(who, roster, member_id)
    text = str((await request.form()).get("note") or "")
    try:
        await member_page.add_note(who, member_id, text)
    except InvalidInput as problem:
        view = await _view_or_404(who, member_page, member_id)
        return _member_page(request, who, view, problem.errors, {"note": text})
    return RedirectResponse(f"/members/{member_id}#notes", status_code=303)


@router.post("/members/{member_id}/tags", response_class=HTMLResponse,
             responses={404: {"description": NOT_YOURS}, 422: {"description": "No tag was chosen or written"}})
async def add_tag(
    request: Request, who: CurrentOrganiser, roster: RosterDep, member_page: MemberPageDep, member_id: str,
) -> Response:
    """Tag a member with a tag there is (chosen from a list) or a new one (written)."""
    await _member_or_404(who, roster, member_id)
    form = await request.form()
    name = str(form.get("new_tag") or "").strip() or str(form.get("tag") or "")
    try:
        await member_page.tag(who, member_id, name)
    except InvalidInput as problem:
        view = await _view_or_404(who, member_page, member_id)
        return _member_page(request, who, view, problem.errors, {"new_tag": name})
    return RedirectResponse(f"/members/{member_id}#tags", status_code=303)


async def _tag_or_404(member_page: MemberPage, member_id: str, tag_id: str) -> str:
    name = await member_page.tag_name(member_id, tag_id)
    if name is None:
        raise HTTPException(404, "This member does not have that tag")
    return name


@router.get("/members/{member_id}/tags/{tag_id}/remove", response_class=HTMLResponse)
async def confirm_untag(
    request: Request, who: CurrentOrganiser, roster: RosterDep, member_page: MemberPageDep, member_id: str,
    tag_id: str,
) -> HTMLResponse:
    """Taking a tag off asks first, on a page of its own."""
    details = await _member_or_404(who, roster, member_id)
    name = await _tag_or_404(member_page, member_id, tag_id)
    return page(request, "member_untag.html", _context(who, member=details["member"], tag_id=tag_id, tag_name=name))


@router.post("/members/{member_id}/tags/{tag_id}/remove", responses={404: {"description": NOT_YOURS}})
async def untag(
    who: CurrentOrganiser, roster: RosterDep, member_page: MemberPageDep, member_id: str, tag_id: str
) -> Response:
    await _member_or_404(who, roster, member_id)
    await _tag_or_404(member_page, member_id, tag_id)
    await member_page.untag(who, member_id, tag_id)
    return RedirectResponse(f"/members/{member_id}#tags", status_code=303)


@router.get("/members/{member_id}/erase", response_class=HTMLResponse)
async def confirm_erase(request: Request, who: CurrentOrganiser, roster: RosterDep, member_id: str) -> HTMLResponse:
    """Erasure cannot be undone: the network organiser confirms it on a page of its own first."""
    details = await roster.member(who, member_id, audit=False) if who.is_network else None
    if details is None:
        raise HTTPException(404, "There is no member with that id in the part of the network you look after")
    return page(request, "member_erase.html", _context(who, member=details["member"]))


@router.post("/members/{member_id}/erase")
async def erase_member(
    who: CurrentOrganiser, roster: RosterDep, rights: MemberRightsDep, member_id: str
) -> Response:
    """Erasure on a member's request received another way (a letter, a call): network organisers only."""
    if not who.is_network or await roster.member(who, member_id, audit=False) is None:
        raise HTTPException(404, "There is no member with that id in the part of the network you look after")
    await rights.erase(member_id, actor=f"organiser:{who.organiser_id}")
    return RedirectResponse("/members", status_code=303)


# -- the network's shape ---------------------------------------------------------------------------


@router.get("/admin", response_class=HTMLResponse)
async def admin_home(request: Request, who: CurrentOrganiser, home: OrganiserHomeDep) -> HTMLResponse:
    """The organisers' home: what they look after and what needs them, from every service."""
    parts = await home.parts(who, auth.session_token(request))
    return page(request, "admin.html", _context(who, home=parts))


@router.get("/admin/dead-letters", response_class=HTMLResponse)
async def dead_letters(request: Request, who: CurrentOrganiser) -> HTMLResponse:
    """What each consumer group could not handle, for the operators (network organisers): counts and errors, never
    the events themselves, which carry personal data."""
    if not who.is_network:
        raise HTTPException(403, "Only network organisers operate the system's dead letters")
    settings = request.app.state.runtime.settings
    counts = await dead_letter_counts(settings.kafka_bootstrap_servers)
    letters = {g: [d.summary() for d in await read_dead_letters(g, settings.kafka_bootstrap_servers)][-20:]
               for g, n in counts.items() if n}
    return page(request, "dead_letters.html", _context(who, counts=counts, letters=letters))


async def _units_page(
    request: Request,
    directory: Directory,
    who: auth.OrganiserScope,
    errors: dict[str, str],
    status: int = 200,
    values: dict[str, Any] | None = None,
) -> HTMLResponse:
    units = await directory.units()
    return page(
        request,
        "units.html",
        _context(who, units=units, kind_names=KIND_NAMES, errors=errors, values=values or {}),
        status,
    )


@router.get("/admin/units", response_class=HTMLResponse)
async def units(request: Request, who: CurrentOrganiser, directory: DirectoryDep) -> HTMLResponse:
    return await _units_page(request, directory, who, {})


@router.post("/admin/units", response_class=HTMLResponse)
async def define_unit(request: Request, who: CurrentOrganiser, directory: DirectoryDep) -> Response:
    form = await request.form()
    kind, name, parent_id, unit_id = (str(form.get(k) or "") for k in ("kind", "name", "parent_id", "unit_id"))
    try:
        await directory.define_unit(kind, name, by=who, unit_id=unit_id or None, parent_id=parent_id or None)
    except AccountProblem as problem:
        return await _units_page(request, directory, who, problem.errors, 422, {"kind": kind, "name": name})
    except LookupError:
        raise HTTPException(404, "There is no such unit in the part of the network you look after") from None
    return RedirectResponse("/admin/units", status_code=303)


@router.get("/admin/roles", response_class=HTMLResponse)
async def roles(
    request: Request, who: CurrentOrganiser, directory: DirectoryDep, roster: RosterDep, member: str = ""
) -> HTMLResponse:
    """The roles given; with `member` (the member page's "Give a role" link) the form to give that member one."""
    return await _roles_page(request, directory, roster, who, {}, member_id=member)


async def _roles_page(
    request: Request,
    directory: Directory,
    roster: Roster,
    who: auth.OrganiserScope,
    errors: dict[str, str],
    status: int = 200,
    member_id: str = "",
) -> HTMLResponse:
    grants = await directory.roles(who)
    units = await directory.units()
    names = await directory.names_of([g.member_id for g in grants if g.member_id],
                                     [g.organiser_id for g in grants if g.organiser_id])
    grant_to = (await roster.member(who, member_id, audit=False) or {}).get("member") if member_id else None
    context = _context(
        who, grants=grants, units=units, role_names=ROLES, errors=errors, scope_label=await directory.scope_labels(),
        revoked=request.query_params.get("revoked"), names=names, grant_to=grant_to,
    )
    return page(request, "roles.html", context, status)


@router.post("/admin/roles", response_class=HTMLResponse)
async def grant_role(
    request: Request, who: CurrentOrganiser, directory: DirectoryDep, roster: RosterDep
) -> Response:
    form = await request.form()
    member_id, role, scope_type, scope_id = (
        str(form.get(k) or "") for k in ("member_id", "role", "scope_type", "scope_id")
    )
    if await roster.member(who, member_id, audit=False) is None:
        return await _roles_page(
            request, directory, roster, who, {"member_id": "Choose a member of the part you look after"}, 422
        )
    try:
        await directory.grant_role(member_id, role, scope_type, scope_id or None, by=who)
    except AccountProblem as problem:
        return await _roles_page(request, directory, roster, who, problem.errors, 422, member_id=member_id)
    return RedirectResponse("/admin/roles", status_code=303)


@router.get("/admin/audit", response_class=HTMLResponse)
async def audit_log(request: Request, who: CurrentOrganiser, roster: RosterDep) -> HTMLResponse:
    entries = await roster.audit_entries(who)
    return page(request, "audit.html", _context(who, entries=entries))


@router.get("/admin/origins", response_class=HTMLResponse)
async def origins(request: Request, who: CurrentOrganiser, allowed: OriginsDep) -> HTMLResponse:
    return await _origins_page(request, allowed, who, {})


async def _origins_page(
    request: Request, allowed: AllowedOrigins, who: auth.OrganiserScope, errors: dict[str, str], status: int = 200
) -> HTMLResponse:
    rows = await allowed.all()
    return page(request, "origins.html", _context(who, origins=rows, errors=errors), status)


@router.post("/admin/origins", response_class=HTMLResponse)
async def change_origins(request: Request, who: CurrentOrganiser, allowed: OriginsDep) -> Response:
    """Sites that may embed the join form and be sent back to: network organisers add and remove them."""
    if not who.is_network:
        raise HTTPException(404, "Only the network's organisers choose which sites may embed the join form")
    form = await request.form()
    origin, note, remove = (str(form.get(k) or "") for k in ("origin", "note", "remove"))
    if remove:
        await allowed.remove(remove, actor=f"organiser:{who.organiser_id}")
    else:
        try:
            await allowed.add(origin, note, actor=f"organiser:{who.organiser_id}")
        except AccountProblem as problem:
            return await _origins_page(request, allowed, who, problem.errors, 422)
    return RedirectResponse("/admin/origins", status_code=303)


# -- the front door: the home page's description and the privacy notice ---------------------------


def _network_only(who: auth.OrganiserScope) -> None:
    if not who.is_network:
        raise HTTPException(403, "Only the network's organisers change the home page and the privacy notice")


async def _front_door_page(
    request: Request,
    who: auth.OrganiserScope,
    front_door: FrontDoor,
    notices: PrivacyNotices,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    notice = await notices.notice()
    home = await front_door.home(meetings=0, campaigns=0)
    values = {"description": home.description, "body": notice.body if notice else "", **(values or {})}
    context = _context(who, values=values, errors=errors or {}, notice=notice, saved=request.query_params.get("saved"))
    return page(request, "front_door.html", context, status)


@router.get("/admin/public", response_class=HTMLResponse)
async def front_door_form(
    request: Request, who: CurrentOrganiser, front_door: FrontDoorDep, notices: PrivacyNoticesDep
) -> HTMLResponse:
    _network_only(who)
    return await _front_door_page(request, who, front_door, notices)


async def _save_front_door(
    request: Request,
    who: auth.OrganiserScope,
    front_door: FrontDoor,
    notices: PrivacyNotices,
    field: str,
    save: Callable[[str, str], Awaitable[Any]],
) -> Response:
    """Save one field of the front door page with `save(text, actor)`, or show the page again with what to fix."""
    _network_only(who)
    text = str((await request.form()).get(field) or "")
    try:
        await save(text, f"organiser:{who.organiser_id}")
    except InvalidInput as problem:
        return await _front_door_page(
            request, who, front_door, notices, values={field: text}, errors=problem.errors, status=422
        )
    return RedirectResponse(f"/admin/public?saved={field}", status_code=303)


@router.post("/admin/public/description", response_class=HTMLResponse)
async def describe_network(
    request: Request, who: CurrentOrganiser, front_door: FrontDoorDep, notices: PrivacyNoticesDep
) -> Response:
    async def save(text: str, actor: str) -> None:
        await front_door.describe(text, actor=actor)

    return await _save_front_door(request, who, front_door, notices, "description", save)


@router.post("/admin/public/privacy", response_class=HTMLResponse)
async def publish_privacy_notice(
    request: Request, who: CurrentOrganiser, front_door: FrontDoorDep, notices: PrivacyNoticesDep
) -> Response:
    """A new version of the privacy notice; the earlier ones stay readable, as members agreed to them."""

    async def save(text: str, actor: str) -> int:
        return await notices.publish(text, actor=actor)

    return await _save_front_door(request, who, front_door, notices, "body", save)


# -- organisers and API keys -----------------------------------------------------------------------


async def _organisers_page(
    request: Request,
    accounts: OrganiserAccounts,
    directory: Directory,
    who: auth.OrganiserScope,
    errors: dict[str, str],
    status: int = 200,
    invited: str | None = None,
) -> HTMLResponse:
    rows = await accounts.list_organisers(who)
    units = await directory.units()
    context = _context(
        who, organisers=rows, units=units, errors=errors, invited=invited, scope_label=await directory.scope_labels(),
        disabled=request.query_params.get("disabled"),
    )
    return page(request, "organisers.html", context, status)


@router.get("/organisers", response_class=HTMLResponse)
async def organisers(
    request: Request, who: CurrentOrganiser, accounts: AccountsDep, directory: DirectoryDep
) -> HTMLResponse:
    return await _organisers_page(request, accounts, directory, who, {})


@router.post("/organisers/invite", response_class=HTMLResponse)
async def invite(
    request: Request, who: CurrentOrganiser, accounts: AccountsDep, directory: DirectoryDep
) -> HTMLResponse:
    form = await request.form()
    email, name, scope_type, scope_id = (str(form.get(k) or "") for k in ("email", "name", "scope_type", "scope_id"))
    try:
        await accounts.create(
            email=email, name=name, scope_type=scope_type, scope_id=scope_id or None, invited_by=who
        )
    except AccountProblem as problem:
        return await _organisers_page(request, accounts, directory, who, problem.errors, 422)
    return await _organisers_page(request, accounts, directory, who, {}, invited=email)


async def _keys_page(
    request: Request,
    accounts: OrganiserAccounts,
    directory: Directory,
    who: auth.OrganiserScope,
    errors: dict[str, str],
    status: int = 200,
    new_key: str | None = None,
) -> HTMLResponse:
    keys = await accounts.api_keys(who)
    units = await directory.units()
    return page(request, "api_keys.html", _context(who, keys=keys, units=units, errors=errors, new_key=new_key), status)


@router.get("/organisers/api-keys", response_class=HTMLResponse)
async def api_keys(
    request: Request, who: CurrentOrganiser, accounts: AccountsDep, directory: DirectoryDep
) -> HTMLResponse:
    return await _keys_page(request, accounts, directory, who, {})


@router.post("/organisers/api-keys", response_class=HTMLResponse)
async def create_api_key(
    request: Request, who: CurrentOrganiser, accounts: AccountsDep, directory: DirectoryDep
) -> HTMLResponse:
    form = await request.form()
    name, scope_type, scope_id = (str(form.get(k) or "") for k in ("name", "scope_type", "scope_id"))
    try:
        _, key = await accounts.create_api_key(
            name, scope_type or who.scope_type, scope_id or (who.scope_id or ""), who
        )
    except AccountProblem as problem:
        return await _keys_page(request, accounts, directory, who, problem.errors, 422)
    return await _keys_page(request, accounts, directory, who, {}, 201, new_key=key)


@router.post("/organisers/api-keys/{key_id}/revoke")
async def revoke_api_key(who: CurrentOrganiser, revoking: RevokingDep, key_id: str) -> Response:
    try:
        await revoking.revoke_api_key(key_id, who)
    except CannotRevoke:
        raise HTTPException(404, "There is no such API key in the part of the network you look after") from None
    return RedirectResponse("/organisers/api-keys", status_code=303)


# -- disabling organisers and revoking roles: each asks first --------------------------------------


@router.get("/organisers/{organiser_id}/disable", response_class=HTMLResponse)
async def confirm_disable(
    request: Request, who: CurrentOrganiser, revoking: RevokingDep, directory: DirectoryDep, organiser_id: str
) -> Response:
    try:
        row = await revoking.organiser_to_disable(organiser_id, who)
    except CannotRevoke:
        raise HTTPException(404, "There is no organiser you can disable at this address") from None
    context = _context(who, organiser=row, scope_label=await directory.scope_labels())
    return page(request, "disable_organiser.html", context)


@router.post("/organisers/{organiser_id}/disable")
async def disable_organiser(who: CurrentOrganiser, revoking: RevokingDep, organiser_id: str) -> Response:
    """Their sessions, API keys, digests and feed end in every service within seconds."""
    try:
        await revoking.disable_organiser(organiser_id, who)
    except CannotRevoke:
        raise HTTPException(404, "There is no organiser you can disable at this address") from None
    return RedirectResponse("/organisers?disabled=1", status_code=303)


@router.get("/admin/roles/{grant_id}/revoke", response_class=HTMLResponse)
async def confirm_revoke_role(
    request: Request, who: CurrentOrganiser, revoking: RevokingDep, directory: DirectoryDep, grant_id: str
) -> Response:
    try:
        await revoking.role_to_revoke(grant_id, who)
    except CannotRevoke:
        raise HTTPException(404, "There is no role you can revoke at this address") from None
    grant = next(g for g in await directory.roles(who) if g.id == grant_id)
    context = _context(who, grant=grant, role_names=ROLES, scope_label=await directory.scope_labels())
    return page(request, "revoke_role.html", context)


@router.post("/admin/roles/{grant_id}/revoke")
async def revoke_role(who: CurrentOrganiser, revoking: RevokingDep, grant_id: str) -> Response:
    """The holder's sessions of that scope, their API keys and that scope's digest end."""
    try:
        await revoking.revoke_role(grant_id, who)
    except CannotRevoke:
        raise HTTPException(404, "There is no role you can revoke at this address") from None
    return RedirectResponse("/admin/roles?revoked=1", status_code=303)
