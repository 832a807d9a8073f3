"""Taking actions on the public pages: counted once per person, sealed personal data, joining in the same step,
and bad input refused with a clear message and nothing counted."""

from __future__ import annotations

import uuid

from services.campaigns.views import member_token
from shared import tokens
from shared.crypto import decode_key, unseal
from shared.events.envelope import Sealed
from tests.campaigns.conftest import SECRET, ask_of, ask_path, launch, of_type


def sign(**fields: str) -> dict[str, str]:
    return {"name": "Ada Lovelace", "email": f"ada-{uuid.uuid4().hex[:8]}@example.org", **fields}


async def count(client, campaign) -> dict[str, int]:
    return (await client.get(f"/campaigns/{campaign['id']}/counts.json")).json()["counts"]


async def test_a_non_member_signs_and_joins_in_one_step_with_their_details_sealed(client, organiser, kafka, db):
    campaign = await launch(client, organiser)
    petition = ask_of(campaign, "petition")
    form = sign(comment="My mother waited too long.", join_network="yes", postcode="b11aa")
    response = await client.post(ask_path(campaign, "petition"), data=form)
    assert response.status_code == 303 and response.headers["location"].endswith("/thanks")
    action = (await kafka.wait_for(of_type("ActionTaken", ask_id=petition["id"])))[0]
    assert action.data["join_network"] is True and action.data["email_consent"] is True
    assert action.data["member_id"] is None and action.subject_id == petition["id"]
    key_event = (await kafka.wait_for(of_type("ActionKeyIssued", key_id=action.data["action_id"])))[0]
    key = decode_key(key_event.data["key"])
    sealed = {name: Sealed(**action.data[name]) for name in ("email", "name", "postcode")}
    assert {k: v.key_owner for k, v in sealed.items()} == dict.fromkeys(sealed, "campaigns")
    assert unseal(sealed["email"], key) == form["email"]
    assert unseal(sealed["name"], key) == "Ada Lovelace" and unseal(sealed["postcode"], key) == "B1 1AA"
    assert form["email"] not in str(action.data) and "My mother" not in str(action.data)  # no plaintext, no comment
    row = await db.fetchrow("SELECT name, comment, join_network FROM actions WHERE id = $1", action.data["action_id"])
    assert dict(row) == {"name": "Ada Lovelace", "comment": "My mother waited too long.", "join_network": True}
    assert (await count(client, campaign))[petition["id"]] == 1


async def test_signing_twice_is_counted_once_and_the_second_time_answers_like_the_first(client, organiser, kafka):
    campaign = await launch(client, organiser)
    petition = ask_of(campaign, "petition")
    email = f"twice-{uuid.uuid4().hex[:8]}@example.org"
    first = await client.post(ask_path(campaign, "petition"), data=sign(email=email))
    second = await client.post(ask_path(campaign, "petition"), data=sign(email=f"  {email.upper()} "))
    assert first.headers["location"].endswith("/thanks")
    assert (second.status_code, second.headers["location"]) == (first.status_code, first.headers["location"])
    thanks = await client.get(second.headers["location"])
    assert "before" not in thanks.text and "counted once" in thanks.text
    [taken] = await kafka.wait_for(of_type("ActionTaken", ask_id=petition["id"]))
    [repeated] = await kafka.wait_for(of_type("ActionRepeated", ask_id=petition["id"]))
    assert repeated.data["action_id"] == taken.data["action_id"] and email not in str(repeated.data)
    member = member_token(SECRET, str(uuid.uuid4()))  # a member from an email link: counted once too
    for _ in range(2):
        await client.post(ask_path(campaign, "petition"), data={"member": member})
    await kafka.wait_for(of_type("ActionTaken", ask_id=petition["id"]), count=2)
    assert (await count(client, campaign))[petition["id"]] == 2
    assert len(kafka.envelopes(of_type("ActionTaken", ask_id=petition["id"]))) == 2


async def test_an_empty_or_over_long_pledge_is_refused_and_nothing_counted(client, organiser, kafka, db):
    campaign = await launch(client, organiser)
    pledge = ask_of(campaign, "pledge")
    empty = await client.post(ask_path(campaign, "pledge"), data=sign(pledge_text="   "))
    assert empty.status_code == 422
    assert "Write your pledge in your own words" in empty.text and 'aria-invalid="true"' in empty.text
    long_text = "I pledge " + "to act " * 200
    too_long = await client.post(ask_path(campaign, "pledge"), data=sign(pledge_text=long_text))
    assert too_long.status_code == 422
    assert f"Your pledge must be 1,000 characters or fewer (it has {len(long_text.strip()):,})" in too_long.text
    assert long_text.strip() in too_long.text  # what they wrote is kept for them to shorten
    assert await db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1", pledge["id"]) == 0
    assert (await count(client, campaign)).get(pledge["id"], 0) == 0
    assert kafka.envelopes(of_type("ActionTaken", ask_id=pledge["id"])) == []


