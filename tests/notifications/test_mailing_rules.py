"""Mailings' rules without I/O: the audience form, what a mailing may say, and its Markdown as an email."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from services.notifications.domain import (
    MailingAudience,
    audience_name_errors,
    describe_audience,
    first_name_of,
    mailing_errors,
    mailing_is_due,
    parse_mailing_audience,
    trackable,
)
from services.notifications.mailings import Mailings
from services.notifications.markdown_email import BUTTON_STYLE, links_in, render_markdown
from services.notifications.rendering import EmailRenderer
from services.notifications.wording import EmailSettings


def test_an_audience_outside_the_writers_scope_is_refused_never_widened():
    audience, errors = parse_mailing_audience(["mine", "theirs"], [], [], "", [], allowed_units={"mine"})
    assert errors == {"unit_ids": "Choose places from the list: only those you organise"}
    _, errors = parse_mailing_audience([], [], [], "", ["theirs"], allowed_units={"mine"})
    assert "exclude_unit_ids" in errors


def test_an_audience_reads_back_as_it_was_saved():
    audience, errors = parse_mailing_audience(
        ["a", "a", " "], ["housing"], ["active"], "30", ["b"], allowed_units={"a", "b"}
    )
    assert not errors
    assert audience == MailingAudience(("a",), ("housing",), ("active",), 30, ("b",))
    assert MailingAudience.from_json(audience.as_json()) == audience


def test_joined_within_must_be_a_number_of_days():
    for typed in ("x", "0", "-3", "99999"):
        _, errors = parse_mailing_audience([], [], [], typed, [], allowed_units=set())
        assert "joined_within_days" in errors, typed


def test_a_mailing_needs_a_one_line_subject_and_a_body():
    assert set(mailing_errors("", "")) == {"subject", "body"}
    assert "subject" in mailing_errors("Two\nlines", "Hello")
    assert mailing_errors("News", "Hello") == {}


def test_a_scheduled_mailing_is_due_at_its_time_and_a_draft_never():
    now = datetime.now(UTC)
    assert mailing_is_due("scheduled", now - timedelta(seconds=1), now)
    assert not mailing_is_due("scheduled", now + timedelta(minutes=1), now)
    assert not mailing_is_due("draft", now - timedelta(days=1), now)
    assert mailing_is_due("sending", now, now)


def test_markdown_becomes_safe_html_and_a_matching_text_part():
    source = (
        "# Hello\n\nRead [the plan](https://example.org/plan). <script>alert(1)</script> "
        "[x](javascript:alert(1))\n\n[Sign now](https://example.org/sign)\n\n- one\n- two\n"
    )
    text, html = render_markdown(source, lambda url: f"https://r.example/{len(url)}")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript:' not in html
    assert "<h1>Hello</h1>" in html
    assert f'<a href="https://r.example/24" style="{BUTTON_STYLE}">Sign now</a>' in html
    assert "Read the plan <https://r.example/24>." in text
    assert "- one\n\n- two" in text
    assert links_in(source) == ["https://example.org/plan", "https://example.org/sign"]


def test_only_web_links_are_counted():
    assert trackable("https://example.org") and trackable("HTTP://example.org")
    assert not trackable("mailto:a@example.org") and not trackable("javascript:alert(1)")


def test_taking_part_filters_are_days_too():
    audience, errors = parse_mailing_audience(
        [], [], [], "", [], allowed_units=set(), took_part_within_days="30", quiet_for_days="90"
    )
    assert not errors and (audience.took_part_within_days, audience.quiet_for_days) == (30, 90)
    assert MailingAudience.from_json(audience.as_json()) == audience
    _, errors = parse_mailing_audience([], [], [], "", [], allowed_units=set(), quiet_for_days="soon")
    assert set(errors) == {"quiet_for_days"}


def test_a_saved_audience_needs_a_name_of_its_own_on_one_line():
    assert audience_name_errors("Leicester housing", taken=False) == {}
    assert "Enter a name" in audience_name_errors("  ", taken=False)["audience_name"]
    assert "one line" in audience_name_errors("Two\nlines", taken=False)["audience_name"]
    assert "one line" in audience_name_errors("x" * 101, taken=False)["audience_name"]
    assert "already" in audience_name_errors("Leicester housing", taken=True)["audience_name"]


def test_an_audience_in_words_names_its_places_and_says_everyone_when_nothing_is_chosen():
    names = {"g1": "Leicester", "s1": "Youth team"}
    assert describe_audience(MailingAudience(), names) == "Everyone you organise"
    words = describe_audience(
        MailingAudience(
            unit_ids=("g1",), interests=("housing",), levels=("volunteer",), quiet_for_days=90, exclude_unit_ids=("s1",)
        ),
        names,
    )
    assert words == (
        "In Leicester; interested in housing; at volunteer; not taken part for 90 days; leaving out Youth team"
    )


def test_a_mailing_rendered_once_a_batch_fills_in_exactly_as_each_members_email_renders():
    """Queuing a mailing renders its Markdown and template once a batch and fills in each member's first name
    (wherever the writer put {first_name}) and footer links (mailings.py); the result is the email rendered for
    that member alone, text and HTML, whatever their name holds."""

    def footer(member_id: str) -> dict[str, str]:
        return {"preferences_url": f"http://x/p?m={member_id}&a=1", "unsubscribe_url": f"http://x/u?m={member_id}"}

    service = SimpleNamespace(uows=None, settings=None, renderer=EmailRenderer("Midlands Network"), footer=footer)
    mailings = Mailings(service)  # type: ignore[arg-type]
    mailing = SimpleNamespace(
        body="# Hello {first_name}\n\nRead [our plan, {first_name}](https://example.org/plan).\n\n"
        "**{first_name}**, join us: https://example.org/join"
    )
    links = {"https://example.org/plan": "http://x/r/1?a=1&b=2", "https://example.org/join": "http://x/r/2"}
    wording = {**EmailSettings("Midlands Network").defaults, "sign_off": "Solidarity,\n{network_name}"}
    stencil = mailings.stencil(mailing, wording, links)
    for member_id, name in (("m-1", "Ada Lovelace"), ("m-2", "Zoë <b>&'\" Smith"), ("m-3", None)):
        values = {"first_name": first_name_of(name), **footer(member_id)}
        assert stencil.fill(**values) == mailings.render(mailing, wording, member_id, name, links)
    text, html = stencil.fill(first_name="Zoë <b>", **footer("m-2"))
    assert "Hello Zoë <b>" in text and "Hello Zoë &lt;b&gt;" in html and "http://x/p?m=m-2&amp;a=1" in html
