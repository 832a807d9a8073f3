"""Organiser accounts: created from the command line or invited, a password and TOTP second factor, recovery
codes, the shared session token other services accept, scoped member lists with search, CSV and an audit
log, the network's units and roles, API keys."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp

from deploy.local import launcher
from services.membership import seeds
from shared import auth
from shared.crypto import unseal
from shared.events.envelope import Sealed
from tests.membership.conftest import join_form, make_organiser, member_by_email, poll, unique_email
from tests.support.tampering import tampered

BIRMINGHAM = seeds.unit_id("region", "birmingham-black-country")
EAST_MIDLANDS = seeds.unit_id("region", "east-midlands")
NOTTINGHAM = seeds.unit_id("group", "nottingham")
COVENTRY = seeds.unit_id("group", "coventry")


def next_code(secret: str) -> str:
    """The code of the next time step: accepted (one step of drift) and never the one just used."""
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))


async def run_cli(settings, *args: str) -> str:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": settings.secret_key,
        "PUBLIC_BASE_URL": settings.public_base_url,
        "KAFKA_BOOTSTRAP_SERVERS": launcher.KAFKA_BOOTSTRAP,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.membership",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


def field(output: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}:\s+(\S+)$", output, re.M)
    assert match, output
    return match.group(1)


async def set_password(
    client: httpx.AsyncClient, link: str, secret: str, password: str, code: str | None = None
) -> list[str]:
    path = link.replace(client.base_url.__str__().rstrip("/"), "")
    form = await client.get(path)
    assert form.status_code == 200 and secret in form.text and "otpauth://totp/" in form.text
    token = parse_qs(urlsplit(link).query)["token"][0]
    done = await client.post(
        "/organisers/set-password",
        data={"token": token, "password": password, "confirm": password, "code": code or pyotp.TOTP(secret).now()},
    )
    assert done.status_code == 200, done.text
    return re.findall(r"<code>([0-9a-f]{5}-[0-9a-f]{5})</code>", done.text)


async def test_first_organiser_from_the_command_line_sets_a_password_and_signs_in_with_totp(
    client, membership_settings, db
):
    email = unique_email("first-organiser")
    output = await run_cli(membership_settings, "create-organiser", "--email", email, "--scope", "network")
    secret = field(output, "TOTP secret")
    assert field(output, "otpauth URI").startswith("otpauth://totp/") and secret in output
    link = field(output, "set password link")
    assert link.startswith(f"{membership_settings.public_base_url}/organisers/set-password?token=")

    codes = await set_password(client, link, secret, "correct horse battery staple")
    assert len(codes) == 10
    row = await db.fetchrow("SELECT * FROM organisers WHERE email_normalised = $1", email)
    assert row["status"] == "active" and row["password_hash"].startswith("$argon2id$")
    assert secret not in (row["totp_secret"] or "")  # sealed at rest
    assert (await client.get(link.split(str(client.base_url))[-1])).status_code == 400  # the link works once

    signed_in = await client.post(
        "/signin", data={"email": email, "password": "correct horse battery staple", "code": next_code(secret)}
    )
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/admin"  # the organisers' home
    cookie = signed_in.cookies[auth.SESSION_COOKIE]
    assert (
        "httponly" in signed_in.headers["set-cookie"].lower()
        and "samesite=lax" in signed_in.headers["set-cookie"].lower()
    )
    scope = auth.verify(membership_settings.secret_key, cookie)
    assert scope.organiser_id == row["id"] and scope.scope_type == "network"
    page = await client.get("/members", cookies={auth.SESSION_COOKIE: cookie})
    assert page.status_code == 200 and "<h1>Members</h1>" in page.text


async def test_sign_in_refuses_a_wrong_password_a_wrong_or_replayed_code_and_takes_a_recovery_code_once(
    client, membership_settings
):
    email = unique_email("careful-organiser")
    output = await run_cli(membership_settings, "create-organiser", "--email", email, "--scope", "network")
    secret, link = field(output, "TOTP secret"), field(output, "set password link")
    used_code = pyotp.TOTP(secret).now()
    codes = await set_password(client, link, secret, "a long enough password", used_code)

    async def attempt(password: str, code: str) -> httpx.Response:
        return await client.post("/signin", data={"email": email, "password": password, "code": code})

    wrong_password = await attempt("not the password at all", next_code(secret))
    assert wrong_password.status_code == 401 and "not right" in wrong_password.text
    assert auth.SESSION_COOKIE not in wrong_password.cookies
    assert (await attempt("a long enough password", "000000")).status_code == 401
    # The code set-password already used: a replay (not "the code of now", which on a slow machine can belong to
    # the next time step by this line, and is then rightly accepted).
    assert (await attempt("a long enough password", used_code)).status_code == 401
    assert (await attempt("a long enough password", codes[0])).status_code == 303
    assert (await attempt("a long enough password", codes[0])).status_code == 401  # used up
    assert (await attempt("a long enough password", codes[1].upper())).status_code == 303
    unknown = await client.post("/signin", data={"email": unique_email("nobody"), "password": "x", "code": "1"})
    assert unknown.status_code == 401 and "not right" in unknown.text  # the same answer: nothing learnt


async def test_set_password_needs_a_long_password_matching_twice_and_a_current_code(client, membership_settings, db):
    email = unique_email("weak")
    output = await run_cli(membership_settings, "create-organiser", "--email", email, "--scope", "network")
    link = field(output, "set password link")
    token = parse_qs(urlsplit(link).query)["token"][0]
    for form, problem in (
        ({"password": "short", "confirm": "short", "code": "123456"}, "at least 12 characters"),
        ({"password": "long enough password", "confirm": "different password", "code": "123456"}, "not the same"),
        ({"password": "long enough password", "confirm": "long enough password", "code": "12"}, "6-digit code"),
    ):
        response = await client.post("/organisers/set-password", data={"token": token, **form})
        assert response.status_code == 422 and problem in response.text
    assert await db.fetchval("SELECT password_hash FROM organisers WHERE email_normalised = $1", email) is None
    forged = await client.get("/organisers/set-password", params={"token": tampered(token)})
    assert forged.status_code == 400


async def test_json_sign_in_gives_a_token_the_events_service_accepts(system, client, membership_settings):
    email = unique_email("json-organiser")
    output = await run_cli(
        membership_settings, "create-organiser", "--email", email, "--scope", "region", "--scope-id", BIRMINGHAM
    )
    secret, link = field(output, "TOTP secret"), field(output, "set password link")
    await set_password(client, link, secret, "another long password")
    response = await client.post(
        "/signin", json={"email": email, "password": "another long password", "code": next_code(secret)}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["scope_type"] == "region" and body["scope_id"] == BIRMINGHAM
    # Verified locally by another service with the shared helper: no call back to membership.
    async with httpx.AsyncClient(base_url=launcher.service_url("events"), timeout=30) as events:
        mine = await events.get("/events/organise", headers={"Authorization": f"Bearer {body['token']}"})
        assert mine.status_code == 200
        forged = await events.get("/events/organise", headers={"Authorization": f"Bearer {body['token']}x"})
        assert forged.status_code == 401


async def test_a_region_organiser_sees_their_region_only_and_another_regions_member_is_not_found(client, db):
    brum, notts = unique_email("brum"), unique_email("notts")
    await client.post("/join", data=join_form(brum, postcode="B1 1AA"))
    await client.post("/join", data=join_form(notts, postcode="NG1 5FS"))
    brum_id = (await member_by_email(db, brum))["id"]
    notts_id = (await member_by_email(db, notts))["id"]
    _, headers = await make_organiser(db, "region", BIRMINGHAM)

    assert (await client.get(f"/members/{brum_id}", headers=headers)).status_code == 200
    refused = await client.get(f"/members/{notts_id}", headers=headers)
    assert refused.status_code == 404 and notts not in refused.text
    listing = await client.get("/members", params={"q": "@example.org", "per_page": 100}, headers=headers)
    assert brum in listing.text and notts not in listing.text
    export = await client.get("/members/export.csv", headers=headers)
    assert brum in export.text and notts not in export.text

    _, group_headers = await make_organiser(db, "group", NOTTINGHAM)
    assert (await client.get(f"/members/{notts_id}", headers=group_headers)).status_code == 200
    assert (await client.get(f"/members/{brum_id}", headers=group_headers)).status_code == 404


async def test_member_list_searches_filters_exports_csv_and_every_view_and_export_is_audited(client, db):
    tag = unique_email("x").split("@")[0][-12:]
    emails = [f"filter-{tag}-{i}@example.org" for i in range(3)]
    await client.post(
        "/join", data=join_form(emails[0], name=f"Amy {tag}", interests=["racism-at-work"], engagement_level="organise")
    )
    await client.post(
        "/join", data=join_form(emails[1], name=f"Ben {tag}", postcode="CV1 2AB", interests=["racism-in-policing"])
    )
    await client.post(
        "/join",
        data=join_form(emails[2], name=f"Cat =SUM(A1) {tag}", postcode="CV1 3AB", skills='=HYPERLINK("http://evil")'),
    )
    organiser_id, headers = await make_organiser(db)

    async def listed(**params: str) -> set[str]:
        response = await client.get("/members", params={"q": tag, **params}, headers=headers)
        assert response.status_code == 200
        return {e for e in emails if e in response.text}

    assert await listed() == set(emails)
    assert await listed(interest="racism-at-work") == {emails[0]}
    assert await listed(engagement_level="organise") == {emails[0]}
    assert await listed(group_id=COVENTRY) == {emails[1], emails[2]}
    assert await listed(region_id=EAST_MIDLANDS) == set()
    assert await listed(confirmed="yes") == set()
    assert await listed(confirmed="no") == set(emails)

    export = await client.get("/members/export.csv", params={"q": tag, "group_id": COVENTRY}, headers=headers)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert {r["email"] for r in rows} == {emails[1], emails[2]}
    cat = next(r for r in rows if r["email"] == emails[2])
    assert cat["skills"].startswith("'=") and cat["groups"] == "Coventry"  # no formula runs in a spreadsheet

    member_id = (await member_by_email(db, emails[0]))["id"]
    assert (await client.get(f"/members/{member_id}", headers=headers)).status_code == 200
    audit = await db.fetch(
        "SELECT action, member_id, detail FROM audit_log WHERE actor = $1 ORDER BY id", f"organiser:{organiser_id}"
    )
    actions = [a["action"] for a in audit]
    assert actions.count("members.list") == 7 and actions.count("members.export") == 1
    assert ("member.view", member_id) in [(a["action"], a["member_id"]) for a in audit]
    assert '"exported": 2' in next(a["detail"] for a in audit if a["action"] == "members.export")


async def test_a_group_organisers_search_lists_their_groups_members_who_match_with_the_filters_newest_first(client, db):
    # Their search reads its finds first and checks the scope, status and filters on them (roster.py): the same
    # members, in the same order, as the whole list's conditions would give.
    tag = unique_email("x").split("@")[0][-12:]
    emails = {k: f"scoped-{tag}-{k}@example.org" for k in ("old", "new", "left", "erased", "other", "notts")}
    for k, email in emails.items():
        postcode = "NG1 5FS" if k == "notts" else "CV1 2AB"
        name = "Olive Morris" if k == "other" else f"Dee {tag}"  # `other`: found by the address alone
        interests = ["racism-at-work"] if k in ("new", "left") else []
        assert (await client.post("/join", data=join_form(email, name=name, postcode=postcode,
                                                          interests=interests))).status_code == 303
    not_found = unique_email("scoped-elsewhere")  # in the group, matching nothing
    await client.post("/join", data=join_form(not_found, name="Olive Morris", postcode="CV1 2AB"))
    at = datetime(2025, 1, 1, tzinfo=UTC)
    for days, k in enumerate(("old", "other", "left", "erased", "new", "notts")):
        await db.execute("UPDATE members SET joined_at = $2 WHERE email_normalised = $1", emails[k],
                         at + timedelta(days=days))
    await db.execute("UPDATE members SET status = 'left' WHERE email_normalised = $1", emails["left"])
    await db.execute("UPDATE members SET status = 'erased' WHERE email_normalised = $1", emails["erased"])
    _, headers = await make_organiser(db, "group", COVENTRY)

    async def listed(**params: str) -> list[str]:
        response = await client.get("/members", params={"q": tag, **params}, headers=headers)
        assert response.status_code == 200
        shown = {e: response.text.index(e) for e in (*emails.values(), not_found) if e in response.text}
        return sorted(shown, key=shown.__getitem__)

    newest_first = [emails[k] for k in ("new", "left", "other", "old")]
    assert await listed() == newest_first
    assert await listed(status="left") == [emails["left"]]
    assert await listed(interest="racism-at-work") == [emails["new"], emails["left"]]
    assert await listed(interest="racism-at-work", status="confirmed") == []
    assert await listed(per_page="1", page="2") == [emails["left"]]
    assert await listed(per_page="2", page="2") == [emails["other"], emails["old"]]
    response = await client.get("/members", params={"q": tag}, headers=headers)
    assert "4 members." in response.text


async def test_member_list_group_picker_finds_a_group_by_part_of_its_name_and_offers_a_choice_when_several_match(
    client, db
):
    tag = unique_email("x").split("@")[0][-12:]
    coventry = f"picker-{tag}-cov@example.org"
    await client.post("/join", data=join_form(coventry, name=f"Dee {tag}", postcode="CV1 2AB"))
    _, headers = await make_organiser(db)

    typed = await client.get("/members", params={"q": tag, "group": "  coventry "}, headers=headers)
    assert typed.status_code == 200 and coventry in typed.text
    assert 'name="group" value="Coventry"' in typed.text  # the group chosen, by name
    chosen = await client.get("/members", params={"q": tag, "group_id": COVENTRY}, headers=headers)
    assert coventry in chosen.text and 'name="group" value="Coventry"' in chosen.text
    assert f'<option value="{COVENTRY}"' not in chosen.text  # no list of every group sent with each page

    several = await client.get("/members", params={"q": tag, "group": "birmingham"}, headers=headers)
    assert several.status_code == 200 and "which one?" in several.text
    links = dict(re.findall(r'<li><a href="(/members\?[^"]+)">([^<]+)</a></li>', several.text))
    assert {"Birmingham Central", "Birmingham South"} <= set(links.values())
    central = next(href for href, name in links.items() if name == "Birmingham Central")
    assert parse_qs(urlsplit(central.replace("&amp;", "&")).query)["group_id"] == [
        seeds.unit_id("group", "birmingham-central")]
    assert coventry in several.text  # no group chosen yet: the list is not narrowed to one

    nowhere = await client.get("/members", params={"q": tag, "group": "atlantis"}, headers=headers)
    assert nowhere.status_code == 200 and "No local group" in nowhere.text and coventry in nowhere.text


async def test_organiser_pages_need_a_valid_session(client, db, membership_settings):
    garbled = await client.post("/signin", content=b"{", headers={"content-type": "application/json"})
    assert garbled.status_code == 400
    to_sign_in = await client.get("/members", headers={"accept": "text/html"})
    assert to_sign_in.status_code == 303 and to_sign_in.headers["location"].startswith("/signin?next=")
    assert (await client.get("/members/export.csv", headers={"accept": "text/csv"})).status_code == 401
    forged = auth.issue("some-other-networks-secret-key", auth.OrganiserScope("x", "network"))
    assert (await client.get("/members.csv", headers={"Authorization": f"Bearer {forged}"})).status_code in (401, 404)
    assert (await client.get("/members/export.csv", headers={"Authorization": f"Bearer {forged}"})).status_code == 401
    organiser_id, headers = await make_organiser(db)
    await db.execute("UPDATE organisers SET status = 'disabled' WHERE id = $1", organiser_id)
    assert (await client.get("/members/export.csv", headers=headers)).status_code == 401
    session = (await make_organiser(db))[1]["Authorization"][7:]
    csrf = await client.post(  # another site's form: the browser sends the session cookie, not a header
        "/admin/units",
        data={"kind": "region", "name": "Sneaky"},
        cookies={auth.SESSION_COOKIE: session},
        headers={"Origin": "https://evil.example"},
    )
    assert csrf.status_code == 403
    assert await db.fetchval("SELECT count(*) FROM regions WHERE name = 'Sneaky'") == 0


async def test_an_invited_organiser_gets_a_sealed_link_sets_a_password_and_signs_in(client, db, kafka):
    _, headers = await make_organiser(db, "region", EAST_MIDLANDS)
    email = unique_email("invitee")
    refused = await client.post(
        "/organisers/invite", headers=headers, data={"email": email, "scope_type": "region", "scope_id": BIRMINGHAM}
    )
    assert refused.status_code == 422 and "part of the network you look after" in refused.text
    invited = await client.post(
        "/organisers/invite",
        headers=headers,
        data={"email": email, "name": "Jayaben Desai", "scope_type": "group", "scope_id": NOTTINGHAM},
    )
    assert invited.status_code == 200 and f"invited {email}" in invited.text
    organiser_id = await db.fetchval("SELECT id FROM organisers WHERE email_normalised = $1", email)

    [event] = await kafka.wait_for(lambda e: e.type == "OrganiserInvited" and e.subject_id == organiser_id)
    assert email not in event.model_dump_json() and event.data["scope_id"] == NOTTINGHAM
    await kafka.wait_for(lambda e: e.type == "SubjectKeyIssued" and e.subject_id == organiser_id)
    [granted] = await kafka.wait_for(lambda e: e.type == "RoleGranted" and e.subject_id == organiser_id)
    assert granted.data["role"] == "organiser" and granted.data["scope_type"] == "group"
    key = await db.fetchval("SELECT key FROM subject_keys WHERE key_id = $1", organiser_id)
    assert unseal(Sealed(**event.data["email"]), key) == email
    link = unseal(Sealed(**event.data["set_password_url"]), key)
    form = await client.get(link.replace(str(client.base_url).rstrip("/"), ""))
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', form.text).group(1)
    await set_password(client, link, secret, "jayaben's long password")
    signed_in = await client.post(
        "/signin", json={"email": email, "password": "jayaben's long password", "code": next_code(secret)}
    )
    assert signed_in.json()["scope_type"] == "group" and signed_in.json()["scope_id"] == NOTTINGHAM


async def _offered_after_joining(client) -> str:
    """What the short join's thank-you page offers to tell us more (the groups to choose among)."""
    await client.get("/join")
    assert (await client.post("/join", data=join_form(unique_email("offered")))).status_code == 303
    return (await client.get("/join/thanks")).text


