"""Driving the running system to send each kind of email a person can cause, and reading an email as a strict
parser reads it."""

from __future__ import annotations

import asyncio
import email.policy
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import httpx

from deploy.local import launcher
from shared.crypto import encode_key, new_key, seal
from shared.events.catalog import ActionKeyIssued, MpLetterRequested
from shared.events.envelope import Envelope
from tests.support.kafka import produce
from tests.support.organisers import organiser_headers

LETTER = "Dear Chris Holloway,\n\nIn my own words: please act on the data,\nand soon.\n\nYours sincerely,\nAda Okafor"


async def launch_campaign(gateway: httpx.AsyncClient) -> dict[str, Any]:
    """A live campaign with a petition and a pledge, launched by a network organiser through the gateway."""
    body = {
        "title": f"Fair care {uuid.uuid4().hex[:8]}",
        "goal": "Equal care for everyone",
        "summary": "Racism harms patients and staff.",
        "issues": ["racism in healthcare"],
        "asks": [
            {"kind": "petition", "title": "Sign the petition", "addressee": "The Secretary of State for Health",
             "body": "Collect and publish the data, act on it."},
            {"kind": "pledge", "title": "Make a pledge", "body": "I pledge to speak up."},
        ],
    }  # fmt: skip
    response = await gateway.post("/campaigns/api/campaigns", json=body, headers=organiser_headers())
    assert response.status_code == 201, response.text
    return response.json()


async def take_action(gateway: httpx.AsyncClient, campaign: dict[str, Any], kind: str, **fields: str) -> None:
    """Sign the petition or make the pledge on the public page, as a person who is not a member."""
    ask = next(a for a in campaign["asks"] if a["kind"] == kind)
    response = await gateway.post(f"/campaigns/{campaign['id']}/asks/{ask['id']}", data=fields)
    assert response.status_code == 303, response.text


async def write_to_mp(writer: str, mp: str, campaign_id: str | None = None) -> None:
    """A letter to an MP as campaigns publishes it (with its key), for the running notifications service."""
    action_id, key = str(uuid.uuid4()), new_key()

    def sealed(value: str) -> Any:
        return seal(value, key, key_id=action_id, owner="campaigns")

    issued = ActionKeyIssued(key_id=action_id, key=encode_key(key))
    await produce(issued.topic, Envelope.wrap(issued).to_bytes(), key=action_id.encode())
    letter = MpLetterRequested(
        action_id=action_id, ask_id=str(uuid.uuid4()), campaign_id=campaign_id or str(uuid.uuid4()),
        constituency_code="E14000867", constituency_name="Nottingham South", mp_name="Chris Holloway",
        mp_email=mp, letter_subject=sealed("Racism in healthcare"), letter_body=sealed(LETTER),
        sender_name=sealed("Ada Okafor"), sender_email=sealed(writer), sender_postcode=sealed("NG7 2RD"),
        requested_at=datetime.now(UTC),
    )  # fmt: skip
    await produce(letter.topic, Envelope.wrap(letter).to_bytes(), key=action_id.encode())


async def raw(message_id: int) -> bytes:
    async with httpx.AsyncClient(base_url=launcher.SMTP_CATCHER_URL, timeout=30) as client:
        response = await client.get(f"/api/messages/{message_id}/raw")
        response.raise_for_status()
        return response.content


async def strictly_parsed(message_id: int) -> EmailMessage:
    """The caught message parsed with email.policy.strict (a defect raises), with CRLF line ends."""
    data = (await raw(message_id)).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    parsed = BytesParser(policy=email.policy.strict).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


async def settled(seconds: float = 2.0) -> None:
    await asyncio.sleep(seconds)
