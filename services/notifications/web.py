"""Organisers' pages of notifications, under /notifications/organise: their digests (daily or weekly, the
private feed's address), the emails' editable wording with a preview, the follow-up sequence, and the
delivery log of their scope. Also `attach`, which hands the pages the organisers, digests and follow-ups use cases.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.confirmations import autoresponder_previews
from services.notifications.digest_schedule import PERIODS
from services.notifications.digests import Digests
from services.notifications.feeds import feed_url
from services.notifications.feeds import router as feeds_router
from services.notifications.followups import PLACEHOLDERS, FollowUps, InvalidStep, StepInput
from services.notifications.organisers import Organisers
from services.notifications.wording import AUTORESPONDERS, EmailSettings
from shared import auth
from shared.auth import OrganiserScope
from shared.web import MAX_PAGE, make_templates

TEMPLATES = Path(__file__).parent / "templates"
templates = make_templates(TEMPLATES, {"service": "notifications"})
router = APIRouter(prefix="/notifications/organise", tags=["organiser pages"])
LOG_PAGE_SIZE = 50


# Composition -------------------------------------------------------------------------------------------


ROUTERS = (feeds_router, router)


def attach(app: FastAPI, organisers: Organisers, digests: Digests, follow_ups: FollowUps) -> None:
    app.state.organisers = organisers
    app.state.digests = digests
    app.state.follow_ups = follow_ups


# Who is asking: the organiser session every service verifies locally (shared/auth.py) ---------------------

Organiser = Annotated[OrganiserScope, Depends(auth.require_organiser)]


def _digests(request: Request) -> Digests:
    return request.app.state.digests  # type: ignore[no-any-return]


# Dependencies are coroutines, so FastAPI calls them on the event loop: a plain function would be sent to a worker
# thread and back on every request.
async def _digests_dep(request: Request) -> Digests:
    return _digests(request)


async def _follow_ups(request: Request) -> FollowUps:
    return request.app.state.follow_ups  # type: ignore[no-any-return]


async def _organisers(request: Request) -> Organisers:
    return request.app.state.organisers  # type: ignore[no-any-return]


DigestsDep = Annotated[Digests, Depends(_digests_dep)]
FollowUpsDep = Annotated[FollowUps, Depends(_follow_ups)]
OrganisersDep = Annotated[Organisers, Depends(_organisers)]


async def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    digests = _digests(request)
    wording = digests.email_settings.cached()  # the network's name: read at most every few seconds, not per page
    if wording is None:
        async with digests.uows.begin() as uow:
            wording = await digests.email_settings.load(uow.session)
    return templates.TemplateResponse(
        request, name, {"network_name": wording["network_name"], **context}, status_code=status
    )


def _require_network(organiser: OrganiserScope) -> None:
    if not organiser.is_network:
        raise HTTPException(403, "Only organisers of the whole network can change this; ask one of them")


# Pages -------------------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def home(request: Request, organiser: Organiser) -> HTMLResponse:
    return await _page(request, "organise_home.html", {"organiser": organiser})


@router.get("/digests", response_class=HTMLResponse)
async def my_digests(
    request: Request, organiser: Organiser, digests: DigestsDep, organisers: OrganisersDep, saved: str = ""
) -> HTMLResponse:
    async with digests.uows.begin() as uow:
        me = await organisers.organiser(uow.session, organiser.organiser_id)
        subscriptions = await organisers.subscriptions_of(uow.session, organiser.organiser_id) if me else []
        past = await organisers.digests_of(uow.session, organiser.organiser_id, 20) if me else []
        names = {
            s.id: await digests.scope_name(uow.session, s.scope_type, s.scope_id, "the whole network")
            for s in subscriptions
        }
    return await _page(
        request,
        "organise_digests.html",
        {
            "organiser": organiser,
            "me": me,
            "periods": PERIODS,
            "subscriptions": subscriptions,
            "scope_names": names,
            "past": past,
            "feed_url": feed_url(digests.settings.public_base_url, me.feed_token) if me else None,
            "saved": saved,
        },
    )


@router.post("/digests/period")
async def choose_period(request: Request, organiser: Organiser, organisers: OrganisersDep) -> Response:
    period = str((await request.form()).get("period", ""))
    if period not in PERIODS:
        raise HTTPException(422, "Choose daily or weekly")
    async with organisers.uows.begin() as uow:
        if await organisers.organiser(uow.session, organiser.organiser_id) is None:
            raise HTTPException(404, "Your organiser role has not reached notifications yet: try again in a minute")
        await organisers.choose_period(uow, organiser.organiser_id, period)
    return RedirectResponse("/notifications/organise/digests?saved=period", status_code=303)


@router.post("/digests/feed")
async def renew_feed(request: Request, organiser: Organiser, organisers: OrganisersDep) -> Response:
    """Revoke the feed's address and make a new one (for a leaked address, or a feed reader you stopped using)."""
    async with organisers.uows.begin() as uow:
        if await organisers.organiser(uow.session, organiser.organiser_id) is None:
            raise HTTPException(404, "Your organiser role has not reached notifications yet: try again in a minute")
        await organisers.renew_feed_token(uow, organiser.organiser_id)
    return RedirectResponse("/notifications/organise/digests?saved=feed", status_code=303)


