"""Every email template renders with what its sender passes (StrictUndefined: a missing name fails)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notifications.meetings import format_when
from services.notifications.rendering import EmailRenderer

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
    "welcome": {
        "name": "Ada",
        "intro": ["Welcome!"],
        "group_name": "Northfield group",
        "meetings": [{"title": "Street stall", "when": "Sat 5 Dec, 11:00", "venue": "", "public_url": "http://x/m"}],
        "confirm_url": "http://x/join/confirm?token=t",
        **LINKS,
    },
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
    "rsvp_repeat": {"name": "Ada", "meeting": MEETING, "when": "w", "rsvp_url": "u", "status": "going", **LINKS},
    "action_repeat": {"name": "Ada", "done": "signed this petition", "ask_url": "http://x/campaigns/c/asks/a", **LINKS},
}


LETTERS = {
    "organiser_invitation": {
        "name": "Chris Holloway",
        "link": "http://x/set?token=t",
        "scope": "Ada's region",
        "expires": "1 December 2026",
    },
    "mp_letter": {
        "letter": "Dear Chris Holloway,\n\nPlease act.",
        "letter_paragraphs": [["Dear Chris Holloway,"], ["Please act."]],
        "sender_name": "Ada",
        "postcode": "NG7 2RD",
        "constituency": "Nottingham South",
    },
    "letter_confirmation": {
        "name": "Ada",
        "mp_name": "Chris Holloway",
        "constituency": "Nottingham South",
        "letter_subject": "Please act",
        "confirm_url": "http://x/campaigns/letters/t",
        "days": 7,
    },
    "mp_letter_copy": {
        "name": "Ada",
        "intro": ["Thank you for writing to Chris Holloway."],
        "letter": "Please act.",
        "letter_paragraphs": [["Please act."]],
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


def test_the_letter_to_an_mp_is_the_writers_own_with_its_paragraphs_and_line_breaks_in_both_parts():
    from services.notifications.wording import as_written, paragraph_lines

    written = "Dear Chris Holloway,\r\n\r\nFirst paragraph,\r\nits second line.  \r\n\r\nYours sincerely,\r\nAda"
    text, html = EmailRenderer("Midlands Network").render(
        "mp_letter", letter=as_written(written), letter_paragraphs=paragraph_lines(written), sender_name="Ada",
        postcode="NG7 2RD", constituency="Nottingham South",
    )  # fmt: skip
    assert text.startswith("Dear Chris Holloway,\n\nFirst paragraph,\nits second line.\n\nYours sincerely,\nAda\n")
    assert text.count("Dear") == 1 and text.count("Yours sincerely") == 1
    assert html.count("Dear") == 1 and html.count("Yours sincerely") == 1
    assert "<p>First paragraph,<br>its second line.</p>" in html and "<p>Yours sincerely,<br>Ada</p>" in html


def test_when_is_given_in_the_meetings_own_time_zone():
    summer = {**MEETING, "starts_at": datetime(2026, 7, 1, 17, tzinfo=UTC)}
    summer["ends_at"] = summer["starts_at"] + timedelta(hours=2)
    assert "18:00–20:00 (Europe/London)" in format_when(summer)


def test_the_announcement_stencil_fills_in_exactly_as_the_template_renders():
    """The fan-out renders the announcement once and fills in each member's name and links (fanout.py)."""
    from services.notifications.fanout import KIND, SLOTS

    renderer = EmailRenderer("Midlands Network")
    context = {k: v for k, v in CASES["announcement"].items() if k not in SLOTS}
    stencil = renderer.stencil(KIND, SLOTS, **context)
    for values in (
        {k: CASES["announcement"][k] for k in SLOTS},
        {"name": "Zoë <b>&'\"", "rsvp_url": "http://x/r?a=1&b=2", "preferences_url": "p", "unsubscribe_url": "u"},
    ):
        assert stencil.fill(**values) == renderer.render(KIND, **context, **values)
        assert stencil.matches(renderer, KIND, values, **context)


