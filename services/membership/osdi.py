"""OSDI as Action Network serves it: the API entry point, people, the person signup helper, tags and taggings.

HAL+JSON under `/api/v2/`, authenticated by an API key in the `OSDI-API-Token` header (keys are created and
revoked by organisers; a key only reaches the members of the scope it was created for). Collections page
with `page` and `per_page` (at most 25, capped silently); people take OData's `filter` on email address and
dates. Every read of people is written to the audit log. docs/api.md is the integrator's guide.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.membership import db as tables
from services.membership import queries
from services.membership.deps import JoinsDep, MemberRightsDep, RosterDep, SettingsDep, UnitsOfWorkDep
from services.membership.domain import (
    JoinApplication,
    api_source,
    display_name,
    given_and_family,
    new_member_row,
    place,
)
from services.membership.joins import JoinOutcome, MemberNotFound
from services.membership.roster import MemberFilters, Roster, actor_of, in_scope
from shared import auth, osdi
from shared.contact import MAX_NAME, UK_POSTCODE_RE, collapse_spaces, is_email, normalise_email, normalise_postcode
from shared.osdi import (
    CURIES,
    MAX_PER_PAGE,
    FilterError,
    Page,
    PerPage,
    PersonLinks,
    api_url,
    bare_id,
    collection,
    hal,
    identifiers,
    parse_filter,
    person_id_of,
)
from shared.uow import UnitsOfWork

router = osdi.router()
MAX_TAG = 100
MAX_CUSTOM_FIELDS, MAX_CUSTOM_KEY, MAX_CUSTOM_VALUE = 100, 100, 2000
# Custom fields the system itself reports on a person (read-only: an integration may not set them).
SYSTEM_FIELDS = frozenset({"engagement_level", "interests", "status", "ladder_level"})
PHONE_RE = re.compile(r"^\+?[0-9]{6,20}$")
PEOPLE_FILTERS = {"email_address": ("eq",), "modified_date": ("gt", "lt"), "created_date": ("gt", "lt")}


async def api_caller(request: Request) -> auth.OrganiserScope:
    """An API key this network issued and did not revoke (the shared helper checks signature and revocation)."""
    caller = await auth.require_api_token(request)
    if caller.key_id is None:
        raise_api(401, "This API key was not made by the membership service: create one in the organiser pages")
    return caller


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def raise_api(status: int, message: str) -> None:
    raise ApiError(status, message)


class TaggingRequest(BaseModel):
    """A tagging to make: Action Network's `{"_links": {"osdi:person": {"href": ".../people/<id>"}}}`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    links: PersonLinks | None = Field(None, alias="_links")


class TagRequest(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_TAG)


class PersonRequest(osdi.OsdiPerson):
    """An OSDI person as a PUT or the signup helper takes it: only what is sent changes."""

    phone_numbers: list[dict[str, Any]] = Field([], max_length=20)
    custom_fields: dict[str, str | int | float | bool | None] = Field({}, max_length=MAX_CUSTOM_FIELDS)


class SignupRequest(BaseModel):
    """Action Network's person signup helper."""

    person: PersonRequest
    add_tags: list[str] = Field([], max_length=100)


PERSON_BODY = osdi.request_body(PersonRequest)
SIGNUP: dict[str, Any] = {
    "status_code": 201,
    "responses": {201: osdi.one("A new person")[200], 200: osdi.one("Someone already known, with what was sent")[200]},
    "openapi_extra": osdi.request_body(SignupRequest),
}


def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return hal({"error": exc.message}, exc.status)


Caller = Annotated[auth.OrganiserScope, Depends(api_caller)]


def _here(request: Request, path: str) -> str:
    """A collection's public URL with the query asked for (a filter, say), less its paging."""
    rest = request.url.remove_query_params(["page", "per_page"]).query
    return f"{api_url(request)}/{path}" + (f"?{rest}" if rest else "")