@router.get("/digests/{digest_id}", response_class=HTMLResponse)
async def one_digest(request: Request, digest_id: str, organiser: Organiser, organisers: OrganisersDep) -> HTMLResponse:
    async with organisers.uows.begin() as uow:
        rows = [d for d in await organisers.digests_of(uow.session, organiser.organiser_id, 500) if d.id == digest_id]
    if not rows:
        raise HTTPException(404, "No digest of yours has this address")
    d = rows[0]
    return await _page(
        request,
        "organise_preview.html",
        {
            "organiser": organiser,
            "heading": d.title,
            "subject": d.title,
            "html": d.body_html,
            "text": d.body_text,
            "back": "/notifications/organise/digests",
        },
    )


# Emails: the wording organisers edit, with a preview ---------------------------------------------------


def _sample_digest(network_name: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "title": f"{network_name}: your weekly digest (sample)",
        "scope_name": network_name,
        "period": "weekly",
        "since": "Monday",
        "new_members": {"total": 5, "by_level": [{"label": "Supporter", "count": 3}, {"label": "Active", "count": 2}]},
        "upcoming_meetings": [
            {
                "title": "Monthly organising meeting",
                "when": "Thu 12 Mar, 19:00",
                "venue": "Community Centre",
                "going": 14,
                "capacity": 30,
                "waitlisted": 0,
                "new_rsvps": 4,
                "public_url": "#",
            }
        ],
        "actions": {"total": 27, "campaigns": [{"title": "Fair Pay Now", "total": 27, "by_kind": {"petition": 27}}]},
        "campaigns_launched": [],
        "elsewhere": {
            "heading": "Your region's groups",
            "units": [
                {
                    "name": "Northfield group",
                    "new_members": 2,
                    "actions": 9,
                    "meetings": ["Street stall"],
                    "campaigns": [],
                    "summary": "2 new members; 9 actions; meetings: Street stall",
                }
            ],
        },
        "period_end": now.isoformat(),
    }


async def _previews(request: Request, wording: dict[str, str]) -> list[dict[str, str]]:
    """The confirmations, the digest and the first follow-up step as they would look with `wording`."""
    digests, follow_ups = _digests(request), request.app.state.follow_ups
    previews = autoresponder_previews(digests.notifications, wording)
    text_part, html_part = digests.render(_sample_digest(wording["network_name"]), wording, "Alex Organiser")
    previews.append(
        {"heading": "Organisers' digest", "subject": "(the digest's title)", "text": text_part, "html": html_part}
    )
    async with digests.uows.begin() as uow:
        steps = await follow_ups.steps(uow.session)
        if steps:
            subject, text_part, html_part = await follow_ups.preview(uow.session, steps[0], wording)
            previews.append(
                {"heading": f"Follow-up: {steps[0].step_key}", "subject": subject, "text": text_part, "html": html_part}
            )
    return previews


