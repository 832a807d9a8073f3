"""Every organiser and API route of the four services enforces scope (issue #14, point 5).

The routes come from each service's app (`app.routes`, HTML pages hidden from OpenAPI included) and are checked
against its OpenAPI document, so a new route is covered as soon as it exists: a route missing from `RULES` fails
`test_every_route_is_classified` with a message saying to classify it.

Objects are seeded in one region (Birmingham and the Black Country, "home"): a member, a meeting with an RSVP, a
campaign with a petition (signed) and a pledge (pending), API keys, a tagging. Each route is then called through
the gateway by:

- a network organiser (or network API key) — in scope;
- an organiser (key) of the home region — in scope;
- an organiser (key) of another region (East Midlands) — out of scope;
- an organiser (key) of a group (Birmingham South: in the home region, but the objects are the region's or
  another group's) — out of scope;
- a revoked API key;
- nobody.

Out of scope: 401, 403 or 404 (or, for a page, the way to sign in; a form whose scope field names a part of the
network outside the organiser's answers 422 saying so), and after a refused unsafe request nothing changed in the
service's database. In scope: not refused (a read succeeds). A list answered to an organiser out
of scope does not contain the home region's object.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import importlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from deploy.local import launcher
from services.membership import seeds
from tests.conftest import asyncpg_dsn
from tests.membership.conftest import make_organiser
from tests.support.people import unique_email

SERVICES = ("membership", "events", "notifications", "campaigns")
HOME = seeds.unit_id("region", "birmingham-black-country")
OTHER = seeds.unit_id("region", "east-midlands")
GROUP = seeds.unit_id("group", "birmingham-south")  # members joining with B1 land in birmingham-central
ORIGIN = {"Origin": launcher.GATEWAY_URL}  # same-origin, as a browser's form POST (CSRF checks let it through)
OPERATIONAL = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/healthz", "/readyz", "/metrics"}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

# -- the callers -------------------------------------------------------------------------------------------------
CALLERS = ("network", "home_region", "other_region", "group", "revoked_key", "nobody")
IN_SCOPE = {"network", "home_region"}


@dataclass
class Seed:
    """The objects of the home region every path parameter points at, and who calls."""

    sessions: dict[str, dict[str, str]] = field(default_factory=dict)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    dbs: dict[str, asyncpg.Connection] = field(default_factory=dict)
    client: httpx.AsyncClient | None = None
    fresh: Callable[[str], Awaitable[str]] | None = None
    step: dict[str, str] = field(default_factory=dict)  # a follow-up step as its form sends it

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


# -- the rules ---------------------------------------------------------------------------------------------------
Params = Callable[[Seed], Awaitable[dict[str, str]] | dict[str, str]]


@dataclass(frozen=True)
class Rule:
    """How a route treats the callers.

    kind:
      public   — anyone, on purpose (join, RSVP, public pages); checked to reveal no joining link, check-in code or
                 member's address
      link     — authorised by a signed token in its link (emailed to a member or organiser); not a scope question
      any      — any signed-in organiser (their own settings, the network's configuration); nobody: refused
      own      — the caller's own object: another organiser's is not found, whoever asks
      network  — network organisers only
      scoped   — the home region's object: its organisers and the network's only
      listing  — any organiser; the home region's object listed only to those in scope
    """

    kind: str
    params: Params | None = None
    body: Callable[[Seed], Any] | None = None
    form: bool = False
    api: bool = False  # authenticated with an API key (OSDI) rather than an organiser session
    marker: str = ""  # for a listing: the seed id that must appear only to callers in scope
    query: dict[str, str] = field(default_factory=dict)
    files: bool = False
    shown_to: frozenset[str] = frozenset(IN_SCOPE)  # for a listing: who sees the home region's object
    absent_ok: bool = False  # a 404 in scope means the data is not there (an empty MP dataset), not a refusal
    # the scope is a field of the form (a new campaign's, a role's): out of it, the form answers 422 and says so
    form_refuses: bool = False
    # what callers in scope send instead of `body` (a preview rather than a change to the whole network's emails)
    allowed_body: Callable[[Seed], Any] | None = None


def P(**names: str) -> Params:
    """Path parameters from seed ids: P(meeting_id="meeting")."""
    return lambda s: {k: s[v] for k, v in names.items()}


def F(kind: str, **extra: str) -> Params:
    """A fresh home-region object for a route that destroys it (cancel, close, erase, revoke)."""

    async def make(s: Seed) -> dict[str, str]:
        assert s.fresh is not None
        made = await s.fresh(kind)
        return {k: (made if v == "*" else s[v]) for k, v in extra.items()}

    return make


def _in_days(days: int, hours: int = 0) -> str:
    return (datetime.now(UTC) + timedelta(days=days, hours=hours)).replace(microsecond=0).isoformat()


def meeting_body(s: Seed) -> dict[str, Any]:
    return {"title": "Scope check meeting", "kind": "hybrid", "starts_at": _in_days(20), "ends_at": _in_days(20, 2),
            "timezone": "Europe/London", "venue": "Digbeth community hall", "scope_type": "region", "scope_id": HOME,
            "online_url": f"https://meet.example.org/{uuid.uuid4().hex}"}


def meeting_form(s: Seed) -> dict[str, str]:
    start = datetime.now(UTC) + timedelta(days=21)
    return {"title": "Scope check meeting", "description": "", "kind": "in_person", "scope": f"region:{HOME}",
            "starts_at": start.strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"), "timezone": "Europe/London",
            "venue": "Digbeth community hall", "online_url": "", "capacity": "", "rsvp_deadline": "",
            "reminders": "60"}


def person(s: Seed) -> dict[str, Any]:
    return {"name": "Walk In", "email": unique_email("scope")}


def osdi_person(s: Seed) -> dict[str, Any]:
    return {"person": {"given_name": "Scope", "family_name": "Helper",
                       "email_addresses": [{"address": unique_email("scope"), "primary": True}]}}


def campaign_body(s: Seed) -> dict[str, Any]:
    return {"title": "Scope check campaign", "summary": "Checking scopes", "goal": "Every route checks",
            "scope_type": "region", "scope_id": HOME}


def ask_body(s: Seed) -> dict[str, Any]:
    return {"kind": "share", "title": "Share it", "body": "Tell your friends", "share_url": "https://example.org/"}


def tagging_body(s: Seed) -> dict[str, Any]:
    return {"_links": {"osdi:person": {"href": f"{launcher.GATEWAY_URL}/api/v2/people/{s['member']}"}}}


EMAIL_WORDING = {"network_name": "Scope Check Network", "sender_name": "Scope Check", "sign_off": "Thanks",
                 "digest_intro": "Here is what happened"}
PUBLIC, LINK, ANY, NETWORK = Rule("public"), Rule("link"), Rule("any"), Rule("network")
MAILING_FORM = {"subject": "Scope check mailing", "body": "Hello {first_name}", "action": "count"}

RULES: dict[str, Rule] = {
    # membership: the front door and the member's own links
    "membership GET /": PUBLIC,
    "membership GET /privacy": PUBLIC,
    "membership GET /join": PUBLIC,
    "membership POST /join": PUBLIC,
    "membership OPTIONS /join": PUBLIC,
    "membership GET /join/thanks": PUBLIC,
    "membership POST /join/more": PUBLIC,  # what it keeps goes where the browser's own join went (join_followups)
    "membership GET /join/confirm": LINK,
    "membership GET /signin": PUBLIC,
    "membership POST /signin": PUBLIC,
    "membership POST /signin/out": PUBLIC,  # ends whatever session the browser has; nothing to scope
    "membership GET /organisers/set-password": LINK,
    "membership POST /organisers/set-password": LINK,
    "membership GET /preferences": LINK,
    "membership POST /preferences": LINK,
    "membership GET /unsubscribe": LINK,
    "membership POST /unsubscribe": LINK,
    "membership GET /me/data": LINK,
    "membership GET /me/download": LINK,
    "membership POST /me/download": LINK,
    "membership GET /me/leave": LINK,
    "membership POST /me/leave": LINK,
    "membership GET /me/erase": LINK,
    "membership POST /me/erase": LINK,
    "membership POST /me/data": LINK,  # asks for a download: only emails the member a link to confirm it
    "membership GET /me/confirm": LINK,
    "membership POST /me/confirm": LINK,
    "membership GET /join/changes": LINK,
    "membership POST /join/changes": LINK,
    "membership POST /join/confirm": LINK,
    # membership: organiser pages
    "membership GET /members": Rule("listing", marker="member"),
    "membership GET /members/export.csv": Rule("listing", marker="member_email"),
    "membership GET /members/{member_id}": Rule("scoped", P(member_id="member")),
    "membership GET /members/{member_id}/erase": Rule("network", P(member_id="member")),  # asks first
    "membership POST /members/{member_id}/erase": Rule("network", F("member", member_id="*")),
    "membership POST /members/{member_id}/notes": Rule(
        "scoped", P(member_id="member"), form=True, body=lambda s: {"note": "Called them about the scope check"}),
    "membership POST /members/{member_id}/tags": Rule(
        "scoped", P(member_id="member"), form=True, body=lambda s: {"new_tag": "scope check"}),
    "membership GET /members/{member_id}/tags/{tag_id}/remove": Rule("scoped", P(member_id="member", tag_id="tag")),
    "membership POST /members/{member_id}/tags/{tag_id}/remove": Rule(
        "scoped", F("tagging", member_id="member", tag_id="tag"), form=True, body=lambda s: {}),
    "membership GET /admin": ANY,
    "membership GET /admin/units": ANY,  # the network's shape: names of regions and groups, nobody's data
    "membership POST /admin/units": Rule("scoped", form=True, form_refuses=True, body=lambda s: {
        "kind": "group", "name": f"Scope check {uuid.uuid4().hex[:8]}", "parent_id": HOME}),
    "membership GET /admin/roles": Rule("listing", marker="member"),
    "membership POST /admin/roles": Rule("scoped", form=True, form_refuses=True, body=lambda s: {
        "member_id": s["member"], "role": "organiser", "scope_type": "region", "scope_id": HOME}),
    # the whole log for network organisers; others see what they did themselves
    "membership GET /admin/audit": Rule("listing", marker="member", shown_to=frozenset({"network"})),
    "membership GET /admin/dead-letters": NETWORK,
    "membership GET /admin/roles/{grant_id}/revoke": Rule("scoped", P(grant_id="grant")),  # asks first
    "membership POST /admin/roles/{grant_id}/revoke": Rule("scoped", F("grant", grant_id="*")),
    "membership GET /organisers/{organiser_id}/disable": Rule("scoped", F("organiser", organiser_id="*")),
    "membership POST /organisers/{organiser_id}/disable": Rule("scoped", F("organiser", organiser_id="*")),
    "membership GET /admin/origins": ANY,
    "membership POST /admin/origins": Rule("network", form=True, body=lambda s: {"origin": "not an origin"}),
    "membership GET /admin/public": NETWORK,
    "membership POST /admin/public/description": Rule("network", form=True,
                                                       body=lambda s: {"description": "x" * 20000}),
    "membership POST /admin/public/privacy": Rule("network", form=True, body=lambda s: {"body": ""}),
    "membership GET /organisers": Rule("listing", marker="home_organiser_email"),
    "membership POST /organisers/invite": Rule("scoped", form=True, form_refuses=True, body=lambda s: {
        "email": unique_email("invited"), "name": "Scope Invitee", "scope_type": "region", "scope_id": HOME}),
    "membership GET /organisers/api-keys": Rule("listing", marker="home_key_name"),
    "membership POST /organisers/api-keys": Rule("scoped", form=True, form_refuses=True, body=lambda s: {
        "name": f"Scope {uuid.uuid4().hex[:6]}", "scope_type": "region", "scope_id": HOME}),
    "membership POST /organisers/api-keys/{key_id}/revoke": Rule("scoped", F("key", key_id="*")),
    # membership: OSDI
    "membership GET /api/v2/": Rule("any", api=True),
    "membership GET /api/v2": Rule("any", api=True),
    "membership GET /api/v2/people": Rule("listing", api=True, marker="member"),
    "membership GET /api/v2/people/{person_id}": Rule("scoped", P(person_id="member"), api=True),
    "membership PUT /api/v2/people/{person_id}": Rule(
        "scoped", P(person_id="member"), api=True, body=lambda s: {"given_name": "Scope", "family_name": "Member"}),
    # adding someone new is any key's job; a key never changes an existing person out of its scope (point 1)
    "membership POST /api/v2/person_signup_helper": Rule("any", api=True, body=osdi_person),
    "membership POST /api/v2/people": Rule("any", api=True, body=osdi_person),
    "membership POST /api/v2/people/": Rule("any", api=True, body=osdi_person),
    "membership GET /api/v2/tags": Rule("any", api=True),  # tag names are the network's vocabulary
    "membership POST /api/v2/tags": Rule("any", api=True, body=lambda s: {"name": "scope check"}),
    "membership GET /api/v2/tags/{tag_id}": Rule("any", P(tag_id="tag"), api=True),
    "membership GET /api/v2/tags/{tag_id}/taggings": Rule("listing", P(tag_id="tag"), api=True, marker="member"),
    "membership GET /api/v2/tags/{tag_id}/taggings/{tagging_id}": Rule(
        "scoped", P(tag_id="tag", tagging_id="tagging"), api=True),
    "membership GET /api/v2/people/{person_id}/taggings": Rule("scoped", P(person_id="member"), api=True),
    "membership POST /api/v2/tags/{tag_id}/taggings": Rule("scoped", P(tag_id="tag"), api=True, body=tagging_body),
    "membership DELETE /api/v2/tags/{tag_id}/taggings/{tagging_id}": Rule(
        "scoped", F("tagging", tag_id="tag", tagging_id="*"), api=True),
    # events: organiser pages
    "events GET /events/organise": Rule("listing", marker="meeting"),
    "events GET /events/organise/home.json": ANY,  # the caller's own part of the organisers' home
    "events GET /events/organise/{meeting_id}/cancel": Rule("scoped", P(meeting_id="meeting")),  # asks first
    "events GET /events/organise/new": ANY,
    "events POST /events/organise/new": Rule("scoped", form=True, form_refuses=True, body=meeting_form),
    "events GET /events/organise/{meeting_id}/edit": Rule("scoped", P(meeting_id="meeting")),
    "events POST /events/organise/{meeting_id}/edit": Rule("scoped", P(meeting_id="meeting"), form=True,
                                                          body=meeting_form),
    "events GET /events/organise/{meeting_id}/check-in": Rule("scoped", P(meeting_id="meeting")),
    "events POST /events/organise/{meeting_id}/check-in/{rsvp_id}": Rule(
        "scoped", P(meeting_id="meeting", rsvp_id="rsvp"), form=True, body=lambda s: {"search": ""}),
    "events POST /events/organise/{meeting_id}/walk-ins": Rule(
        "scoped", P(meeting_id="meeting"), form=True, body=person),
    "events POST /events/organise/{meeting_id}/cancel": Rule("scoped", F("meeting", meeting_id="*"), form=True,
                                                            body=lambda s: {"reason": "scope check"}),
    "events GET /events/organise/{meeting_id}/no-shows": Rule("scoped", P(meeting_id="meeting")),
    # events: public pages and the attendee's own link
    "events GET /events": PUBLIC,
    "events GET /events/rsvps/{token}": LINK,
    "events POST /events/rsvps/{token}/cancel": LINK,
    "events GET /events/{meeting_id}": Rule("public", P(meeting_id="meeting")),
    "events POST /events/{meeting_id}/rsvp": PUBLIC,
    "events GET /events/{meeting_id}/rsvp/sent": Rule("public", P(meeting_id="meeting")),
    "events GET /events/{meeting_id}/check-in": Rule("public", P(meeting_id="meeting")),
    "events POST /events/{meeting_id}/check-in": PUBLIC,  # needs the code shown at the venue
    "events GET /calendar/meetings/{meeting_id}.ics": Rule("public", P(meeting_id="meeting")),
    "events GET /calendar/network.ics": PUBLIC,
    "events GET /calendar/{scope_type}/{scope_id}.ics": Rule("public", lambda s: {"scope_type": "region",
                                                                                   "scope_id": HOME}),
    # events: the organisers' JSON API
    "events POST /meetings": Rule("scoped", body=meeting_body),
    "events GET /meetings": Rule("listing", marker="meeting"),
    "events GET /meetings/{meeting_id}": Rule("scoped", P(meeting_id="meeting")),
    "events PATCH /meetings/{meeting_id}": Rule("scoped", P(meeting_id="meeting"),
                                                body=lambda s: {"venue": "Digbeth community hall"}),
    "events POST /meetings/{meeting_id}/cancel": Rule("scoped", F("meeting", meeting_id="*"), body=lambda s: {}),
    "events GET /meetings/{meeting_id}/rsvps": Rule("scoped", P(meeting_id="meeting")),
    "events POST /meetings/{meeting_id}/rsvps": Rule("scoped", P(meeting_id="meeting"), body=person),
    "events POST /meetings/{meeting_id}/rsvps/{rsvp_id}/cancel": Rule(
        "scoped", F("rsvp", meeting_id="meeting", rsvp_id="*")),
    "events POST /meetings/{meeting_id}/rsvps/{rsvp_id}/attendance": Rule(
        "scoped", P(meeting_id="meeting", rsvp_id="rsvp")),
    "events POST /meetings/{meeting_id}/walk-ins": Rule("scoped", P(meeting_id="meeting"), body=person),
    # events: OSDI
    "events GET /api/v2/events": Rule("listing", api=True, marker="meeting"),
    "events POST /api/v2/events": Rule("scoped", api=True, body=lambda s: {
        "title": "Scope check event", "start_date": _in_days(30), "location": {"venue": "Digbeth"},
        "groundswell:scope": {"type": "region", "id": HOME}}),
    "events PUT /api/v2/events/{meeting_id}": Rule("scoped", P(meeting_id="meeting"), api=True,
                                                   body=lambda s: {"description": "Checked for scope"}),
    # a person's attendances: only at meetings the key covers (a list, filtered; one, found only in scope)
    "events GET /api/v2/people/{person_id}/attendances": Rule("listing", P(person_id="member"), api=True),
    "events GET /api/v2/people/{person_id}/attendances/{rsvp_id}": Rule(
        "scoped", P(person_id="member", rsvp_id="rsvp"), api=True, absent_ok=True),
    "events GET /api/v2/events/{meeting_id}": Rule("scoped", P(meeting_id="meeting"), api=True),
    "events GET /api/v2/events/{meeting_id}/attendances": Rule("scoped", P(meeting_id="meeting"), api=True),
    "events GET /api/v2/events/{meeting_id}/attendances/{rsvp_id}": Rule(
        "scoped", P(meeting_id="meeting", rsvp_id="rsvp"), api=True),
    "events POST /api/v2/events/{meeting_id}/attendances": Rule(
        "scoped", P(meeting_id="meeting"), api=True, body=osdi_person),
    # notifications
    "notifications GET /feeds/digests/{token}.atom": LINK,
    "notifications GET /notifications/organise": ANY,
    "notifications GET /notifications/organise/digests": ANY,
    "notifications POST /notifications/organise/digests/period": Rule("own", form=True,
                                                                      body=lambda s: {"period": "weekly"}),
    "notifications POST /notifications/organise/digests/feed": Rule("own", form=True, body=lambda s: {}),
    "notifications GET /notifications/organise/digests/{digest_id}": Rule("own", P(digest_id="digest")),
    "notifications GET /notifications/organise/emails": ANY,
    "notifications POST /notifications/organise/emails": Rule(
        "network", form=True, body=lambda s: {**EMAIL_WORDING, "action": "save"},
        allowed_body=lambda s: {**EMAIL_WORDING, "action": "preview"}),
    "notifications GET /notifications/organise/follow-ups": ANY,
    "notifications GET /notifications/organise/follow-ups/new": ANY,
    "notifications GET /notifications/organise/follow-ups/{step_key}": Rule(
        "any", lambda s: {"step_key": "meet-your-group"}),
    "notifications POST /notifications/organise/follow-ups": Rule(
        "network", form=True, body=lambda s: {**s.step, "action": "save"},
        allowed_body=lambda s: {**s.step, "action": "preview"}),
    # the log's newest page: the seeded member's welcome is soon buried under the fresh members' (all in scope);
    # who sees which delivery is checked by tests/notifications (scope of the delivery log)
    "notifications GET /notifications/organise/deliveries": Rule("listing"),
    "notifications GET /notifications/organise/mailings": Rule("listing", marker="mailing_subject"),
    "notifications GET /notifications/organise/mailings/new": ANY,
    "notifications GET /notifications/organise/mailings/count": ANY,  # within the caller's own scope
    "notifications POST /notifications/organise/mailings": Rule("any", form=True, body=lambda s: MAILING_FORM),
    "notifications GET /notifications/organise/mailings/{mailing_id}": Rule("scoped", P(mailing_id="mailing")),
    "notifications POST /notifications/organise/mailings/{mailing_id}": Rule(
        "scoped", P(mailing_id="mailing"), form=True, body=lambda s: {**MAILING_FORM, "action": "save"},
        allowed_body=lambda s: {**MAILING_FORM, "action": "count"}),
    "notifications GET /notifications/organise/mailings/{mailing_id}/preview": Rule(
        "scoped", P(mailing_id="mailing")),
    "notifications POST /notifications/organise/mailings/{mailing_id}/test": Rule(
        "scoped", P(mailing_id="mailing"), form=True, body=lambda s: {}),
    "notifications GET /notifications/organise/mailings/{mailing_id}/send": Rule("scoped", P(mailing_id="mailing")),
    "notifications POST /notifications/organise/mailings/{mailing_id}/send": Rule(
        "scoped", F("mailing", mailing_id="*"), form=True,
        body=lambda s: {"when": "later", "send_at": _in_days(300)[:16]}),
    "notifications POST /notifications/organise/mailings/{mailing_id}/unschedule": Rule(
        "scoped", F("mailing", mailing_id="*"), form=True, body=lambda s: {}),
    "notifications GET /notifications/organise/mailings/{mailing_id}/report": Rule(
        "scoped", P(mailing_id="mailing")),
    "notifications GET /notifications/organise/mailings/audiences": Rule("listing", marker="audience_name"),
    "notifications GET /notifications/organise/mailings/audiences/{audience_id}": Rule(
        "scoped", P(audience_id="audience")),
    "notifications POST /notifications/organise/mailings/audiences/{audience_id}": Rule(
        "scoped", P(audience_id="audience"), form=True, body=lambda s: {"audience_name": s["audience_name"]}),
    "notifications GET /notifications/organise/mailings/audiences/{audience_id}/delete": Rule(
        "scoped", P(audience_id="audience")),
    "notifications POST /notifications/organise/mailings/audiences/{audience_id}/delete": Rule(
        "scoped", F("audience", audience_id="*"), form=True, body=lambda s: {}),
    "notifications GET /api/v2/messages": Rule("listing", api=True, marker="mailing_subject"),
    "notifications GET /api/v2/messages/{message_id}": Rule("scoped", P(message_id="mailing"), api=True),
    "notifications GET /notifications/r/{token}": LINK,  # a mailing's link: counts a click, says nothing
    # campaigns: organiser pages
    "campaigns GET /campaigns/organise": Rule("listing", marker="campaign"),
    "campaigns GET /campaigns/organise/home.json": ANY,  # the caller's own part of the organisers' home
    "campaigns GET /campaigns/organise/campaigns/{campaign_id}/close": Rule("scoped", P(campaign_id="campaign")),
    "campaigns GET /campaigns/letters/{token}": LINK,
    "campaigns POST /campaigns/letters/{token}": LINK,
    "campaigns GET /campaigns/organise/new": ANY,
    "campaigns POST /campaigns/organise/new": Rule("scoped", form=True, form_refuses=True, body=campaign_body),
    "campaigns GET /campaigns/organise/campaigns/{campaign_id}": Rule("scoped", P(campaign_id="campaign")),
    "campaigns POST /campaigns/organise/campaigns/{campaign_id}/asks": Rule(
        "scoped", P(campaign_id="campaign"), form=True, body=ask_body),
    "campaigns POST /campaigns/organise/campaigns/{campaign_id}/close": Rule(
        "scoped", F("campaign", campaign_id="*")),
    "campaigns GET /campaigns/organise/campaigns/{campaign_id}/preview": Rule("scoped", P(campaign_id="campaign")),
    "campaigns GET /campaigns/organise/campaigns/{campaign_id}/publish": Rule("scoped", P(campaign_id="campaign")),
    "campaigns POST /campaigns/organise/campaigns/{campaign_id}/publish": Rule(
        "scoped", F("campaign", campaign_id="*")),
    "campaigns GET /campaigns/organise/pledges": Rule("listing", marker="pledge_text"),
    "campaigns POST /campaigns/organise/pledges/{action_id}": Rule(
        "scoped", P(action_id="pledge"), form=True, body=lambda s: {"decision": "pending"}),
    # narrowed to the home region: a filter never widens what an organiser sees
    # the long tail lists its oldest 500: on a busy stack a new member is not among them, so no marker here (the
    # scope of the tail itself is filtered in its query, queries.members_without_part)
    "campaigns GET /campaigns/organise/long-tail": Rule("listing", query={"region": HOME}),
    "campaigns GET /campaigns/organise/long-tail.csv": Rule("listing", query={"region": HOME}),
    "campaigns GET /campaigns/organise/mps": ANY,
    "campaigns POST /campaigns/organise/mps": Rule("network", form=True, files=True, body=lambda s: {"mode": "add"}),
    "campaigns GET /campaigns/organise/ladder": ANY,
    # out of scope, a new ladder confirmed; in scope, one the page refuses (the network's ladder stays as it is)
    "campaigns POST /campaigns/organise/ladder": Rule(
        "network", form=True, body=lambda s: {"levels": "2", "level-0": "supporter", "label-0": "Supporter",
                                              "label-1": "Taken over", "min_total-1": "1", "confirm": "yes"},
        allowed_body=lambda s: {"levels": "1", "label-0": "Only one level"}),
    "campaigns GET /dashboard": Rule("scoped", query={"region": HOME}),
    "campaigns GET /dashboard/data.json": Rule("scoped", query={"region": HOME}),
    "campaigns GET /dashboard/export/{report}.csv": Rule("scoped", lambda s: {"report": "growth"},
                                                         query={"region": HOME}),
    # campaigns: the organisers' JSON API
    "campaigns POST /campaigns/api/campaigns": Rule("scoped", body=campaign_body),
    "campaigns GET /campaigns/api/campaigns": Rule("listing", marker="campaign"),
    "campaigns GET /campaigns/api/campaigns/{campaign_id}": Rule("scoped", P(campaign_id="campaign")),
    "campaigns POST /campaigns/api/campaigns/{campaign_id}/asks": Rule(
        "scoped", P(campaign_id="campaign"), body=ask_body),
    "campaigns POST /campaigns/api/campaigns/{campaign_id}/close": Rule("scoped", F("campaign", campaign_id="*")),
    "campaigns GET /campaigns/api/pledges": Rule("listing", marker="pledge"),
    "campaigns POST /campaigns/api/pledges/{action_id}": Rule(
        "scoped", P(action_id="pledge"), body=lambda s: {"decision": "pending"}),
    "campaigns PUT /campaigns/api/mps": Rule("network", body=lambda s: "not,a,dataset"),
    "campaigns GET /campaigns/api/mps/lookup": Rule("any", query={"postcode": "B1 1AA"}, absent_ok=True),  # public data
    "campaigns GET /campaigns/api/engagement/ladder": ANY,
    "campaigns PUT /campaigns/api/engagement/ladder": Rule("network", body=lambda s: {"levels": []}),
    "campaigns GET /campaigns/api/engagement/members/{member_id}": Rule("scoped", P(member_id="member")),
    "campaigns GET /campaigns/api/engagement/long-tail": Rule("listing", query={"region": HOME}),
    # campaigns: OSDI
    "campaigns GET /api/v2/petitions": Rule("listing", api=True, marker="petition"),
    "campaigns GET /api/v2/people/{person_id}/signatures": Rule("listing", P(person_id="member"), api=True),
    "campaigns GET /api/v2/people/{person_id}/signatures/{action_id}": Rule(
        "scoped", P(person_id="member", action_id="signature"), api=True, absent_ok=True),
    "campaigns GET /api/v2/petitions/{ask_id}": Rule("scoped", P(ask_id="petition"), api=True),
    "campaigns GET /api/v2/petitions/{ask_id}/signatures": Rule("scoped", P(ask_id="petition"), api=True),
    "campaigns GET /api/v2/petitions/{ask_id}/signatures/{action_id}": Rule(
        "scoped", P(ask_id="petition", action_id="signature"), api=True),
    "campaigns POST /api/v2/petitions/{ask_id}/signatures": Rule(
        "scoped", P(ask_id="petition"), api=True, body=osdi_person),
    # campaigns: public pages
    "campaigns GET /campaigns": PUBLIC,
    "campaigns GET /campaigns/{campaign_id}": Rule("public", P(campaign_id="campaign")),
    "campaigns GET /campaigns/{campaign_id}/counts.json": Rule("public", P(campaign_id="campaign")),
    "campaigns GET /campaigns/{campaign_id}/asks/{ask_id}": Rule("public", P(campaign_id="campaign",
                                                                             ask_id="petition")),
    "campaigns POST /campaigns/{campaign_id}/asks/{ask_id}": PUBLIC,
    "campaigns POST /campaigns/{campaign_id}/asks/{ask_id}/share": PUBLIC,
    "campaigns GET /campaigns/{campaign_id}/asks/{ask_id}/thanks": Rule("public", P(campaign_id="campaign",
                                                                                    ask_id="petition")),
}


# -- the routes the services have --------------------------------------------------------------------------------
def _apps() -> dict[str, FastAPI]:
    os.environ.setdefault("GROUNDSWELL_DEV", "1")
    return {svc: importlib.import_module(f"services.{svc}.main").create_app() for svc in SERVICES}


def routes_of(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, OpenAPI's or not (static files and probes left out)."""
    found = set()
    for route in iter_route_contexts(app.routes):
        if route.path in OPERATIONAL or not route.methods:
            continue
        found |= {(m, route.path) for m in route.methods if m != "HEAD"}
    return found


APPS = _apps()
ROUTES = sorted(f"{svc} {method} {path}" for svc, app in APPS.items() for method, path in routes_of(app))


def test_every_route_is_classified() -> None:
    """A new route must say who may call it; a rule for a route that is gone is removed."""
    unclassified = [r for r in ROUTES if r not in RULES]
    assert not unclassified, (
        "Classify these routes in RULES of tests/security/test_route_scopes.py (public, link, any, own, network, "
        f"scoped or listing), with path parameters pointing at a home-region object: {unclassified}")
    stale = [r for r in RULES if r not in ROUTES]
    assert not stale, f"These routes are gone: remove them from RULES: {stale}"


async def test_the_openapi_documents_list_no_route_the_routers_do_not(system: None) -> None:
    """The enumeration above is complete: every operation of every service's OpenAPI document is among them."""
    async with httpx.AsyncClient(timeout=30) as client:
        for svc in SERVICES:
            doc = (await client.get(f"http://127.0.0.1:{launcher.SERVICE_PORTS[svc]}/openapi.json")).json()
            for path, operations in doc["paths"].items():
                for method in operations:
                    assert f"{svc} {method.upper()} {path}" in ROUTES, (svc, method, path)


# -- the seed ----------------------------------------------------------------------------------------------------
async def _poll(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
async def seed(system: None) -> AsyncIterator[Seed]:
    s = Seed()
    for svc in SERVICES:
        s.dbs[svc] = await asyncpg.connect(asyncpg_dsn(svc))
    mdb = s.dbs["membership"]
    client = httpx.AsyncClient(base_url=launcher.GATEWAY_URL, timeout=60, follow_redirects=False)
    s.client = client
    for name, scope_type, scope_id in (("network", "network", None), ("home_region", "region", HOME),
                                       ("other_region", "region", OTHER), ("group", "group", GROUP)):
        organiser_id, headers = await make_organiser(mdb, scope_type, scope_id)
        s.sessions[name] = headers
        s.ids[f"{name}_organiser"] = organiser_id
    s.ids["home_organiser_email"] = await mdb.fetchval(
        "SELECT email_normalised FROM organisers WHERE id = $1", s.ids["home_region_organiser"])
    network = {**s.sessions["network"], **ORIGIN}

    async def make_key(scope_type: str, scope_id: str | None) -> tuple[str, str, dict[str, str]]:
        name = f"Scope check {uuid.uuid4().hex[:8]}"
        made = await client.post("/organisers/api-keys", headers=network,
                                 data={"name": name, "scope_type": scope_type, "scope_id": scope_id or ""})
        assert made.status_code == 201, made.text
        token = made.text.split('<code id="new-api-key">')[1].split("</code>")[0]
        key_id = await mdb.fetchval("SELECT id FROM api_keys WHERE name = $1", name)
        return key_id, name, {"OSDI-API-Token": token}

    for name, scope_type, scope_id in (("network", "network", None), ("home_region", "region", HOME),
                                       ("other_region", "region", OTHER), ("group", "group", GROUP)):
        _, key_name, s.keys[name] = await make_key(scope_type, scope_id)
        s.ids[f"{name}_key_name"] = key_name
    s.ids["home_key_name"] = s.ids["home_region_key_name"]
    revoked_id, _, s.keys["revoked_key"] = await make_key("network", None)
    revoked = await client.post(f"/organisers/api-keys/{revoked_id}/revoke", headers=network)
    assert revoked.status_code == 303, revoked.text
    s.keys["nobody"] = {}
    s.sessions["revoked_key"] = s.keys["revoked_key"]
    s.sessions["nobody"] = {}

    async def new_member() -> str:
        email = unique_email("scoped")
        joined = await client.post("/join", data={"name": "Scope Member", "email": email, "postcode": "B1 1AA",
                                                  "email_consent": "yes"})
        assert joined.status_code in (200, 201, 303), joined.text
        member_id = await _poll(lambda: mdb.fetchval("SELECT id FROM members WHERE email_normalised = $1", email),
                                "the member to join")
        return str(member_id)

    s.ids["member"] = await new_member()
    s.ids["member_email"] = await mdb.fetchval("SELECT email_normalised FROM members WHERE id = $1", s["member"])
    s.ids["grantee"] = await new_member()  # given a role again and again by the routes that revoke one
    assert await mdb.fetchval("SELECT region_id FROM members WHERE id = $1", s["member"]) == HOME
    await _poll(lambda: s.dbs["campaigns"].fetchval("SELECT 1 FROM members WHERE member_id = $1", s["member"]),
                "the member to reach campaigns")
    async def new_grant() -> str:
        """An active grant of the home region to the grantee (made again after one was revoked): no join's
        aftermath can change membership's tables while a refused caller's attempt is compared."""
        active = "SELECT id FROM role_grants WHERE member_id = $1 AND revoked_at IS NULL"
        found = await mdb.fetchval(active, s["grantee"])
        if found is None:
            granted = await client.post("/admin/roles", headers=network, data={
                "member_id": s["grantee"], "role": "constituency_rep", "scope_type": "region", "scope_id": HOME})
            assert granted.status_code == 303, granted.text
            found = await mdb.fetchval(active, s["grantee"])
        return str(found)

    granted = await client.post("/admin/roles", headers=network, data={
        "member_id": s["member"], "role": "constituency_rep", "scope_type": "region", "scope_id": HOME})
    assert granted.status_code == 303, granted.text
    s.ids["grant"] = str(await mdb.fetchval("SELECT id FROM role_grants WHERE member_id = $1", s["member"]))
    for name in ("network", "home_region", "other_region", "group"):  # as RoleGranted would make them
        organiser_id = s.ids[f"{name}_organiser"]
        await s.dbs["notifications"].execute(
            "INSERT INTO organisers (organiser_id, member_id, email, name, feed_token) VALUES ($1, $1, $2, $3, $4)",
            organiser_id, unique_email("organiser"), "Scope Organiser", uuid.uuid4().hex)

    async def new_mailing() -> str:
        made = await client.post("/notifications/organise/mailings", headers={**s.sessions["home_region"], **ORIGIN},
                                 data={**MAILING_FORM, "subject": s["mailing_subject"], "action": "save"})
        assert made.status_code == 303, made.text
        return str(made.headers["location"].split("/mailings/")[1].split("?")[0])

    s.ids["mailing_subject"] = f"Scope check mailing {uuid.uuid4().hex[:8]}"
    s.ids["mailing"] = await new_mailing()

    async def new_audience(name: str) -> str:
        made = await client.post("/notifications/organise/mailings", headers={**s.sessions["home_region"], **ORIGIN},
                                 data={"action": "save_audience", "audience_name": name, "subject": "", "body": ""})
        assert made.status_code == 200, made.text
        return str(await s.dbs["notifications"].fetchval("SELECT id FROM saved_audiences WHERE name = $1", name))

    s.ids["audience_name"] = f"Scope check audience {uuid.uuid4().hex[:8]}"
    s.ids["audience"] = await new_audience(s["audience_name"])

    keyed = s.keys["network"]
    tag = await client.post("/api/v2/tags", headers=keyed, json={"name": "scope check"})
    assert tag.status_code in (200, 201), tag.text
    s.ids["tag"] = tag.json()["identifiers"][0].split(":", 1)[1]

    async def new_tagging() -> str:
        tagged = await client.post(f"/api/v2/tags/{s['tag']}/taggings", headers=keyed, json=tagging_body(s))
        assert tagged.status_code in (200, 201), tagged.text
        return str(tagged.json()["identifiers"][0].split(":", 1)[1])

    s.ids["tagging"] = await new_tagging()

    async def new_meeting() -> str:
        made = await client.post("/meetings", headers=network, json=meeting_body(s))
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    s.ids["meeting"] = await new_meeting()
    meeting = (await client.get(f"/meetings/{s['meeting']}", headers=network)).json()
    s.ids["online_url"], s.ids["check_in_code"] = meeting["online_url"], meeting["check_in_code"]

    async def new_rsvp() -> str:
        made = await client.post(f"/meetings/{s['meeting']}/rsvps", headers=network, json=person(s))
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    s.ids["rsvp"] = await new_rsvp()

    async def new_campaign() -> str:
        asks = [{"kind": "petition", "title": "Sign for scopes", "body": "We ask for scopes",
                 "addressee": "The council"},
                {"kind": "pledge", "title": "Pledge for scopes", "body": "I pledge to"}]
        made = await client.post("/campaigns/api/campaigns", headers=network, json={**campaign_body(s), "asks": asks})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    s.ids["campaign"] = await new_campaign()
    asks = (await client.get(f"/campaigns/api/campaigns/{s['campaign']}", headers=network)).json()["asks"]
    s.ids["petition"] = next(a["id"] for a in asks if a["kind"] == "petition")
    s.ids["pledge_ask"] = next(a["id"] for a in asks if a["kind"] == "pledge")
    signed = await client.post(f"/api/v2/petitions/{s['petition']}/signatures", headers=keyed, json=osdi_person(s))
    assert signed.status_code == 201, signed.text
    s.ids["signature"] = signed.json()["identifiers"][0].split(":", 1)[1]
    s.ids["pledge_text"] = f"I will check every scope {uuid.uuid4().hex[:6]}"
    pledged = await client.post(f"/campaigns/{s['campaign']}/asks/{s['pledge_ask']}",
                                data={"name": "Pledger", "email": unique_email("pledger"),
                                      "pledge_text": s["pledge_text"]})
    assert pledged.status_code in (200, 303), pledged.text
    s.ids["pledge"] = await _poll(lambda: s.dbs["campaigns"].fetchval(
        "SELECT id FROM actions WHERE ask_id = $1", s["pledge_ask"]), "the pledge")
    step = await s.dbs["notifications"].fetchrow("SELECT * FROM follow_up_steps WHERE step_key = 'meet-your-group'")
    s.step = {k: str(step[k]) for k in ("step_key", "subject", "body", "cta_label", "cta_url", "day_offset",
                                        "position")} | {"enabled": "on" if step["enabled"] else ""}
    s.ids["digest"] = str(uuid.uuid4())  # an id that is nobody's: `own` routes find only the caller's

    async def fresh(kind: str) -> str:
        if kind == "member":
            return await new_member()
        if kind == "meeting":
            return await new_meeting()
        if kind == "rsvp":
            return await new_rsvp()
        if kind == "campaign":
            return await new_campaign()
        if kind == "tagging":
            await client.delete(f"/api/v2/tags/{s['tag']}/taggings/{s['tagging']}", headers=keyed)
            s.ids["tagging"] = await new_tagging()
            return s["tagging"]
        if kind == "key":
            return (await make_key("region", HOME))[0]
        if kind == "mailing":
            return await new_mailing()
        if kind == "audience":
            return await new_audience(f"Scope check audience {uuid.uuid4().hex[:8]}")
        if kind == "grant":
            return await new_grant()
        if kind == "organiser":  # an organiser of the home region nobody's session depends on
            return (await make_organiser(mdb, "region", HOME))[0]
        raise AssertionError(kind)

    s.fresh = fresh
    yield s
    await s.dbs["notifications"].execute(
        "DELETE FROM organisers WHERE organiser_id = ANY($1)",
        [s.ids[f"{n}_organiser"] for n in ("network", "home_region", "other_region", "group")])
    await client.aclose()
    for conn in s.dbs.values():
        await conn.close()


# -- what "nothing changed" means, per service -------------------------------------------------------------------
STATE: dict[str, tuple[str, ...]] = {
    "membership": ("regions", "local_groups", "subteams", "allowed_origins", "members", "member_groups",
                   "role_grants", "organisers", "network_profile", "privacy_notices", "tags", "taggings",
                   "api_keys", "member_notes"),
    "events": ("meetings", "rsvps"),
    "notifications": ("organisers", "digest_subscriptions", "follow_up_steps", "email_settings", "mailings",
                      "saved_audiences"),
    "campaigns": ("campaigns", "asks", "actions", "engagement_ladder", "constituencies"),
}
VOLATILE = ("last_used_at", "last_seen_at", "updated_at", "engagement_level", "level_since")


async def fingerprint(conn: asyncpg.Connection, service: str) -> str:
    """A digest of the service's tables an organiser or a key could change (columns that move on their own out)."""
    parts = []
    drop = " ".join(f"- '{c}'" for c in VOLATILE)
    for table in STATE[service]:
        parts.append(await conn.fetchval(
            f"SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) "
            f"FROM (SELECT (to_jsonb(t) {drop})::text AS x FROM {table} t) s"))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


# -- calling a route ---------------------------------------------------------------------------------------------
def refused(response: httpx.Response) -> bool:
    """401, 403 or 404, or a page sending the browser to sign in."""
    if response.status_code in (401, 403, 404):
        return True
    location = response.headers.get("location", "")
    return response.status_code in (302, 303, 307) and ("signin" in location or "sign-in" in location)


async def call(s: Seed, route: str, rule: Rule, headers: dict[str, str], params: dict[str, str],
               allowed: bool = True) -> httpx.Response:
    assert s.client is not None
    _, method, path = route.split(" ", 2)
    url = path.format(**params)
    make = rule.allowed_body if allowed and rule.allowed_body else rule.body
    body = make(s) if make else None
    kwargs: dict[str, Any] = {"headers": {**headers, **(ORIGIN if method in UNSAFE else {})},
                              "params": rule.query}
    if rule.files:
        kwargs["files"] = {"file": ("mps.csv", b"not,a,dataset\n", "text/csv")}
        kwargs["data"] = body or {}
    elif rule.form:
        kwargs["data"] = body or {}
    elif isinstance(body, str):
        kwargs["content"] = body.encode()
    elif body is not None:
        kwargs["json"] = body
    return await s.client.request(method, url, **kwargs)


async def whole_listing(s: Seed, route: str, rule: Rule, headers: dict[str, str], params: dict[str, str],
                        first: httpx.Response) -> str:
    """Every page of a listing (OSDI collections come 25 at a time), as text; an organiser page's pages are
    followed by their `rel="next"` links until the marker shows (at most 40 pages)."""
    if not rule.api:
        assert s.client is not None
        texts = [first.text]
        for _ in range(40):
            if s[rule.marker] in texts[-1] or (found := re.search(r'<a rel="next" href="([^"]+)"', texts[-1])) is None:
                break
            more = await s.client.get(html.unescape(found[1]), headers=headers)
            assert more.status_code == 200, (more.status_code, more.text[:300])
            texts.append(more.text)
        return "".join(texts)
    texts, pages = [first.text], int(first.json().get("total_pages") or 1)
    for page in range(2, min(pages, 400) + 1):
        more = await call(s, route, Rule(rule.kind, api=True, query={**rule.query, "page": str(page)}), headers, params)
        texts.append(more.text)
    return "".join(texts)


def _cases() -> list[Any]:
    cases = []
    for route in ROUTES:
        rule = RULES.get(route)
        if rule is None or rule.kind in ("public", "link"):
            continue
        for caller in CALLERS:
            cases.append(pytest.param(route, caller, id=f"{route} as {caller}"))
    return cases


def expected_refusal(rule: Rule, caller: str) -> bool:
    if caller in ("revoked_key", "nobody"):
        return True
    if rule.kind in ("any", "listing", "own"):
        return False
    if rule.kind == "network":
        return caller != "network"
    return caller not in IN_SCOPE  # scoped


@pytest.mark.parametrize(("route", "caller"), _cases())
async def test_route_enforces_scope(seed: Seed, route: str, caller: str) -> None:
    rule = RULES[route]
    service, method, _ = route.split(" ", 2)
    headers = (seed.keys if rule.api else seed.sessions)[caller]
    params = (await r) if hasattr(r := rule.params(seed) if rule.params else {}, "__await__") else r
    refuse = expected_refusal(rule, caller)
    before = await fingerprint(seed.dbs[service], service) if refuse and method in UNSAFE else None
    response = await call(seed, route, rule, headers, params, allowed=not refuse)
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if rule.kind == "own" and caller not in ("revoked_key", "nobody") and rule.params:
        assert response.status_code == 404, f"{caller} sees another organiser's {route}: {response.status_code}"
    elif refuse:
        assert refused(response) or rule.form_refuses and response.status_code == 422, (
            f"{caller} is not refused by {route}: {response.status_code} {response.text[:300]}")
        if before is not None:
            assert await fingerprint(seed.dbs[service], service) == before, f"{route} by {caller} changed something"
    elif rule.absent_ok and response.status_code == 404:
        pass
    else:
        assert not refused(response), (
            f"{caller} is refused by {route}, in scope: {response.status_code} {response.text[:300]}")
        if method == "GET":
            assert response.status_code == 200, (response.status_code, response.text[:300])
        if rule.kind == "listing" and rule.marker:
            listed = seed[rule.marker] in await whole_listing(seed, route, rule, headers, params, response)
            assert listed == (caller in rule.shown_to), (
                f"{route} to {caller}: the home region's {rule.marker} is "
                f"{'listed' if listed else 'missing'}")


PRIVATE = ("online_url", "check_in_code", "member_email")


@pytest.mark.parametrize("route", [r for r in ROUTES if RULES.get(r, LINK).kind == "public"
                                   and r.split(" ")[1] == "GET"])
async def test_public_pages_reveal_nothing_private(seed: Seed, route: str) -> None:
    """A public page, asked by nobody, never shows a meeting's joining link or check-in code or a member's address."""
    rule = RULES[route]
    params = (await r) if hasattr(r := rule.params(seed) if rule.params else {}, "__await__") else r
    response = await call(seed, route, rule, {}, params)
    assert response.status_code < 500
    shown = [p for p in PRIVATE if seed[p] in response.text]
    assert not shown, f"{route} shows {shown} to anyone"


# -- what a body can point at: objects out of scope named inside a request ---------------------------------------
async def test_an_organiser_adds_by_id_only_members_they_look_after(seed: Seed) -> None:
    """Adding someone to a meeting by member id acts for that member: another region's organiser cannot, even to
    their own meeting, and learns nothing (404); the home region's organiser can."""
    assert seed.client is not None
    events_db = seed.dbs["events"]
    await _poll(lambda: events_db.fetchval("SELECT 1 FROM members WHERE member_id = $1", seed["member"]),
                "the member to reach events")
    theirs = await seed.client.post("/meetings", headers={**seed.sessions["network"], **ORIGIN},
                                    json={**meeting_body(seed), "scope_id": OTHER})
    assert theirs.status_code == 201, theirs.text
    other_meeting = theirs.json()["id"]
    for path in (f"/meetings/{other_meeting}/rsvps", f"/meetings/{other_meeting}/walk-ins"):
        refused_add = await seed.client.post(path, headers={**seed.sessions["other_region"], **ORIGIN},
                                             json={"member_id": seed["member"]})
        assert refused_add.status_code == 404, refused_add.text
    assert await events_db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", other_meeting) == 0

    added = await seed.client.post(f"/meetings/{seed['meeting']}/rsvps",
                                   headers={**seed.sessions["home_region"], **ORIGIN},
                                   json={"member_id": seed["member"]})
    assert added.status_code in (200, 201), added.text


async def test_a_session_joins_only_a_conference_in_the_organisers_scope(seed: Seed) -> None:
    """Another region's organiser cannot hang their meeting under the home region's conference."""
    assert seed.client is not None
    before = await seed.dbs["events"].fetchval("SELECT count(*) FROM meetings WHERE parent_meeting_id = $1",
                                               seed["meeting"])
    refused_session = await seed.client.post(
        "/meetings", headers={**seed.sessions["other_region"], **ORIGIN},
        json={**meeting_body(seed), "scope_id": OTHER, "parent_meeting_id": seed["meeting"]})
    assert refused_session.status_code == 422, refused_session.text
    assert "no conference" in refused_session.json()["errors"]["parent_meeting_id"]
    assert await seed.dbs["events"].fetchval("SELECT count(*) FROM meetings WHERE parent_meeting_id = $1",
                                             seed["meeting"]) == before
    own_session = await seed.client.post(
        "/meetings", headers={**seed.sessions["home_region"], **ORIGIN},
        json={**meeting_body(seed), "parent_meeting_id": seed["meeting"]})
    assert own_session.status_code == 201, own_session.text