async def test_organisers_shape_the_network_within_their_scope_and_each_change_is_announced(client, db, kafka):
    _, network = await make_organiser(db)
    assert "Loughborough" not in await _offered_after_joining(client)  # the form's choices are now cached
    created = await client.post(
        "/admin/units", headers=network, data={"kind": "group", "name": "Loughborough", "parent_id": EAST_MIDLANDS}
    )
    assert created.status_code == 303
    unit = await db.fetchrow("SELECT * FROM local_groups WHERE name = 'Loughborough'")
    assert unit["region_id"] == EAST_MIDLANDS and unit["slug"].startswith("loughborough")
    [defined] = await kafka.wait_for(lambda e: e.type == "OrganisationUnitDefined" and e.subject_id == unit["id"])
    assert defined.data == {
        "unit_id": unit["id"],
        "kind": "group",
        "name": "Loughborough",
        "parent_id": EAST_MIDLANDS,
        "slug": unit["slug"],
    }
    # "Tell us more" after joining offers the new group at once (cached choices are forgotten on every change)...
    assert "Loughborough" in await _offered_after_joining(client)
    joined = await client.post("/join", data=join_form(unique_email("lboro"), groups=[unit["id"]]))
    assert joined.status_code == 303
    # ...and under its new name once renamed.
    renamed_here = await client.post(
        "/admin/units", headers=network, data={"kind": "group", "unit_id": unit["id"], "name": "Charnwood"}
    )
    assert renamed_here.status_code == 303
    assert "Charnwood" in await _offered_after_joining(client)

    _, regional = await make_organiser(db, "region", BIRMINGHAM)
    not_theirs = await client.post(
        "/admin/units", headers=regional, data={"kind": "group", "name": "Mansfield", "parent_id": EAST_MIDLANDS}
    )
    assert not_theirs.status_code == 422
    too_long = await client.post("/admin/units", headers=network, data={"kind": "subteam", "name": "x" * 121})
    assert too_long.status_code == 422 and "120 characters" in too_long.text
    renamed = await client.post(
        "/admin/units", headers=regional, data={"kind": "group", "unit_id": unit["id"], "name": "Loughborough"}
    )
    assert renamed.status_code == 404  # another region's group: as if it did not exist
    assert await db.fetchval("SELECT count(*) FROM local_groups WHERE name = 'Mansfield'") == 0