@router.get("/emails", response_class=HTMLResponse)
async def email_settings(request: Request, organiser: Organiser, digests: DigestsDep, saved: str = "") -> HTMLResponse:
    async with digests.uows.begin() as uow:
        values = await digests.email_settings.load(uow.session)
    return await _page(
        request,
        "organise_emails.html",
        {
            "organiser": organiser,
            "values": values,
            "labels": EmailSettings.LABELS,
            "autoresponders": AUTORESPONDERS,
            "saved": saved,
            "previews": [],
        },
    )


@router.post("/emails", response_class=HTMLResponse)
async def save_email_settings(request: Request, organiser: Organiser, digests: DigestsDep) -> Response:
    """Save the wording, or (the Preview button) show the emails with it without saving."""
    form = await request.form()
    submitted = {k: str(form.get(k, "")).strip() for k in EmailSettings.LABELS}
    errors = {k: "Enter some text" for k in ("network_name", "sender_name") if not submitted[k]}
    errors |= {k: "Keep it under 2,000 characters" for k, v in submitted.items() if len(v) > 2000}
    if form.get("action") == "preview" or errors:
        async with digests.uows.begin() as uow:
            current = await digests.email_settings.load(uow.session)
        wording = {**current, **{k: v for k, v in submitted.items() if v}}
        return await _page(
            request,
            "organise_emails.html",
            {
                "organiser": organiser,
                "values": submitted,
                "labels": EmailSettings.LABELS,
                "autoresponders": AUTORESPONDERS,
                "errors": errors,
                "previews": [] if errors else await _previews(request, wording),
                "saved": "",
            },
            status=422 if errors else 200,
        )
    _require_network(organiser)
    async with digests.uows.begin() as uow:
        await digests.email_settings.save(uow.session, submitted, organiser.organiser_id)
    digests.email_settings.forget()  # committed: the next email reads it
    return RedirectResponse("/notifications/organise/emails?saved=1", status_code=303)


# Follow-up sequence ------------------------------------------------------------------------------------


@router.get("/follow-ups", response_class=HTMLResponse)
async def follow_up_steps(
    request: Request, organiser: Organiser, follow_ups: FollowUpsDep, saved: str = ""
) -> HTMLResponse:
    async with follow_ups.uows.begin() as uow:
        steps = await follow_ups.steps(uow.session)
        counts = await follow_ups.status_counts(uow.session)
    return await _page(
        request,
        "organise_follow_ups.html",
        {"organiser": organiser, "steps": steps, "counts": counts, "saved": saved},
    )


def _step_form_values(step: Any) -> dict[str, Any]:
    if step is None:
        return {
            "step_key": "",
            "day_offset": 7,
            "subject": "",
            "body": "",
            "cta_label": "",
            "cta_url": "",
            "enabled": True,
            "position": 0,
        }
    return {
        k: getattr(step, k) or ("" if k not in ("enabled", "day_offset", "position") else getattr(step, k))
        for k in ("step_key", "day_offset", "subject", "body", "cta_label", "cta_url", "enabled", "position")
    }


@router.get("/follow-ups/new", response_class=HTMLResponse)
async def new_step(request: Request, organiser: Organiser) -> HTMLResponse:
    return await _page(
        request,
        "organise_follow_up_step.html",
        {
            "organiser": organiser,
            "values": _step_form_values(None),
            "errors": {},
            "new": True,
            "placeholders": PLACEHOLDERS,
            "preview": None,
        },
    )


@router.get("/follow-ups/{step_key}", response_class=HTMLResponse)
async def edit_step(request: Request, step_key: str, organiser: Organiser, follow_ups: FollowUpsDep) -> HTMLResponse:
    async with follow_ups.uows.begin() as uow:
        step = await follow_ups.step(uow.session, step_key)
        if step is None:
            raise HTTPException(404, "There is no follow-up step with this name")
        subject, text_part, html_part = await follow_ups.preview(uow.session, step)
    return await _page(
        request,
        "organise_follow_up_step.html",
        {
            "organiser": organiser,
            "values": _step_form_values(step),
            "errors": {},
            "new": False,
            "placeholders": PLACEHOLDERS,
            "preview": {"heading": "Preview", "subject": subject, "text": text_part, "html": html_part},
        },
    )


