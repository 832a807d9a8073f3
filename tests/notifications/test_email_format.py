"""Every kind of email a person can cause arrives well formed: driven through the running system, read from the
SMTP catcher, parsed with Python's `email` package in its strict policy.

Each has From (the organisers' sender name and the sending address), To, a one-line Subject without stray
white space, Date, a Message-ID of its own on the sender's domain, MIME-Version, and a UTF-8 text part and
HTML part with the same words. The letter to an MP is exactly its writer's: one greeting, one sign-off, its
paragraphs in both parts.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime

from shared.config import Settings
from shared.events.catalog import MeetingReminderDue
from shared.events.envelope import Envelope
from shared.topics import EVENTS_MEETINGS
from tests.support.emails import LETTER, launch_campaign, strictly_parsed, take_action, write_to_mp
from tests.support.joins import join
from tests.support.kafka import produce
from tests.support.mail import MailCatcher
from tests.support.organisers import organiser_headers
from tests.support.people import unique_email

SENDING_ADDRESS = parseaddr(Settings().mail_from)[1]


def meeting_body() -> dict[str, object]:
    start = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)
    return {
        "title": f"Branch meeting {uuid.uuid4().hex[:6]}",
        "description": "Plan the petition hand-in.",
        "kind": "in_person",
        "scope_type": "group",
        "scope_id": str(uuid.uuid4()),  # a group nobody is in: no announcement emails
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(),
        "venue": "Quaker Meeting House, Coventry",
        "capacity": 1,
    }


def words(html: str) -> str:
    """What a reader sees of an HTML part: its text without tags, white space collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def check_well_formed(msg: EmailMessage, to: str) -> tuple[str, str]:
    """Assert the headers and parts every email must have; return its (text, html) parts."""
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
        assert len(msg.get_all(name, [])) == 1, name
        assert not msg[name].defects, (name, msg[name].defects)
    sender_name, sender = parseaddr(str(msg["From"]))
    assert sender == SENDING_ADDRESS and sender_name
    assert parseaddr(str(msg["To"]))[1] == to
    subject = str(msg["Subject"])
    assert subject == " ".join(subject.split()) and subject, repr(subject)
    sent = parsedate_to_datetime(str(msg["Date"]))
    assert sent.tzinfo is not None and abs(datetime.now(UTC) - sent) < timedelta(hours=1)
    message_id = str(msg["Message-ID"])
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", message_id) and message_id.endswith(f"@{sender.split('@')[1]}>")
    assert msg.get_content_type() in ("multipart/alternative", "multipart/mixed")
    text_part, html_part = msg.get_body(preferencelist=("plain",)), msg.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    for part in (text_part, html_part):
        assert part.get_content_charset() == "utf-8"
    text, html = (part.get_content().replace("\r\n", "\n") for part in (text_part, html_part))
    assert text.strip() and html.strip().startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    return text, html