async def test_a_member_is_given_a_role_within_the_organisers_scope(client, db, kafka):
    email = unique_email("lead")
    await client.post("/join", data=join_form(email, postcode="NG1 5FS", subteams=["media"]))
    member_id = (await member_by_email(db, email))["id"]
    _, headers = await make_organiser(db, "region", EAST_MIDLANDS)
    given = await client.post(
        "/admin/roles",
        headers=headers,
        data={"member_id": member_id, "role": "constituency_rep", "scope_type": "group", "scope_id": NOTTINGHAM},
    )
    assert given.status_code == 303
    [granted] = await kafka.wait_for(lambda e: e.type == "RoleGranted" and e.data.get("member_id") == member_id)
    assert granted.data["role"] == "constituency_rep" and granted.data["scope_id"] == NOTTINGHAM
    outside = await client.post(
        "/admin/roles",
        headers=headers,
        data={"member_id": member_id, "role": "subteam_lead", "scope_type": "region", "scope_id": BIRMINGHAM},
    )
    assert outside.status_code == 422
    await poll(lambda: db.fetchval("SELECT count(*) = 1 FROM role_grants WHERE member_id = $1", member_id))


async def test_roles_are_given_from_the_members_page_and_listed_by_name_never_by_id(client, db):
    email = unique_email("named")
    await client.post("/join", data=join_form(email, name="Claudia Jones", postcode="NG1 5FS"))
    member_id = (await member_by_email(db, email))["id"]
    _, headers = await make_organiser(db, "region", EAST_MIDLANDS)
    details = await client.get(f"/members/{member_id}", headers=headers)
    assert f'href="/admin/roles?member={member_id}"' in details.text
    form = await client.get("/admin/roles", params={"member": member_id}, headers=headers)
    assert "To <strong>Claudia Jones</strong>" in form.text and 'id="member_id"' not in form.text
    given = await client.post("/admin/roles", headers=headers, data={
        "member_id": member_id, "role": "constituency_rep", "scope_type": "group", "scope_id": NOTTINGHAM})
    assert given.status_code == 303
    listed = await client.get("/admin/roles", headers=headers)
    row = next(r for r in listed.text.split("<tr>") if f"/members/{member_id}" in r)
    assert "Claudia Jones" in row and "the local group Nottingham" in row and f">{member_id}<" not in row