def test_the_message_written_directly_reads_as_email_message_builds_it():
    """Mailer.message_bytes writes text and HTML emails without email.message; a parser sees the same email."""
    import email.policy
    from email.parser import BytesParser

    from aiosmtplib.protocol import normalize_message_line_endings

    from services.notifications.mailer import Mailer, OutgoingEmail
    from shared.config import Settings

    mailer = Mailer(Settings())
    link = "http://localhost:8000/unsubscribe?token=" + "a" * 150
    cases = [
        OutgoingEmail(
            to="ada@example.org",
            subject="New: Spring planning, Tuesday 1 December 2026, 18:00–20:00 (Europe/London)",
            text="Dear Zoë,\n" + "word " * 100 + "\n.a line with a dot\n" + link + "\ntrailing space \n=_ x=3D",
            html="<p>" + "word " * 100 + "</p>\n<p>é</p>",
            headers={"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
            message_id="<d-1@groundswell.local>",
        ),
        OutgoingEmail(
            to="b@example.org", subject="Hi", text="plain only\nline 2\n\n", headers={"Reply-To": "Zoë <z@x.org>"}
        ),
        OutgoingEmail(to="b@example.org", subject="Hi", text="ascii\r\nx\ry", html="<b>x</b>"),
    ]
    parser = BytesParser(policy=email.policy.default)
    for case in cases:
        built = parser.parsebytes(normalize_message_line_endings(mailer.build(case).as_bytes()))
        direct = parser.parsebytes(normalize_message_line_endings(mailer.message_bytes(case)))
        assert not direct.defects and all(not part.defects for part in direct.walk())
        for header in ("From", "To", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post", "Reply-To"):
            assert str(built.get(header)) == str(direct.get(header)), header
        for kind in ("plain", "html"):
            a, b = built.get_body(preferencelist=(kind,)), direct.get_body(preferencelist=(kind,))
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert a.get_content_type() == b.get_content_type()
                assert a.get_content() == b.get_content()
    assert direct.get("Message-ID") is not None


@pytest.mark.parametrize(
    ("template", "context", "words"),
    [
        ("join_change", {"left": False}, "Someone joined"),
        ("join_change", {"left": True}, "bring you back"),
        ("confirm_rights", {"action": "download"}, "copy of everything"),
        ("confirm_rights", {"action": "erase"}, "erase everything"),
        ("data_ready", {"waiting_on": []}, "gathered from every part"),
        ("data_ready", {"waiting_on": ["events", "campaigns"]}, "events, campaigns had not answered in time"),
    ],
)
def test_links_a_member_confirms_render_with_the_link_and_when_it_ends(template, context, words):
    link = "http://x/join/changes?token=t"
    text, html = EmailRenderer("Midlands Network").render(
        template, name="Ada", link=link, expires="7 December 2026, 10:00 UTC", **context
    )
    for part in (text, html):
        assert "Ada" in part and link in part and "7 December 2026, 10:00 UTC" in part and words in part


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.org", "first.last+tag@example.org", "o'brien@sub.example.co.uk", "hello+bounce-1f2e@gs.localhost",
        "a..b@c.d", ".a@b.c", "Name <a@b.c>", "a@[192.0.2.1]", '"q r"@ex.org', "a b@c.d", "émile@ex.org",
        "a@b.c\r\nRSET",
    ],
)
def test_an_smtp_path_is_what_aiosmtplib_would_send(address):
    """The mailer's fast quoting of plain addresses for MAIL FROM and RCPT TO (smtp_path) gives what
    aiosmtplib's quote_address gives, and refuses what it refuses."""
    from aiosmtplib.email import quote_address

    from services.notifications.mailer import smtp_path

    try:
        expected: bytes | type[Exception] = quote_address(address).encode("ascii")
    except ValueError:
        expected = ValueError
    if expected is ValueError:
        with pytest.raises(ValueError):
            smtp_path(address)
    else:
        assert smtp_path(address) == expected