def _person(request: Request, details: dict[str, Any]) -> dict[str, Any]:
    m = details["member"]
    given, family = given_and_family(m.name, m.given_name, m.family_name)
    api = api_url(request)
    return {
        "identifiers": identifiers(m.id),
        "origin_system": "Groundswell",
        "given_name": given,
        "family_name": family,
        "email_addresses": [
            {
                "address": m.email_normalised,
                "primary": True,
                "status": "subscribed" if m.email_consent else "unsubscribed",
            }
        ],
        "postal_addresses": [
            {
                "postal_code": m.postcode,
                "country": "GB",
                "primary": True,
                **({"region": details["region"]} if details.get("region") else {}),
            }
        ]
        if m.postcode
        else [],
        "phone_numbers": [{"number": m.phone_number, "primary": True}] if m.phone_number else [],
        "created_date": m.joined_at.isoformat(),
        "modified_date": m.updated_at.isoformat(),
        "custom_fields": {
            **m.custom_fields,
            "engagement_level": m.engagement_level,
            "interests": ",".join(m.interests),
            "status": m.status,
            **({"ladder_level": m.ladder_level} if m.ladder_level else {}),
        },
        "groundswell:region_id": m.region_id,
        "groundswell:group_ids": [g for g, _ in details.get("groups", [])],
        "groundswell:subteam_ids": [s for s, _ in details.get("subteams", [])],
        "_links": {
            "self": {"href": f"{api}/people/{m.id}"},
            "osdi:taggings": {"href": f"{api}/people/{m.id}/taggings"},
            "curies": CURIES,
        },
    }


@router.get("")
@router.get("/")
async def entry_point(request: Request, caller: Caller, settings: SettingsDep) -> JSONResponse:
    api = api_url(request)
    return hal(
        {
            "motd": f"Welcome to the {settings.network_name} API (OSDI, as Action Network serves it)",
            "vendor_name": "Groundswell",
            "product_name": "Groundswell",
            "osdi_version": "1.1.1",
            "max_pagesize": MAX_PER_PAGE,
            "_links": {
                "self": {"href": api},
                "osdi:people": {"href": f"{api}/people"},
                "osdi:tags": {"href": f"{api}/tags"},
                "osdi:person_signup_helper": {"href": f"{api}/people"},
                "osdi:events": {"href": f"{api}/events"},
                "osdi:petitions": {"href": f"{api}/petitions"},
                "osdi:messages": {"href": f"{api}/messages"},
                "curies": CURIES,
            },
        }
    )


# -- people ----------------------------------------------------------------------------------------


async def _person_or_404(
    request: Request, roster: Roster, caller: auth.OrganiserScope, person_id: str
) -> dict[str, Any]:
    details = await roster.member(caller, bare_id(person_id))
    if details is None:
        raise_api(404, "There is no person with that id that this API key may see")
    assert details is not None
    return _person(request, details)


