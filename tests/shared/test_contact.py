"""The one rule for email addresses, postcodes and names (shared/contact.py), without a running system.

Membership and events used to space a postcode by cutting three characters off whatever was typed, so a
partial code became nonsense (`B15 2` → `B 152`); campaigns keeps partial codes, which its MP dataset keys
by. Every service now follows campaigns' rule; full postcodes come out the same as before.
"""

from __future__ import annotations

import pytest

from shared.contact import (
    MAX_EMAIL,
    UK_POSTCODE_RE,
    collapse_spaces,
    is_email,
    normalise_email,
    normalise_postcode,
    person_problems,
)
from shared.errors import InvalidInput


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        ("b11aa", "B1 1AA"),
        (" B1  1AA ", "B1 1AA"),
        ("sw1a1aa", "SW1A 1AA"),
        ("EC1A 1BB", "EC1A 1BB"),
        ("m1\t1ae", "M1 1AE"),
    ],
)
def test_a_full_postcode_is_upper_cased_and_spaced_before_its_last_three_characters(
    typed: str, normalised: str
) -> None:
    assert normalise_postcode(typed) == normalised
    assert UK_POSTCODE_RE.match(normalised)


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        ("b15 2", "B15 2"),  # a sector: was `B 152` in membership and events
        ("b1 1", "B1 1"),  # was `B11`
        ("b15", "B15"),  # a district
        ("  b  ", "B"),  # an area
        ("abcdef", "ABCDEF"),  # not a postcode at all: left as typed, not spaced into `ABC DEF`
    ],
)
def test_a_partial_or_malformed_postcode_is_kept_as_typed_only_upper_cased(typed: str, normalised: str) -> None:
    assert normalise_postcode(typed) == normalised
    assert not UK_POSTCODE_RE.match(normalised)


def test_no_postcode_is_an_empty_one() -> None:
    assert normalise_postcode(None) == ""
    assert normalise_postcode("   ") == ""


def test_case_spaces_and_unicode_composition_do_not_make_a_different_email_address() -> None:
    assert normalise_email(" Ada@Example.ORG ") == "ada@example.org"
    assert normalise_email("Zoe\u0301@example.org") == normalise_email("zo\u00e9@example.org")
    assert normalise_email(None) == ""


def test_an_email_address_needs_an_at_a_dot_after_it_and_to_fit_its_column() -> None:
    assert is_email("ada@example.org")
    assert not is_email("ada@example")
    assert not is_email("ada example@example.org")
    assert not is_email("")
    assert is_email("a@" + "b" * (MAX_EMAIL - 6) + ".org")
    assert not is_email("a@" + "b" * (MAX_EMAIL - 5) + ".org")


@pytest.mark.parametrize("address", ["=cmd|'/c calc'!a1@example.org", "+1+1@example.org", "-2+3@example.org"])
def test_an_email_address_built_to_run_as_a_spreadsheet_formula_is_refused(address: str) -> None:
    assert not is_email(address)
    assert is_email("ada+news@example.org") and is_email("ada-l@example.org")  # inside an address they are fine


def test_names_and_other_text_lose_surrounding_and_repeated_white_space() -> None:
    assert collapse_spaces("  Ada \t  Lovelace\n") == "Ada Lovelace"
    assert collapse_spaces(None) == ""


def test_a_person_is_told_every_problem_with_their_name_and_email_address_at_once() -> None:
    assert person_problems("", "") == {"name": "Enter your name", "email": "Enter your email address"}
    assert person_problems("x" * 121, "ada@") == {
        "name": "Name must be 120 characters or fewer",
        "email": "Enter an email address in the correct format, like name@example.org",
    }
    assert person_problems("Ada", "ada@example.org") == {}


def test_invalid_input_names_each_field_to_fix() -> None:
    problem = InvalidInput({"email": "Enter your email address", "postcode": "Enter your postcode"})
    assert problem.errors == {"email": "Enter your email address", "postcode": "Enter your postcode"}
    assert str(problem) == "email: Enter your email address; postcode: Enter your postcode"
