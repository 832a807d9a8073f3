"""A letter to an MP (MpLetterRequested from campaigns) is emailed to the MP with the writer as Reply-To,
and the writer gets a copy; once each, even when the event is delivered twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from shared.crypto import encode_key, new_key, seal
from shared.events.catalog import ActionKeyIssued, MpLetterRequested
from shared.events.envelope import Envelope
from tests.support.kafka import produce
from tests.support.people import unique_email


async def test_letter_goes_to_the_mp_with_reply_to_and_a_copy_to_the_writer(system, mail):
    action_id = str(uuid.uuid4())
    key = new_key()
    writer = unique_email("constituent")
    mp = unique_email("mp")

    def sealed(value: str):
        return seal(value, key, key_id=action_id, owner="campaigns")

    letter = MpLetterRequested(
        action_id=action_id,
        ask_id=str(uuid.uuid4()),
        campaign_id=str(uuid.uuid4()),
        constituency_code="E14000867",
        constituency_name="Nottingham South",
        mp_name="Chris Holloway",
        mp_email=mp,
        letter_subject=sealed("Racism in healthcare"),
        letter_body=sealed("In my own words: please act on the data.\n\nThank you."),
        sender_name=sealed("Ada Okafor"),
        sender_email=sealed(writer),
        sender_postcode=sealed("NG7 2RD"),
        requested_at=datetime.now(UTC),
    )
    envelope = Envelope.wrap(letter)
    # The letter arrives before its key (they travel on different topics): it waits for the key.
    await produce(letter.topic, envelope.to_bytes(), key=action_id.encode())
    await asyncio.sleep(1)
    issued = ActionKeyIssued(key_id=action_id, key=encode_key(key))
    await produce(issued.topic, Envelope.wrap(issued).to_bytes(), key=action_id.encode())
    await produce(letter.topic, envelope.to_bytes(), key=action_id.encode())  # and once more: still one each

    [to_mp] = await mail.wait_for(mp)
    assert to_mp["subject"] == "Racism in healthcare"
    assert to_mp["headers"]["Reply-To"] == writer
    # Exactly as its writer left it (they left out a greeting: none is added), then who sent it and from where.
    assert to_mp["text"].startswith("In my own words: please act on the data.\n\nThank you.\n\n--\n")
    assert "Dear" not in to_mp["text"] and "Ada Okafor" in to_mp["text"] and "NG7 2RD" in to_mp["text"]
    [copy] = await mail.wait_for(writer)
    assert copy["subject"] == "Your letter to Chris Holloway" and "please act on the data" in copy["text"]
    await asyncio.sleep(2)
    assert len(await mail.messages(mp)) == 1 and len(await mail.messages(writer)) == 1
