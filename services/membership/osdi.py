"""OSDI as Action Network serves it: the API entry point, people, the person signup helper, tags and taggings.

HAL+JSON under `/api/v2/`, authenticated by an API key in the `OSDI-API-Token` header (keys are created and
revoked by organisers; a key only reaches the members of the scope it was created for). Collections page
with `page` and `per_page` (at most 25). Every read of people is written to the audit log.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.membership import db as tables
from services.membership import queries
from services.membership.deps import JoinsDep, MemberRightsDep, RosterDep, SettingsDep, UnitsOfWorkDep
from services.membership.domain import JoinApplication, place
from services.membership.joins import MemberNotFound
from services.membership.roster import MemberFilters, Roster, actor_of, in_scope
from shared import auth, osdi
from shared.contact import MAX_NAME, UK_POSTCODE_RE, collapse_spaces, is_email, normalise_email, normalise_postcode
from shared.osdi import CURIES, MAX_PER_PAGE, api_url, collection, hal
from shared.uow import UnitsOfWork
from shared.web import MAX_PAGE

router = APIRouter(prefix=osdi.PREFIX, tags=["OSDI"])
MAX_TAG = 100


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


def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return hal({"error": exc.message}, exc.status)


Caller = Annotated[auth.OrganiserScope, Depends(api_caller)]


def _paging(request: Request) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        try:
            return int(request.query_params.get(name, default))
        except ValueError:
            raise_api(400, f"{name} must be a whole number")
            raise

    page, per_page = number("page", 1), number("per_page", MAX_PER_PAGE)
    if page > MAX_PAGE:
        raise_api(400, f"page must be at most {MAX_PAGE}")
    return max(page, 1), min(max(per_page, 1), MAX_PER_PAGE)


def _person(request: Request, details: dict[str, Any]) -> dict[str, Any]:
    m = details["member"]
    given, _, family = m.name.rpartition(" ") if " " in m.name else (m.name, "", "")
    api = api_url(request)
    return {
        "identifiers": [f"groundswell:{m.id}"],
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
        "created_date": m.joined_at.isoformat(),
        "modified_date": m.updated_at.isoformat(),
        "custom_fields": {
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
                "curies": CURIES,
            },
        }
    )


# -- people ----------------------------------------------------------------------------------------


async def _person_or_404(
    request: Request, roster: Roster, caller: auth.OrganiserScope, person_id: str
) -> dict[str, Any]:
    details = await roster.member(caller, person_id)
    if details is None:
        raise_api(404, "There is no person with that id that this API key may see")
    assert details is not None
    return _person(request, details)


@router.get("/people")
async def people(request: Request, caller: Caller, roster: RosterDep, uows: UnitsOfWorkDep) -> JSONResponse:
    page, per_page = _paging(request)
    filters = MemberFilters(q=request.query_params.get("q", "")[:200])
    rows, total = await roster.page(caller, filters, page, per_page)
    items = []
    async with uows.begin() as uow:
        for row in rows:
            items.append(_person(request, await roster.details(uow.session, row)))
    return hal(collection(f"{api_url(request)}/people", "people", items, total, page, per_page))


@router.get("/people/{person_id}")
async def person(request: Request, caller: Caller, roster: RosterDep, person_id: str) -> JSONResponse:
    return hal(await _person_or_404(request, roster, caller, person_id))


def _read_person(body: Any) -> dict[str, Any]:
    """The fields of an OSDI person we use, checked: name, email, postcode, email status."""
    if not isinstance(body, dict):
        raise_api(400, "Send a JSON object")
    out: dict[str, Any] = {}
    given, family = body.get("given_name"), body.get("family_name")
    if given is not None or family is not None:
        if not all(isinstance(x, str | None) for x in (given, family)):
            raise_api(400, "given_name and family_name must be text")
        name = collapse_spaces(f"{given or ''} {family or ''}")
        if len(name) > MAX_NAME:
            raise_api(400, f"The name must be {MAX_NAME} characters or fewer")
        out["name"] = name or None
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
    return out


@router.put("/people/{person_id}")
async def update_person(
    request: Request, caller: Caller, roster: RosterDep, rights: MemberRightsDep, uows: UnitsOfWorkDep, person_id: str
) -> JSONResponse:
    current = await _person_or_404(request, roster, caller, person_id)
    fields = _read_person(await _json(request))
    if fields.get("email", current["email_addresses"][0]["address"]) != current["email_addresses"][0]["address"]:
        raise_api(400, "An email address is changed by the person themselves (it needs confirming)")
    async with uows.begin() as uow:
        try:
            await rights.update_person(
                uow,
                person_id,
                name=fields.get("name"),
                postcode=fields.get("postcode"),
                email_consent=fields.get("email_consent"),
                source=f"api:{caller.key_id}",
            )
        except MemberNotFound:
            raise_api(404, "There is no person with that id that this API key may see")
    return hal(await _person_or_404(request, roster, caller, person_id))


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise_api(400, "Send a JSON body")


@router.post("/people")
@router.post("/person_signup_helper")
async def person_signup_helper(
    request: Request,
    caller: Caller,
    roster: RosterDep,
    joins: JoinsDep,
    rights: MemberRightsDep,
    uows: UnitsOfWorkDep,
) -> JSONResponse:
    """Add a person, or find them by email and merge what is sent (`add_tags` tags them)."""
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
    source = f"api:{caller.key_id}"
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
            name=fields.get("name") or "",
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
        outcome = await joins.join_in(uow, application, ip=None)
        if not outcome.new_member:
            await rights.update_person(
                uow,
                outcome.member_id,
                name=fields.get("name"),
                postcode=fields.get("postcode"),
                email_consent=fields.get("email_consent"),
                source=source,
            )
        for name in add_tags:
            tag_id = await _tag_id(session, name.strip(), actor_of(caller), create=True)
            await session.execute(
                pg_insert(tables.taggings)
                .values(id=str(uuid.uuid4()), tag_id=tag_id, member_id=outcome.member_id, created_by=actor_of(caller))
                .on_conflict_do_nothing()
            )
    details = await roster.member(caller, outcome.member_id)
    if details is None:  # the person exists but lies outside this key's scope: say nothing more about them
        return hal({"identifiers": [], "_links": {"curies": CURIES}}, 200)
    return hal(_person(request, details), 201 if outcome.new_member else 200)


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
        "identifiers": [f"groundswell:{row.id}"],
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
        "identifiers": [f"groundswell:{row.id}"],
        "created_date": row.created_at.isoformat(),
        "modified_date": row.created_at.isoformat(),
        "_links": {
            "self": {"href": f"{api}/tags/{row.tag_id}/taggings/{row.id}"},
            "osdi:tag": {"href": f"{api}/tags/{row.tag_id}"},
            "osdi:person": {"href": f"{api}/people/{row.member_id}"},
            "curies": CURIES,
        },
    }


@router.get("/tags")
async def tag_list(request: Request, caller: Caller, uows: UnitsOfWorkDep) -> JSONResponse:
    page, per_page = _paging(request)
    t = tables.tags
    async with uows.begin() as uow:
        session = uow.session
        total = (await session.execute(select(func.count()).select_from(t))).scalar_one()
        rows = (await session.execute(select(t).order_by(t.c.name).limit(per_page).offset((page - 1) * per_page))).all()
    return hal(collection(f"{api_url(request)}/tags", "tags", [_tag(request, r) for r in rows], total, page, per_page))


@router.post("/tags")
async def create_tag(request: Request, caller: Caller, uows: UnitsOfWorkDep) -> JSONResponse:
    body = await _json(request)
    name = collapse_spaces(str(body.get("name") or "")) if isinstance(body, dict) else ""
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


@router.get("/tags/{tag_id}")
async def tag(request: Request, caller: Caller, uows: UnitsOfWorkDep, tag_id: str) -> JSONResponse:
    async with uows.begin() as uow:
        session = uow.session
        return hal(_tag(request, await _tag_row(session, tag_id)))


async def _taggings_page(
    request: Request, uows: UnitsOfWork, caller: auth.OrganiserScope, where: Any, path: str
) -> JSONResponse:
    page, per_page = _paging(request)
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
    return hal(collection(f"{api_url(request)}/{path}", "taggings", items, total, page, per_page))


@router.get("/tags/{tag_id}/taggings")
async def tag_taggings(request: Request, caller: Caller, uows: UnitsOfWorkDep, tag_id: str) -> JSONResponse:
    async with uows.begin() as uow:
        session = uow.session
        await _tag_row(session, tag_id)
    return await _taggings_page(request, uows, caller, tables.taggings.c.tag_id == tag_id, f"tags/{tag_id}/taggings")


@router.get("/people/{person_id}/taggings")
async def person_taggings(
    request: Request, caller: Caller, roster: RosterDep, uows: UnitsOfWorkDep, person_id: str
) -> JSONResponse:
    await _person_or_404(request, roster, caller, person_id)
    return await _taggings_page(
        request, uows, caller, tables.taggings.c.member_id == person_id, f"people/{person_id}/taggings"
    )


@router.post("/tags/{tag_id}/taggings")
async def tag_someone(
    request: Request, caller: Caller, roster: RosterDep, uows: UnitsOfWorkDep, tag_id: str
) -> JSONResponse:
    body = await _json(request)
    href = ""
    if isinstance(body, dict):
        href = str(((body.get("_links") or {}).get("osdi:person") or {}).get("href") or "")
    person_id = href.rstrip("/").rsplit("/", 1)[-1] if "/people/" in href else ""
    if not person_id:
        raise_api(400, 'Send {"_links": {"osdi:person": {"href": ".../api/v2/people/<id>"}}}')
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
    g, m = tables.taggings, tables.members
    async with uows.begin() as uow:
        session = uow.session
        row = (
            await session.execute(
                select(g.c.id)
                .select_from(g.join(m, g.c.member_id == m.c.id))
                .where(g.c.id == tagging_id, g.c.tag_id == tag_id, in_scope(caller))
            )
        ).first()
        if row is None:
            raise_api(404, "There is no such tagging that this API key may see")
        await session.execute(delete(g).where(g.c.id == tagging_id))
    return hal({"notice": "This tagging was removed"})