@router.post("/follow-ups", response_class=HTMLResponse)
async def save_step(request: Request, organiser: Organiser, follow_ups: FollowUpsDep) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: str(form.get(k, "")) for k in ("step_key", "subject", "body", "cta_label", "cta_url")}
    values["enabled"] = form.get("enabled") == "on"
    errors: dict[str, str] = {}
    for number in ("day_offset", "position"):
        raw = str(form.get(number, "0") or "0").strip()
        try:
            values[number] = int(raw)
        except ValueError:
            values[number] = raw
            errors[number] = "Enter a whole number"
    step = StepInput(
        step_key=values["step_key"].strip(),
        day_offset=values["day_offset"] if isinstance(values["day_offset"], int) else 0,
        subject=values["subject"],
        body=values["body"],
        cta_label=values["cta_label"],
        cta_url=values["cta_url"],
        enabled=values["enabled"],
        position=values["position"] if isinstance(values["position"], int) else 0,
    )
    try:
        step.validate()
    except InvalidStep as exc:
        errors = exc.errors | errors
    new = form.get("new") == "1"
    if errors or form.get("action") == "preview":
        preview = None
        if not errors:
            async with follow_ups.uows.begin() as uow:
                subject, text_part, html_part = await follow_ups.preview(uow.session, step)
            preview = {"heading": "Preview", "subject": subject, "text": text_part, "html": html_part}
        return await _page(
            request,
            "organise_follow_up_step.html",
            {
                "organiser": organiser,
                "values": values,
                "errors": errors,
                "new": new,
                "placeholders": PLACEHOLDERS,
                "preview": preview,
            },
            status=422 if errors else 200,
        )
    _require_network(organiser)
    async with follow_ups.uows.begin() as uow:
        if new and await follow_ups.step(uow.session, step.step_key) is not None:
            raise HTTPException(409, "A step with this name exists already: choose another name")
        await follow_ups.save_step(uow, step)
    return RedirectResponse("/notifications/organise/follow-ups?saved=1", status_code=303)


# Delivery log ------------------------------------------------------------------------------------------


def _scope_condition(organiser: OrganiserScope) -> str:
    """SQL over `r` (recipients): is this member in the organiser's scope?"""
    if organiser.is_network:
        return "TRUE"
    if organiser.scope_type == "region":
        return (
            "(r.region_id = :scope_id OR r.group_ids && "
            "ARRAY(SELECT unit_id::text FROM units WHERE parent_id = :scope_id))"
        )
    if organiser.scope_type == "subteam":
        return ":scope_id = ANY(r.subteam_ids)"
    return ":scope_id = ANY(r.group_ids)"


# The kinds of email ever queued, for the log's filter: one index probe per kind (uq_deliveries_kind_subject_recipient
# leads with kind) instead of reading every delivery, as DISTINCT does (2 s at 400,000 deliveries, bench/pages.py).
KINDS_SENT = (
    "WITH RECURSIVE k AS ((SELECT kind FROM deliveries ORDER BY kind LIMIT 1) UNION ALL "
    "SELECT (SELECT d.kind FROM deliveries d WHERE d.kind > k.kind ORDER BY d.kind LIMIT 1) FROM k "
    "WHERE k.kind IS NOT NULL) SELECT kind FROM k WHERE kind IS NOT NULL"
)


DELIVERY_STATUSES = ("pending", "sending", "sent", "bounced", "failed", "suppressed")
# The last week's summary counts each status up to this many (an index range each, ix_deliveries_status_created_at)
# and says "more than" beyond: a mailing to a national network is hundreds of thousands of deliveries in a week.
SUMMARY_UP_TO = 10_000