async def test_erasing_a_member_asks_first_and_only_network_organisers_may(client, db):
    email = unique_email("erase")
    await client.post("/join", data=join_form(email, name="Amy Ashwood", postcode="NG1 5FS"))
    member_id = (await member_by_email(db, email))["id"]
    _, network = await make_organiser(db)
    asked = await client.get(f"/members/{member_id}/erase", headers=network)
    assert asked.status_code == 200 and "Yes, erase Amy Ashwood" in asked.text and "cannot be undone" in asked.text
    _, regional = await make_organiser(db, "region", EAST_MIDLANDS)
    assert (await client.get(f"/members/{member_id}/erase", headers=regional)).status_code == 404
    assert await db.fetchval("SELECT status FROM members WHERE id = $1", member_id) != "erased"


async def test_api_keys_are_created_within_scope_shown_once_and_revoked(client, db):
    _, headers = await make_organiser(db, "region", BIRMINGHAM)
    created = await client.post(
        "/organisers/api-keys",
        headers=headers,
        data={"name": "Birmingham CRM sync", "scope_type": "region", "scope_id": BIRMINGHAM},
    )
    assert created.status_code == 201
    key = re.search(r'<code id="new-api-key">([^<]+)</code>', created.text).group(1)
    caller = auth.verify(launcher.secret_key(), key, auth.OSDI_API)
    assert caller.scope_id == BIRMINGHAM and caller.key_id
    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", caller.key_id)
    assert row["name"] == "Birmingham CRM sync" and row["revoked_at"] is None
    listing = await client.get("/organisers/api-keys", headers=headers)
    assert "Birmingham CRM sync" in listing.text and key not in listing.text
    wider = await client.post(
        "/organisers/api-keys", headers=headers, data={"name": "Everything", "scope_type": "network", "scope_id": ""}
    )
    assert wider.status_code == 422
    # Its last use is recorded, to the minute: a sync calling again and again writes it once a minute, not each call.
    api = {"OSDI-API-Token": key}
    assert row["last_used_at"] is None
    assert (await client.get("/api/v2/people", headers=api)).status_code == 200
    first = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", caller.key_id)
    assert first is not None
    assert (await client.get("/api/v2/people", headers=api)).status_code == 200
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", caller.key_id) == first
    await db.execute("UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds' WHERE id = $1",
                     caller.key_id)
    assert (await client.get("/api/v2/people", headers=api)).status_code == 200
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", caller.key_id) > first
    assert (await client.post(f"/organisers/api-keys/{caller.key_id}/revoke", headers=headers)).status_code == 303
    assert await db.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1", caller.key_id)
    assert (await client.get("/api/v2/people", headers=api)).status_code == 401  # refused at once, whenever last used
    _, other = await make_organiser(db, "region", EAST_MIDLANDS)
    assert (await client.post(f"/organisers/api-keys/{caller.key_id}/revoke", headers=other)).status_code == 404
