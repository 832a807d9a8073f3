"""An organiser's invitation (OrganiserInvited from membership) is emailed once, with its one-time link."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from shared.crypto import encode_key, new_key, seal
from shared.events.catalog import OrganiserInvited, SubjectKeyIssued
from shared.events.envelope import Envelope
from tests.support.kafka import produce
from tests.support.people import unique_email


async def test_invitation_email_carries_the_one_time_link(system, mail):
    organiser_id = str(uuid.uuid4())
    key = new_key()
    email = unique_email("invited")
    link = f"http://localhost:8000/organisers/set-password?token={uuid.uuid4().hex}"

    def sealed(value: str):
        return seal(value, key, key_id=organiser_id, owner="membership")

    issued = SubjectKeyIssued(key_id=organiser_id, key=encode_key(key))
    await produce(issued.topic, Envelope.wrap(issued).to_bytes(), key=organiser_id.encode())
    invited = OrganiserInvited(
        organiser_id=organiser_id,
        email=sealed(email),
        name=sealed("Darcus Howe"),
        scope_type="region",
        scope_id=str(uuid.uuid4()),
        set_password_url=sealed(link),
        expires_at=datetime.now(UTC) + timedelta(days=7),
    )
    envelope = Envelope.wrap(invited)
    for _ in range(2):
        await produce(invited.topic, envelope.to_bytes(), key=organiser_id.encode())

    [message] = await mail.wait_for(email)
    assert message["subject"].startswith("You're invited to organise")
    assert "Dear Darcus," in message["text"] and link in message["text"] and "a region" in message["text"]
    await asyncio.sleep(2)
    assert len(await mail.messages(email)) == 1