async def test_a_pledge_is_shown_publicly_only_after_moderation(client, organiser, kafka):
    campaign = await launch(client, organiser)
    pledge = ask_of(campaign, "pledge")
    words = f"I pledge to challenge racist remarks at work {uuid.uuid4().hex[:6]}"
    response = await client.post(ask_path(campaign, "pledge"), data=sign(name="Grace Hopper", pledge_text=words))
    assert response.status_code == 303
    await kafka.wait_for(of_type("ActionTaken", ask_id=pledge["id"]))  # counted when made
    assert words not in (await client.get(ask_path(campaign, "pledge"))).text
    queue = (await client.get("/campaigns/api/pledges", headers=organiser)).json()["pledges"]
    mine = next(p for p in queue if p["pledge_text"] == words)
    decided = await client.post(f"/campaigns/api/pledges/{mine['id']}", json={"decision": "approved"},
                                headers=organiser)
    assert decided.json() == {"id": mine["id"], "moderation": "approved"}
    page = (await client.get(ask_path(campaign, "pledge"))).text
    assert words in page and "– Grace" in page and "Hopper" not in page  # first name only


async def test_a_postcode_with_no_constituency_gets_a_clear_message_and_nothing_is_sent(client, organiser, kafka, db):
    campaign = await launch(client, organiser)
    letter = ask_of(campaign, "write_to_mp")
    response = await client.post(ask_path(campaign, "write_to_mp"), data=sign(postcode="SW1A 1AA", step="find"))
    assert response.status_code == 422
    assert "We could not find a constituency for the postcode SW1A 1AA" in response.text
    direct = await client.post(ask_path(campaign, "write_to_mp"), data=sign(
        postcode="SW1A 1AA", step="send", letter_subject="Hello", letter_body="Please act."))
    assert direct.status_code == 422 and "could not find a constituency" in direct.text
    assert await db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1", letter["id"]) == 0
    assert kafka.envelopes(lambda e: e.data.get("ask_id") == letter["id"] and e.type != "AskPublished") == []


async def test_a_letter_waits_for_its_writers_confirmation_then_is_published_once(client, organiser, kafka, db):
    campaign = await launch(client, organiser)
    letter = ask_of(campaign, "write_to_mp")
    form = sign(postcode="NG7 2RD", step="send", letter_subject="Racism in healthcare",
                letter_body="Dear Chris Holloway,\n\nIn my own words: please act.\n\nAda")
    response = await client.post(ask_path(campaign, "write_to_mp"), data=form)
    assert response.status_code == 303
    [waiting] = await kafka.wait_for(of_type("MpLetterAwaitingConfirmation", ask_id=letter["id"]))
    key = decode_key((await kafka.wait_for(of_type("ActionKeyIssued", key_id=waiting.data["action_id"])))[0]
                     .data["key"])
    assert unseal(Sealed(**waiting.data["sender_email"]), key) == form["email"]
    assert waiting.data["mp_name"] == "Chris Holloway" and form["email"] not in str(waiting.data)
    assert (await count(client, campaign)).get(letter["id"], 0) == 0  # not counted before it is confirmed
    again = await client.post(ask_path(campaign, "write_to_mp"), data=form)  # before confirming: the link again
    assert again.headers["location"] == response.headers["location"]
    await kafka.wait_for(of_type("MpLetterAwaitingConfirmation", ask_id=letter["id"]), count=2)
    assert kafka.envelopes(of_type("MpLetterRequested", ask_id=letter["id"])) == []

    link = f"/campaigns/letters/{tokens.sign(SECRET, tokens.CONFIRM_LETTER, {'a': waiting.data['action_id']})}"
    shown = await client.get(link)
    assert shown.status_code == 200 and "In my own words: please act." in shown.text
    assert await db.fetchval("SELECT letter_confirmed_at FROM actions WHERE id = $1", waiting.data["action_id"]) is None
    assert (await client.post(link)).status_code == 200
    requested = (await kafka.wait_for(of_type("MpLetterRequested", ask_id=letter["id"])))[0]
    data = requested.data
    assert (data["constituency_name"], data["mp_name"], data["mp_email"]) == (
        "Nottingham South", "Chris Holloway", "chris.holloway.mp@parliament.example")
    assert requested.subject_id == data["action_id"] and data["copy_to_sender"] is True
    key = decode_key((await kafka.wait_for(of_type("ActionKeyIssued", key_id=data["action_id"])))[0].data["key"])
    assert unseal(Sealed(**data["letter_body"]), key) == form["letter_body"]
    assert unseal(Sealed(**data["letter_subject"]), key) == "Racism in healthcare"
    assert unseal(Sealed(**data["sender_email"]), key) == form["email"]
    assert unseal(Sealed(**data["sender_postcode"]), key) == "NG7 2RD"
    taken = (await kafka.wait_for(of_type("ActionTaken", ask_id=letter["id"])))[0]
    assert taken.data["action_id"] == data["action_id"] and taken.data["kind"] == "write_to_mp"
    assert (await client.post(link)).status_code == 200  # confirming twice sends it once
    after = await client.post(ask_path(campaign, "write_to_mp"), data=form)  # and writing it again sends nothing
    assert after.headers["location"] == response.headers["location"]
    await kafka.wait_for(of_type("ActionRepeated", ask_id=letter["id"]))
    assert len(kafka.envelopes(of_type("MpLetterRequested", ask_id=letter["id"]))) == 1
    assert (await count(client, campaign))[letter["id"]] == 1


