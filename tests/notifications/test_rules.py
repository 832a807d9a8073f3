"""Notifications' rules (services/notifications/domain.py), without Kafka or a database: who gets which email."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifications.domain import (
    Audience,
    Readiness,
    announcement_audience,
    announcement_goes_ahead,
    arrivals_and_returns,
    audience_moves,
    changes_worth_an_email,
    first_name_of,
    follow_up_decision,
    is_announced,
    lifts_unsubscribe,
    mirror_status,
    readiness,
    rsvp_email_wanted,
    without_addresses,
)
from services.notifications.suppression import blocks

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


# A joiner's welcome -----------------------------------------------------------------------------------------


def test_a_joiner_whose_key_is_here_is_welcomed_now():
    assert readiness(has_key=True, destroyed=False, others_wait=False) is Readiness.NOW


def test_a_joiner_whose_key_has_not_arrived_waits_for_it():
    assert readiness(has_key=False, destroyed=False, others_wait=False) is Readiness.WAIT


def test_an_event_waits_behind_its_subjects_parked_events_even_with_the_key_here():
    assert readiness(has_key=True, destroyed=False, others_wait=True) is Readiness.WAIT


def test_an_erased_joiner_is_never_welcomed_whatever_else_is_true():
    for has_key in (True, False):
        for others_wait in (True, False):
            assert readiness(has_key=has_key, destroyed=True, others_wait=others_wait) is Readiness.DROP


def test_a_joiner_asked_to_confirm_is_pending_until_they_do():
    assert mirror_status(confirmation_required=True) == "pending"
    assert mirror_status(confirmation_required=False) == "confirmed"


def test_joining_again_with_consent_lifts_an_unsubscribe_of_that_address():
    assert lifts_unsubscribe(True, "ada@example.org")
    assert not lifts_unsubscribe(False, "ada@example.org")
    assert not lifts_unsubscribe(True, None)


def test_emails_greet_by_first_name_or_as_friend():
    assert first_name_of("Ada Lovelace") == "Ada"
    assert first_name_of(None) == "friend"
    assert first_name_of("") == "friend"


# Meeting announcements ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope_type", "expected"),
    [
        ("region", Audience("region_id", "u1")),
        ("group", Audience("group_ids", "u1")),
        ("subteam", Audience("subteam_ids", "u1")),
        ("network", Audience(None, None)),
    ],
)
def test_an_announcement_goes_to_the_members_of_the_meetings_scope(scope_type, expected):
    assert announcement_audience(scope_type, "u1") == expected
    assert expected.topic == "meetings"  # members who opted out of meeting emails are left out


def test_a_conferences_sessions_are_announced_with_the_conference_not_one_by_one():
    assert is_announced(None)
    assert not is_announced("conference-1")


def test_a_meeting_moved_to_another_part_of_the_network_is_announced_again_and_other_changes_are_not():
    assert audience_moves(["venue", "scope_id"]) and audience_moves(["scope_type"])
    assert not audience_moves(["title", "starts_at", "capacity"])


def test_a_cancelled_or_started_meeting_is_no_longer_announced():
    later = NOW + timedelta(days=3)
    assert announcement_goes_ahead("scheduled", later, NOW)
    assert not announcement_goes_ahead("cancelled", later, NOW)
    assert not announcement_goes_ahead("scheduled", NOW - timedelta(minutes=1), NOW)


# Emails about RSVPs ---------------------------------------------------------------------------------------


def test_only_changes_of_when_where_and_what_are_worth_an_email():
    assert changes_worth_an_email(["venue", "capacity", "starts_at"]) == ["starts_at", "venue"]
    assert changes_worth_an_email(["capacity", "description"]) == []


def test_no_email_about_a_meeting_that_is_over_except_its_cancellation():
    over = NOW - timedelta(hours=1)
    assert not rsvp_email_wanted("reminder", over, NOW, NOW)
    assert rsvp_email_wanted("meeting_cancelled", over, NOW, NOW)


def test_no_email_from_an_old_event_met_late():
    ahead = NOW + timedelta(days=5)
    assert rsvp_email_wanted("rsvp_confirmation", ahead, NOW - timedelta(days=1), NOW)
    assert not rsvp_email_wanted("rsvp_confirmation", ahead, NOW - timedelta(days=3), NOW)


# Follow-ups -----------------------------------------------------------------------------------------------


@dataclass
class Member:
    email: str | None = "ada@example.org"
    status: str = "confirmed"
    email_consent: bool = True
    email_topics: Any = None


def decide(**overrides: Any) -> tuple[str, str | None]:
    state: dict[str, Any] = {
        "step_enabled": True,
        "took_part": False,
        "recipient": Member(),
        "suppressed": False,
        "due_at": NOW - timedelta(hours=1),
        "now": NOW,
    }
    return follow_up_decision(**(state | overrides))


def test_a_confirmed_consenting_member_who_has_not_taken_part_gets_the_step():
    assert decide() == ("queued", None)


def test_a_member_who_took_part_is_not_followed_up():
    assert decide(took_part=True) == ("skipped", "already took part")


def test_a_step_switched_off_or_deleted_sends_nothing():
    assert decide(step_enabled=False) == ("skipped", "step switched off")
    assert decide(step_enabled=None) == ("skipped", "step switched off")


def test_a_member_not_confirmed_yet_is_looked_at_again_until_a_week_after_the_step_was_due():
    pending = Member(status="pending")
    assert decide(recipient=pending) == ("due", "waiting for confirmation")
    assert decide(recipient=pending, due_at=NOW - timedelta(days=8)) == ("skipped", "never confirmed")


def test_a_member_not_mirrored_yet_is_waited_for_then_given_up():
    assert decide(recipient=None) == ("due", "waiting for the member's details")
    assert decide(recipient=Member(email=None), due_at=NOW - timedelta(days=8)) == ("skipped", "no address")


def test_members_who_left_withdrew_consent_opted_out_or_are_suppressed_are_skipped():
    assert decide(recipient=Member(status="left")) == ("skipped", "member left")
    assert decide(recipient=Member(email_consent=False)) == ("skipped", "no consent to email")
    assert decide(recipient=Member(email_topics=["meetings"])) == ("skipped", "opted out of follow-ups")
    assert decide(recipient=Member(email_topics=["follow_ups"])) == ("queued", None)
    assert decide(suppressed=True) == ("skipped", "address suppressed")


def test_a_left_address_gets_only_the_confirmation_of_a_join_that_would_bring_it_back_and_its_rights_links():
    assert not blocks("left", "join_change")
    # Access and erasure outlive membership: the links a leaver asks for from their own link still reach them.
    assert not any(blocks("left", kind) for kind in ("confirm_download", "confirm_erase", "data_download"))
    assert blocks("left", "welcome") and blocks("left", "announcement") and blocks("erased", "confirm_erase")
    assert blocks("erased", "join_change") and blocks("hard_bounces", "join_change")
    assert not blocks("unsubscribed", "join_change") and not blocks(None, "join_change")


def test_a_welcome_lists_the_soonest_meetings_of_the_members_groups_region_and_network():
    from types import SimpleNamespace

    from services.notifications.domain import meetings_near

    def meeting(scope_type: str, scope_id: str | None) -> SimpleNamespace:
        return SimpleNamespace(scope_type=scope_type, scope_id=scope_id)

    soonest_first = [
        meeting("group", "other-group"),
        mine_group := meeting("group", "g1"),
        meeting("region", "other-region"),
        network := meeting("network", None),
        mine_region := meeting("region", "r1"),
        mine_team := meeting("subteam", "t1"),
    ]
    assert meetings_near(soonest_first, region_id="r1", group_ids=["g1"], subteam_ids=["t1"]) == [
        mine_group, network, mine_region
    ]
    assert meetings_near(soonest_first, region_id="r1", group_ids=["g1"], subteam_ids=["t1"], limit=9)[-1] is mine_team
    assert meetings_near(soonest_first, region_id=None, group_ids=[], subteam_ids=[]) == [network]


@pytest.mark.parametrize(
    ("error", "kept"),
    [
        ("550 5.1.1 <ada.lovelace@example.org>: Recipient address rejected", "550 5.1.1 <address>: Recipient address"),
        ("bounced: 5.1.1 smtp; 550 no mailbox here for ada+news@example.org", "no mailbox here for <address>"),
        ("421 4.7.0 try again later", "421 4.7.0 try again later"),
    ],
)
def test_smtp_errors_are_kept_without_the_addresses_relays_echo(error, kept):
    assert kept in without_addresses(error) and "@" not in without_addresses(error)


def test_a_member_is_new_once_and_coming_back_moves_their_first_arrival():
    def row(member: str, region: str) -> dict[str, Any]:
        return {"subject_id": member, "region_id": region}

    run = [row("ada", "west"), row("bo", "west"), row("ada", "east"), row("cy", "east")]
    arrivals, returns = arrivals_and_returns(run, known={"cy"})
    assert arrivals == [row("ada", "west"), row("bo", "west")]  # new to the log: each once
    assert returns == [row("ada", "east"), row("cy", "east")]  # back (or seen before): their row moves, no new one