class WeekSummaries:
    """The delivery log's last-week summary of each scope, kept for SUMMARY_TTL_S: it is the same on every page of
    the log and whatever its filters, and a week's counts need not be fresher than that. A few hundred scopes at most
    (the oldest is forgotten first)."""

    def __init__(self, ttl_s: float, most: int = 500) -> None:
        self.ttl_s, self.most = ttl_s, most
        self._kept: dict[tuple[str, str | None], tuple[float, list[Any]]] = {}

    def get(self, scope: tuple[str, str | None]) -> list[Any] | None:
        kept = self._kept.get(scope)
        return kept[1] if kept is not None and time.monotonic() - kept[0] < self.ttl_s else None

    def put(self, scope: tuple[str, str | None], summary: list[Any]) -> None:
        self._kept.pop(scope, None)
        self._kept[scope] = (time.monotonic(), summary)
        while len(self._kept) > self.most:
            del self._kept[next(iter(self._kept))]


SUMMARY_TTL_S = 15.0
_week_summaries = WeekSummaries(SUMMARY_TTL_S)


async def _week_summary(session: AsyncSession, organiser: OrganiserScope, join: str, in_scope: str) -> list[Any]:
    """The last seven days' deliveries to the organiser's scope by status, each counted up to SUMMARY_UP_TO + 1."""
    rows = await session.execute(
        text(
            f"SELECT s.status, (SELECT count(*) FROM (SELECT 1 FROM deliveries d {join} recipients r "
            f"ON r.member_id = d.recipient_id WHERE {in_scope} AND d.status = s.status "
            "AND d.created_at >= :since LIMIT :up_to) x) AS n "
            "FROM unnest(CAST(:statuses AS varchar[])) AS s(status) ORDER BY s.status"
        ),
        {"scope_id": organiser.scope_id or "", "since": datetime.now(UTC) - timedelta(days=7),
         "statuses": list(DELIVERY_STATUSES), "up_to": SUMMARY_UP_TO + 1},
    )
    return [r for r in rows.all() if r.n]


@router.get("/deliveries", response_class=HTMLResponse)
async def delivery_log(
    request: Request, organiser: Organiser, digests: DigestsDep, status: str = "", kind: str = "", page: int = 1
) -> HTMLResponse:
    """Emails sent (or not) to members in the organiser's scope, newest first."""
    page = min(max(1, page), MAX_PAGE)
    # Members of a region or group are known from the recipients mirror; the whole network also sees
    # emails to people no longer there (erased members' rows keep no address).
    join = "LEFT JOIN" if organiser.is_network else "JOIN"
    filters = [_scope_condition(organiser)]
    params: dict[str, Any] = {
        "scope_id": organiser.scope_id or "",
        "limit": LOG_PAGE_SIZE + 1,
        "offset": (page - 1) * LOG_PAGE_SIZE,
    }
    if status:
        filters.append("d.status = :status")
        params["status"] = status
    if kind:
        filters.append("d.kind = :kind")
        params["kind"] = kind
    async with digests.uows.begin() as uow:
        rows = (
            await uow.session.execute(
                text(
                    "SELECT d.id, d.kind, d.recipient_id, d.recipient_email, d.subject, d.status, d.attempts, "
                    "d.created_at, d.sent_at, d.last_error, r.name FROM deliveries d "
                    f"{join} recipients r ON r.member_id = d.recipient_id WHERE {' AND '.join(filters)} "
                    "ORDER BY d.created_at DESC, d.id LIMIT :limit OFFSET :offset"
                ),
                params,
            )
        ).all()
        kinds = (await uow.session.execute(text(KINDS_SENT))).scalars().all()
        summary = _week_summaries.get((organiser.scope_type, organiser.scope_id))
        if summary is None:
            summary = await _week_summary(uow.session, organiser, join, filters[0])
            _week_summaries.put((organiser.scope_type, organiser.scope_id), summary)
    return await _page(
        request,
        "organise_deliveries.html",
        {
            "organiser": organiser,
            "rows": rows[:LOG_PAGE_SIZE],
            "has_more": len(rows) > LOG_PAGE_SIZE,
            "page": page,
            "status": status,
            "kind": kind,
            "kinds": kinds,
            "statuses": DELIVERY_STATUSES,
            "summary": summary,
            "summary_up_to": SUMMARY_UP_TO,
        },
    )
