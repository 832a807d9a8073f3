"""Every email template renders with what its sender passes (StrictUndefined: a missing name fails)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notifications.meetings import format_when
from services.notifications.service import EmailRenderer

MEETING = {
    "meeting_id": "m-1",
    "title": "Spring planning",
    "description": "Plan the petition hand-in.",
    "starts_at": datetime(2026, 12, 1, 18, tzinfo=UTC),
    "ends_at": datetime(2026, 12, 1, 20, tzinfo=UTC),
    "timezone": "Europe/London",
    "venue": "Quaker Meeting House",
    "public_url": "http://localhost:8000/events/m-1",
}
LINKS = {"preferences_url": "http://x/preferences?token=t", "unsubscribe_url": "http://x/unsubscribe?token=t"}
CASES = {
    "welcome": {"name": "Ada", "confirm_url": "http://x/join/confirm?token=t", **LINKS},
    "announcement": {
        "name": "Ada",
        "meeting": MEETING,
        "when": format_when(MEETING),
        "rsvp_url": "http://x/r",
        **LINKS,
    },
    "rsvp_confirmation": {"name": "Ada", "meeting": MEETING, "when": "w", "rsvp_url": "u", "position": None, **LINKS},
    "rsvp_waitlisted": {"name": "Ada", "meeting": MEETING, "when": "w", "rsvp_url": "u", "position": 3, **LINKS},
    "rsvp_promoted": {"name": "Ada", "meeting": MEETING, "when": "w", "rsvp_url": "u", **LINKS},
    "reminder": {"name": "Ada", "meeting": MEETING, "when": "w", "rsvp_url": "u", "soon": "tomorrow", **LINKS},
    "meeting_changed": {
        "name": "Ada",
        "meeting": MEETING,
        "when": "w",
        "rsvp_url": "u",
        "changed": ["starts_at"],
        **LINKS,
    },
    "meeting_cancelled": {"name": "Ada", "meeting": MEETING, "when": "w", "rsvp_url": "u", "reason": "Flood", **LINKS},
}


LETTERS = {
    "organiser_invitation": {
        "name": "Chris Holloway",
        "link": "http://x/set?token=t",
        "scope": "Ada's region",
        "expires": "1 December 2026",
    },
    "mp_letter": {
        "mp_name": "Chris Holloway",
        "body": "Please act.",
        "sender_name": "Ada",
        "postcode": "NG7 2RD",
        "constituency": "Nottingham South",
    },
    "mp_letter_copy": {
        "name": "Ada",
        "mp_name": "Chris Holloway",
        "letter": "Please act.",
        "constituency": "Nottingham South",
    },
}


@pytest.mark.parametrize("template", sorted(LETTERS))
def test_letter_templates_render(template):
    text, html = EmailRenderer("Midlands Network").render(template, **LETTERS[template])
    assert "Chris Holloway" in text and "Ada" in html


@pytest.mark.parametrize("template", sorted(CASES))
def test_template_renders_text_and_html_with_the_unsubscribe_footer(template):
    text, html = EmailRenderer("Midlands Network").render(template, **CASES[template])
    assert "Ada" in text and "Ada" in html
    assert "Unsubscribe" in html and CASES[template]["unsubscribe_url"] in text


def test_when_is_given_in_the_meetings_own_time_zone():
    summer = {**MEETING, "starts_at": datetime(2026, 7, 1, 17, tzinfo=UTC)}
    summer["ends_at"] = summer["starts_at"] + timedelta(hours=2)
    assert "18:00–20:00 (Europe/London)" in format_when(summer)