async def test_an_empty_letter_is_refused_and_kept_for_editing(client, organiser, db):
    campaign = await launch(client, organiser)
    letter = ask_of(campaign, "write_to_mp")
    response = await client.post(ask_path(campaign, "write_to_mp"), data=sign(
        postcode="B1 1AA", step="send", letter_subject="Racism in healthcare", letter_body=" "))
    assert response.status_code == 422 and "Write your letter" in response.text
    assert "Your MP is <strong>Amira Saleem</strong>" in response.text
    assert await db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1", letter["id"]) == 0


async def test_a_closed_campaign_takes_no_action_and_says_so(client, organiser, kafka, db):
    campaign = await launch(client, organiser)
    await client.post(f"/campaigns/api/campaigns/{campaign['id']}/close", headers=organiser)
    for kind, extra in (("petition", {}), ("pledge", {"pledge_text": "I pledge"}),
                        ("write_to_mp", {"postcode": "B1 1AA", "step": "find"})):
        response = await client.post(ask_path(campaign, kind), data=sign(**extra))
        assert response.status_code == 409, kind
        assert "This campaign has closed, so it is no longer taking actions" in response.text
    share = await client.post(ask_path(campaign, "share") + "/share", data={"channel": "email"})
    assert share.status_code == 409
    page = await client.get(ask_path(campaign, "petition"))
    assert "This campaign has closed" in page.text and 'name="email"' not in page.text  # no form to fill in
    assert await db.fetchval("SELECT count(*) FROM actions WHERE campaign_id = $1", campaign["id"]) == 0
    assert kafka.envelopes(of_type("ActionTaken", campaign_id=campaign["id"])) == []


async def test_a_bot_filling_the_hidden_field_sees_success_and_nothing_is_stored(client, organiser, kafka, db):
    campaign = await launch(client, organiser)
    response = await client.post(ask_path(campaign, "petition"), data=sign(website="http://spam.example"))
    assert response.status_code == 303 and response.headers["location"].endswith("/thanks")
    assert await db.fetchval("SELECT count(*) FROM actions WHERE campaign_id = $1", campaign["id"]) == 0
    page = await client.get(ask_path(campaign, "petition"))
    assert 'name="website"' in page.text and 'tabindex="-1"' in page.text


async def test_sharing_is_counted_and_sends_people_on(client, organiser, kafka):
    campaign = await launch(client, organiser)
    share = ask_of(campaign, "share")
    response = await client.post(ask_path(campaign, "share") + "/share", data={"channel": "whatsapp"})
    assert response.status_code == 303 and response.headers["location"].startswith("https://wa.me/?text=")
    assert campaign["id"] in response.headers["location"]
    taken = (await kafka.wait_for(of_type("ActionTaken", ask_id=share["id"])))[0]
    assert taken.data["kind"] == "share" and taken.data.get("email") is None
    unknown = await client.post(ask_path(campaign, "share") + "/share", data={"channel": "carrier-pigeon"})
    assert unknown.status_code == 303 and unknown.headers["location"] == ask_path(campaign, "share")
    assert (await count(client, campaign))[share["id"]] == 1


async def test_the_pages_show_live_counts_and_are_labelled(client, organiser):
    campaign = await launch(client, organiser)
    petition = ask_of(campaign, "petition")
    await client.post(ask_path(campaign, "petition"), data=sign())
    counts = await client.get(f"/campaigns/{campaign['id']}/counts.json")
    assert counts.headers["cache-control"] == "no-store" and counts.json()["counts"] == {petition["id"]: 1}
    page = (await client.get(ask_path(campaign, "petition"))).text
    assert f'data-count-for="{petition["id"]}">1<' in page and "counts.json" in page
    assert '<label for="name">Your name</label>' in page and '<label for="email">Email address</label>' in page
    assert '<progress max="1000" value="1"' in page
    listing = (await client.get("/campaigns")).text
    assert campaign["title"] in listing