async def test_every_email_a_person_can_cause_is_well_formed(gateway, mail: MailCatcher):
    kinds: dict[str, tuple[str, int]] = {}  # kind: (recipient, how many emails to them so far)

    joiner = unique_email("format-welcome")
    assert await join(gateway, joiner, name="Ada Okafor") == 303
    kinds["welcome"] = (joiner, 1)

    organiser = organiser_headers()
    created = await gateway.post("/meetings", json=meeting_body(), headers=organiser)
    assert created.status_code == 201, created.text
    meeting = created.json()
    going, waiting = unique_email("format-going"), unique_email("format-waiting")
    rsvps = {}
    for email, name in ((going, "Olive Morris"), (waiting, "Claudia Jones")):
        r = await gateway.post(
            f"/meetings/{meeting['id']}/rsvps", json={"name": name, "email": email}, headers=organiser
        )
        assert r.status_code == 201, r.text
        rsvps[email] = r.json()
        await mail.wait_for(email)  # the confirmation, then the waitlist notice, in this order
    kinds["rsvp_confirmation"] = (going, 1)
    kinds["rsvp_waitlisted"] = (waiting, 1)
    cancelled = await gateway.post(f"/meetings/{meeting['id']}/rsvps/{rsvps[going]['id']}/cancel", headers=organiser)
    assert cancelled.status_code == 200, cancelled.text
    await mail.wait_for(waiting, count=2)
    kinds["rsvp_promoted"] = (waiting, 2)
    reminder = MeetingReminderDue(
        meeting_id=meeting["id"], reminder_id=str(uuid.uuid4()), minutes_before=1440, starts_at=meeting["starts_at"]
    )
    await produce(EVENTS_MEETINGS, Envelope.wrap(reminder).to_bytes(), key=meeting["id"].encode())
    await mail.wait_for(waiting, count=3)
    kinds["reminder"] = (waiting, 3)
    later = (datetime.fromisoformat(meeting["starts_at"]) + timedelta(hours=1)).isoformat()
    changed = await gateway.patch(
        f"/meetings/{meeting['id']}",
        json={"starts_at": later, "ends_at": (datetime.fromisoformat(later) + timedelta(hours=2)).isoformat()},
        headers=organiser,
    )
    assert changed.status_code == 200, changed.text
    await mail.wait_for(waiting, count=4)
    kinds["meeting_changed"] = (waiting, 4)
    response = await gateway.post(
        f"/meetings/{meeting['id']}/cancel", json={"reason": "Venue flooded"}, headers=organiser
    )
    assert response.status_code == 200, response.text
    await mail.wait_for(waiting, count=5)
    kinds["meeting_cancelled"] = (waiting, 5)

    campaign = await launch_campaign(gateway)
    signer, pledger = unique_email("format-petition"), unique_email("format-pledge")
    await take_action(gateway, campaign, "petition", name="Ada Okafor", email=signer)
    await take_action(gateway, campaign, "pledge", name="Ada Okafor", email=pledger, pledge_text="I will speak up.")
    kinds["petition_signed"] = (signer, 1)
    kinds["pledge_received"] = (pledger, 1)

    writer, mp = unique_email("format-writer"), unique_email("format-mp")
    await write_to_mp(writer, mp)
    kinds["mp_letter"] = (mp, 1)
    kinds["mp_letter_copy"] = (writer, 1)

    seen_ids: set[str] = set()
    parsed: dict[str, tuple[EmailMessage, str, str]] = {}
    for kind, (to, nth) in kinds.items():
        messages = await mail.wait_for(to, count=nth, timeout=60)
        msg = await strictly_parsed(messages[nth - 1]["id"])
        text, html = check_well_formed(msg, to)
        seen_ids.add(str(msg["Message-ID"]))
        parsed[kind] = (msg, text, html)
    assert len(seen_ids) == len(kinds)  # a Message-ID of its own each

    assert str(parsed["rsvp_confirmation"][0]["Subject"]).startswith("You're going: Branch meeting")
    assert str(parsed["reminder"][0]["Subject"]).startswith("Reminder: ")
    assert str(parsed["meeting_cancelled"][0]["Subject"]).startswith("Cancelled: ")

    to_mp, text, html = parsed["mp_letter"]
    assert text.startswith(LETTER + "\n")  # exactly as written: its own greeting and sign-off, nothing before
    for part in (text, words(html)):
        assert part.count("Dear ") == 1 and part.count("Yours sincerely") == 1
    assert "<p>Dear Chris Holloway,</p>" in html
    assert "<p>In my own words: please act on the data,<br>and soon.</p>" in html
    assert "<p>Yours sincerely,<br>Ada Okafor</p>" in html
    assert str(to_mp["Reply-To"]) == writer
    _, copy_text, copy_html = parsed["mp_letter_copy"]
    assert LETTER in copy_text and "<p>In my own words: please act on the data,<br>and soon.</p>" in copy_html