def _when(field: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise_api(400, f"{field} takes a date or time such as '2026-03-25' or '2026-03-25T14:00:00Z'")
        raise
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _people_filter(text: str) -> list[ColumnElement[bool]]:
    """OData's `filter` on people as conditions on members (a 400 for what is not supported)."""
    m = tables.members
    conditions: list[ColumnElement[bool]] = []
    try:
        clauses = parse_filter(text, PEOPLE_FILTERS)
    except FilterError as exc:
        raise_api(400, str(exc))
        raise
    for field, op, value in clauses:
        if field == "email_address":
            conditions.append(m.c.email_normalised == normalise_email(value))
            continue
        column = m.c.updated_at if field == "modified_date" else m.c.joined_at
        moment = _when(field, value)
        conditions.append(column > moment if op == "gt" else column < moment)
    return conditions


@router.get("/people", responses=osdi.page_of("people"))
async def people(
    request: Request,
    caller: Caller,
    roster: RosterDep,
    uows: UnitsOfWorkDep,
    page: Page = 1,
    per_page: PerPage = MAX_PER_PAGE,
    filter: str = "",  # noqa: A002 - OData's name for it
) -> JSONResponse:
    filters = MemberFilters(q=request.query_params.get("q", "")[:200])
    also = _people_filter(filter) if filter.strip() else []
    rows, total = await roster.page(caller, filters, page, per_page, also)
    async with uows.begin() as uow:
        items = [_person(request, details) for details in await roster.details_of(uow.session, rows)]
    return hal(collection(_here(request, "people"), "people", items, total, page, per_page))


@router.get("/people/{person_id}", responses=osdi.one("The person"))
async def person(request: Request, caller: Caller, roster: RosterDep, person_id: str) -> JSONResponse:
    return hal(await _person_or_404(request, roster, caller, person_id))


def _name_part(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise_api(400, f"{key} must be text")
    return None if value is None else collapse_spaces(value)


def _read_person(body: Any) -> dict[str, Any]:
    """The fields of an OSDI person we keep, checked; a field not sent is not in the result (so not changed)."""
    if not isinstance(body, dict):
        raise_api(400, "Send a JSON object")
    out: dict[str, Any] = {}
    for key in ("given_name", "family_name"):
        if (part := _name_part(body, key)) is not None:
            out[key] = part
    if len(display_name(out.get("given_name", ""), out.get("family_name", ""))) > MAX_NAME:
        raise_api(400, f"The name must be {MAX_NAME} characters or fewer")
    emails = body.get("email_addresses")
    if emails is not None:
        if not isinstance(emails, list) or not emails or not isinstance(emails[0], dict):
            raise_api(400, "email_addresses must be a list of objects with an address")
        primary = next((e for e in emails if isinstance(e, dict) and e.get("primary")), emails[0])
        address = normalise_email(str(primary.get("address") or ""))
        if not is_email(address):
            raise_api(400, "The email address is not valid")
        out["email"] = address
        status = primary.get("status")
        if status is not None:
            if status not in ("subscribed", "unsubscribed"):
                raise_api(400, "An email address's status must be subscribed or unsubscribed")
            out["email_consent"] = status == "subscribed"
    addresses = body.get("postal_addresses")
    if addresses:
        if not isinstance(addresses, list) or not isinstance(addresses[0], dict):
            raise_api(400, "postal_addresses must be a list of objects")
        code = normalise_postcode(str(addresses[0].get("postal_code") or ""))
        if code and not UK_POSTCODE_RE.match(code):
            raise_api(400, "The postal code is not a UK postcode")
        out["postcode"] = code or None
    phones = body.get("phone_numbers")
    if phones:
        if not isinstance(phones, list) or not all(isinstance(p, dict) for p in phones):
            raise_api(400, "phone_numbers must be a list of objects with a number")
        primary = next((p for p in phones if p.get("primary")), phones[0])
        number = re.sub(r"[\s().-]", "", str(primary.get("number") or ""))
        if not PHONE_RE.match(number):
            raise_api(400, "A phone number is 6 to 20 digits, perhaps after a +")
        out["phone_number"] = number
    custom = body.get("custom_fields")
    if custom:
        out["custom_fields"] = _read_custom_fields(custom)
    return out


def _read_custom_fields(custom: Any) -> dict[str, Any]:
    """An integration's own fields: names to text, numbers or true/false (null removes one)."""
    if not isinstance(custom, dict) or len(custom) > MAX_CUSTOM_FIELDS:
        raise_api(400, f"custom_fields must be an object of up to {MAX_CUSTOM_FIELDS} fields")
    for key, value in custom.items():
        if not key.strip() or len(key) > MAX_CUSTOM_KEY:
            raise_api(400, f"A custom field's name must be 1 to {MAX_CUSTOM_KEY} characters")
        if key in SYSTEM_FIELDS:
            raise_api(400, f"The custom field {key} is the system's own and cannot be set: {sorted(SYSTEM_FIELDS)}")
        if not isinstance(value, str | int | float | bool | None) or len(str(value)) > MAX_CUSTOM_VALUE:
            raise_api(
                400,
                f"A custom field's value must be text, a number or true/false, of up to {MAX_CUSTOM_VALUE} characters",
            )
    return dict(custom)


def _changes(fields: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of MemberRights.update_person for what was sent."""
    keys = ("given_name", "family_name", "postcode", "email_consent", "phone_number", "custom_fields")
    return {k: fields[k] for k in keys if k in fields}


@router.put("/people/{person_id}", responses=osdi.one("The person as now held"), openapi_extra=PERSON_BODY)
async def update_person(
    request: Request, caller: Caller, roster: RosterDep, rights: MemberRightsDep, uows: UnitsOfWorkDep, person_id: str
) -> JSONResponse:
    person_id = bare_id(person_id)
    current = await _person_or_404(request, roster, caller, person_id)
    fields = _read_person(await _json(request))
    if fields.get("email", current["email_addresses"][0]["address"]) != current["email_addresses"][0]["address"]:
        raise_api(400, "An email address is changed by the person themselves (it needs confirming)")
    async with uows.begin() as uow:
        try:
            await rights.update_person(uow, person_id, **_changes(fields), source=api_source(caller.key_id))
        except MemberNotFound:
            raise_api(404, "There is no person with that id that this API key may see")
    return hal(await _person_or_404(request, roster, caller, person_id))


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise_api(400, "Send a JSON body")


@router.post("/people", **SIGNUP)
@router.post("/people/", include_in_schema=False, **SIGNUP)  # Action Network's documented form: no redirect
@router.post("/person_signup_helper", **SIGNUP)
async def person_signup_helper(
    request: Request,
    caller: Caller,
    roster: RosterDep,
    joins: JoinsDep,
    rights: MemberRightsDep,
    uows: UnitsOfWorkDep,
) -> JSONResponse:
    """Add a person, or find them by email and merge what is sent (`add_tags` tags them). Someone already
    known but outside the key's scope is left untouched, and the answer is the one a new person gets; someone in
    scope who left stays as they left (only tagged)."""
    body = await _json(request)
    if not isinstance(body, dict) or not isinstance(body.get("person"), dict):
        raise_api(400, 'Send {"person": {...}} with at least one email address')
    fields = _read_person(body["person"])
    if "email" not in fields:
        raise_api(400, "The person needs an email address")
    add_tags = body.get("add_tags") or []
    if not isinstance(add_tags, list) or not all(
        isinstance(t, str) and 0 < len(t.strip()) <= MAX_TAG for t in add_tags
    ):
        raise_api(400, f"add_tags must be a list of tag names of up to {MAX_TAG} characters")
    source = api_source(caller.key_id)
    m = tables.members
    async with uows.begin() as uow:
        session = uow.session
        options = await queries.load_join_options(session)
        region_id, nearest = place(fields.get("postcode"), options.postcode_prefixes)
        if caller.scope_type == "region" and region_id != caller.scope_id:
            region_id = caller.scope_id  # a region's integration adds people to its region
        group_ids = [caller.scope_id] if caller.scope_type == "group" and caller.scope_id else []
        if not group_ids and nearest:
            group_ids = [nearest]
        application = JoinApplication(
            name=display_name(fields.get("given_name", ""), fields.get("family_name", "")),
            email=fields["email"],
            postcode=fields.get("postcode"),
            email_consent=bool(fields.get("email_consent")),
            consent_version=options.consent_version,
            engagement_level=options.levels[0].key if options.levels else "informed",
            group_ids=group_ids,
            subteam_ids=[caller.scope_id] if caller.scope_type == "subteam" and caller.scope_id else [],
            region_id=region_id,
            suggested_group_id=nearest,
            source=source,
            replace_profile=False,
        )
        known = select(m.c.id, m.c.status).where(m.c.email_normalised == fields["email"])
        visible = (await session.execute(known.where(in_scope(caller)))).first()
        if not visible and (await session.execute(known)).first():
            names = await Roster.unit_names(session)
            return _as_if_new(request, application, fields, names, double_opt_in=joins.double_opt_in)
        if visible and visible.status == "left":
            # Not brought back or subscribed again, as Action Network keeps someone who unsubscribed: their record
            # stays as they left it (only they can rejoin, through the link a join emails them); tags are added.
            outcome = JoinOutcome(visible.id, False)
        else:  # a key changes the people in its scope at once (no email to confirm), as Action Network does
            outcome = await joins.join_in(uow, application, ip=None, ask_first=False)
            changes = _changes(fields)
            if outcome.new_member:  # the join took the name and consent; keep the names as sent and the rest
                changes.pop("email_consent", None)
                changes.pop("postcode", None)
            await rights.update_person(uow, outcome.member_id, **changes, source=source)
        if outcome.new_member:  # created and modified dates of a new person are one (parsons tells them apart so)
            m_id = m.c.id == outcome.member_id
            await session.execute(update(m).where(m_id).values(updated_at=m.c.joined_at))
        for name in add_tags:
            tag_id = await _tag_id(session, name.strip(), actor_of(caller), create=True)
            await session.execute(
                pg_insert(tables.taggings)
                .values(id=str(uuid.uuid4()), tag_id=tag_id, member_id=outcome.member_id, created_by=actor_of(caller))
                .on_conflict_do_nothing()
            )
    details = await roster.member(caller, outcome.member_id)
    if details is None:  # cannot happen: a key's signups land in its scope
        raise_api(404, "There is no person with that id that this API key may see")
    assert details is not None
    return hal(_person(request, details), 201 if outcome.new_member else 200)


def _as_if_new(
    request: Request,
    application: JoinApplication,
    fields: dict[str, Any],
    names: dict[str, str],
    *,
    double_opt_in: bool,
) -> JSONResponse:
    """The answer a new person gets, for someone already known whom this key may not see: nothing about them is
    read or changed, and the id is a fresh one that leads nowhere (the key could not reach them anyway)."""
    row = new_member_row(str(uuid.uuid4()), application, datetime.now(UTC), double_opt_in=double_opt_in)
    member = SimpleNamespace(
        **row,
        given_name=fields.get("given_name"),
        family_name=fields.get("family_name"),
        phone_number=fields.get("phone_number"),
        custom_fields=fields.get("custom_fields") or {},
        ladder_level=None,
    )
    details = {
        "member": member,
        "region": names.get(application.region_id or ""),
        "groups": [(g, names.get(g, g)) for g in application.group_ids],
        "subteams": [(t, names.get(t, t)) for t in application.subteam_ids],
    }
    return hal(_person(request, details), 201)


# -- tags and taggings -----------------------------------------------------------------------------


async def _tag_id(session: Any, name: str, actor: str, *, create: bool) -> str:
    t = tables.tags
    found = (await session.execute(select(t.c.id).where(func.lower(t.c.name) == name.lower()))).scalar()
    if found or not create:
        return str(found) if found else ""
    tag_id = str(uuid.uuid4())
    inserted = await session.execute(
        pg_insert(t).values(id=tag_id, name=name, created_by=actor).on_conflict_do_nothing().returning(t.c.id)
    )
    return str(inserted.scalar() or (await session.execute(select(t.c.id).where(t.c.name == name))).scalar())


def _tag(request: Request, row: Any) -> dict[str, Any]:
    api = api_url(request)
    return {
        "identifiers": identifiers(row.id),
        "name": row.name,
        "created_date": row.created_at.isoformat(),
        "modified_date": row.updated_at.isoformat(),
        "_links": {
            "self": {"href": f"{api}/tags/{row.id}"},
            "osdi:taggings": {"href": f"{api}/tags/{row.id}/taggings"},
            "curies": CURIES,
        },
    }


def _tagging(request: Request, row: Any) -> dict[str, Any]:
    api = api_url(request)
    return {
        "identifiers": identifiers(row.id),
        "created_date": row.created_at.isoformat(),
        "modified_date": row.created_at.isoformat(),
        "_links": {
            "self": {"href": f"{api}/tags/{row.tag_id}/taggings/{row.id}"},
            "osdi:tag": {"href": f"{api}/tags/{row.tag_id}"},
            "osdi:person": {"href": f"{api}/people/{row.member_id}"},
            "curies": CURIES,
        },
    }


@router.get("/tags", responses=osdi.page_of("tags"))
async def tag_list(
    request: Request, caller: Caller, uows: UnitsOfWorkDep, page: Page = 1, per_page: PerPage = MAX_PER_PAGE
) -> JSONResponse:
    t = tables.tags
    async with uows.begin() as uow:
        session = uow.session
        total = (await session.execute(select(func.count()).select_from(t))).scalar_one()
        rows = (await session.execute(select(t).order_by(t.c.name).limit(per_page).offset((page - 1) * per_page))).all()
    return hal(collection(_here(request, "tags"), "tags", [_tag(request, r) for r in rows], total, page, per_page))


@router.post("/tags", status_code=201, responses={201: osdi.one("The tag (the one of that name if known)")[200]},
             openapi_extra=osdi.request_body(TagRequest))
async def create_tag(request: Request, caller: Caller, uows: UnitsOfWorkDep) -> JSONResponse:
    body = await _json(request)
    name = body.get("name") if isinstance(body, dict) else None
    name = collapse_spaces(name) if isinstance(name, str) else ""
    if not name or len(name) > MAX_TAG:
        raise_api(400, f"A tag needs a name of up to {MAX_TAG} characters")
    async with uows.begin() as uow:
        session = uow.session
        tag_id = await _tag_id(session, name, actor_of(caller), create=True)
        row = (await session.execute(select(tables.tags).where(tables.tags.c.id == tag_id))).one()
    return hal(_tag(request, row), 201)


async def _tag_row(session: Any, tag_id: str) -> Any:
    row = (await session.execute(select(tables.tags).where(tables.tags.c.id == tag_id))).first()
    if row is None:
        raise_api(404, "There is no tag with that id")
    return row


@router.get("/tags/{tag_id}", responses=osdi.one("The tag"))
async def tag(request: Request, caller: Caller, uows: UnitsOfWorkDep, tag_id: str) -> JSONResponse:
    async with uows.begin() as uow:
        session = uow.session
        return hal(_tag(request, await _tag_row(session, bare_id(tag_id))))


async def _taggings_page(
    request: Request, uows: UnitsOfWork, caller: auth.OrganiserScope, where: Any, path: str, page: int, per_page: int
) -> JSONResponse:
    g, m = tables.taggings, tables.members
    visible = and_(where, g.c.member_id == m.c.id, m.c.status != "erased", in_scope(caller))
    async with uows.begin() as uow:
        session = uow.session
        total = (
            await session.execute(select(func.count()).select_from(g.join(m, g.c.member_id == m.c.id)).where(visible))
        ).scalar_one()
        rows = (
            await session.execute(
                select(g)
                .select_from(g.join(m, g.c.member_id == m.c.id))
                .where(visible)
                .order_by(g.c.created_at)
                .limit(per_page)
                .offset((page - 1) * per_page)
            )
        ).all()
        await Roster.audit(session, actor_of(caller), "taggings.list", path=path, shown=len(rows))
    items = [_tagging(request, r) for r in rows]
    return hal(collection(_here(request, path), "taggings", items, total, page, per_page))


@router.get("/tags/{tag_id}/taggings", responses=osdi.page_of("taggings"))
async def tag_taggings(
    request: Request,
    caller: Caller,
    uows: UnitsOfWorkDep,
    tag_id: str,
    page: Page = 1,
    per_page: PerPage = MAX_PER_PAGE,
) -> JSONResponse:
    tag_id = bare_id(tag_id)
    async with uows.begin() as uow:
        session = uow.session
        await _tag_row(session, tag_id)
    where = tables.taggings.c.tag_id == tag_id
    return await _taggings_page(request, uows, caller, where, f"tags/{tag_id}/taggings", page, per_page)


@router.get("/tags/{tag_id}/taggings/{tagging_id}", responses=osdi.one("The tagging"))
async def tagging(request: Request, caller: Caller, uows: UnitsOfWorkDep, tag_id: str, tagging_id: str) -> JSONResponse:
    return hal(_tagging(request, await _visible_tagging(uows, caller, bare_id(tag_id), bare_id(tagging_id))))


async def _visible_tagging(uows: UnitsOfWork, caller: auth.OrganiserScope, tag_id: str, tagging_id: str) -> Any:
    g, m = tables.taggings, tables.members
    async with uows.begin() as uow:
        row = (
            await uow.session.execute(
                select(g)
                .select_from(g.join(m, g.c.member_id == m.c.id))
                .where(g.c.id == tagging_id, g.c.tag_id == tag_id, m.c.status != "erased", in_scope(caller))
            )
        ).first()
    if row is None:
        raise_api(404, "There is no such tagging that this API key may see")
    return row


@router.get("/people/{person_id}/taggings", responses=osdi.page_of("taggings"))
async def person_taggings(
    request: Request,
    caller: Caller,
    roster: RosterDep,
    uows: UnitsOfWorkDep,
    person_id: str,
    page: Page = 1,
    per_page: PerPage = MAX_PER_PAGE,
) -> JSONResponse:
    person_id = bare_id(person_id)
    await _person_or_404(request, roster, caller, person_id)
    where = tables.taggings.c.member_id == person_id
    return await _taggings_page(request, uows, caller, where, f"people/{person_id}/taggings", page, per_page)


@router.post("/tags/{tag_id}/taggings", status_code=201, responses={201: osdi.one("The tagging")[200]},
             openapi_extra=osdi.request_body(TaggingRequest))
async def tag_someone(
    request: Request, caller: Caller, roster: RosterDep, uows: UnitsOfWorkDep, tag_id: str
) -> JSONResponse:
    body = await _json(request)
    try:
        person_id = person_id_of(TaggingRequest.model_validate(body).links)
    except ValidationError:
        person_id = None
    if not person_id:
        raise_api(400, 'Send {"_links": {"osdi:person": {"href": ".../api/v2/people/<id>"}}}')
    assert person_id is not None
    tag_id = bare_id(tag_id)
    await _person_or_404(request, roster, caller, person_id)
    g = tables.taggings
    async with uows.begin() as uow:
        session = uow.session
        await _tag_row(session, tag_id)
        await session.execute(
            pg_insert(g)
            .values(id=str(uuid.uuid4()), tag_id=tag_id, member_id=person_id, created_by=actor_of(caller))
            .on_conflict_do_nothing()
        )
        row = (await session.execute(select(g).where(g.c.tag_id == tag_id, g.c.member_id == person_id))).one()
    return hal(_tagging(request, row), 201)


@router.delete("/tags/{tag_id}/taggings/{tagging_id}")
async def untag(request: Request, caller: Caller, uows: UnitsOfWorkDep, tag_id: str, tagging_id: str) -> JSONResponse:
    row = await _visible_tagging(uows, caller, bare_id(tag_id), bare_id(tagging_id))
    async with uows.begin() as uow:
        await uow.session.execute(delete(tables.taggings).where(tables.taggings.c.id == row.id))
    return hal({"notice": "This tagging was removed"})
