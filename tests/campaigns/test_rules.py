"""The campaigns service's rules on their own (services/campaigns/domain.py): no Kafka, no database.

Which level a member reaches and when that is announced, which asks a campaign takes, which actions an ask takes
and what they announce. The end-to-end tests beside these check the same rules through the running service.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.campaigns.domain import (
    DEFAULT_LADDER,
    ActionRefused,
    Ask,
    AskPlan,
    Constituency,
    InvalidInput,
    NoConstituency,
    Standing,
    accept_action,
    assess,
    attend_action_id,
    attend_ask_for,
    check_new_ask,
    check_publish,
    repeat_events,
    validate_action,
    validate_ask,
    validate_ladder,
)
from shared.crypto import new_key, unseal
from shared.events import catalog as ev

NOW = datetime(2027, 3, 4, 18, 30, tzinfo=UTC)
SECRET = "rules-test-secret"
MP = Constituency("E14000564", "Birmingham, Ladywood", "A. Member", "Labour", "mp@parliament.example")


# The engagement ladder --------------------------------------------------------------------------------------
def test_a_new_member_starts_at_the_bottom_of_the_ladder_without_an_announcement():
    outcome = assess(Standing("m1", None), actions=0, attended=0, ladder=DEFAULT_LADDER)
    assert (outcome.level, outcome.level_changed, outcome.event) == ("supporter", True, None)


def test_a_first_action_makes_a_supporter_a_participant_and_says_why():
    outcome = assess(Standing("m1", "supporter"), actions=1, attended=0, ladder=DEFAULT_LADDER)
    assert outcome.event == ev.EngagementLevelChanged(member_id="m1", level="participant",
                                                      previous_level="supporter",
                                                      reason="1 action, 0 meetings attended")


def test_a_member_who_joined_after_acting_is_announced_at_their_level_straight_away():
    outcome = assess(Standing("m1", None), actions=1, attended=0, ladder=DEFAULT_LADDER)
    assert outcome.event is not None and (outcome.event.level, outcome.event.previous_level) == ("participant", None)


def test_activist_needs_both_actions_and_a_meeting():
    standing = Standing("m1", "participant", actions=2, attended=0)
    assert assess(standing, actions=3, attended=0, ladder=DEFAULT_LADDER).level == "participant"
    assert assess(standing, actions=3, attended=1, ladder=DEFAULT_LADDER).level == "activist"


def test_a_role_reaches_its_level_whatever_the_counts_with_the_given_reason():
    outcome = assess(Standing("m1", "supporter", roles=("subteam_lead",)), actions=0, attended=0,
                     ladder=DEFAULT_LADDER, reason="became subteam lead")
    assert outcome.event is not None
    assert (outcome.event.level, outcome.event.reason) == ("organiser", "became subteam lead")


def test_more_facts_at_the_same_level_change_the_counts_and_announce_nothing():
    outcome = assess(Standing("m1", "participant", actions=1), actions=2, attended=0, ladder=DEFAULT_LADDER)
    assert (outcome.level_changed, outcome.counts_changed, outcome.event) == (False, True, None)


# Asks ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "field"), [
    ({"kind": "petition", "body": "Act now"}, "addressee"),
    ({"kind": "petition", "addressee": "The Minister"}, "body"),
    ({"kind": "pledge"}, "body"),
    ({"kind": "write_to_mp", "body": "Dear {mp_name}"}, "letter_subject"),
    ({"kind": "attend"}, "meeting_id"),
    ({"kind": "share", "share_url": "javascript:alert(1)"}, "share_url"),
    ({"kind": "march"}, "kind"),
])
def test_each_kind_of_ask_needs_its_own_fields(raw, field):
    with pytest.raises(InvalidInput) as refused:
        validate_ask(raw)
    assert field in refused.value.errors


def test_a_closed_campaign_takes_no_new_ask():
    with pytest.raises(InvalidInput, match="has closed"):
        check_new_ask(AskPlan("pledge", "Pledge", body="I pledge"), campaign_status="closed", meeting_known=True)


def test_an_attend_ask_needs_a_meeting_the_service_knows_of():
    plan = AskPlan("attend", "Come", meeting_id="m1")
    with pytest.raises(InvalidInput) as refused:
        check_new_ask(plan, campaign_status="live", meeting_known=False)
    assert "meeting_id" in refused.value.errors
    check_new_ask(plan, campaign_status="live", meeting_known=True)


def test_a_meeting_for_a_live_campaign_becomes_its_attend_ask_once():
    plan = attend_ask_for(meeting_id="m1", title="Planning night", campaign_status="live", linked=False)
    assert plan == AskPlan(kind="attend", title="Come to Planning night", meeting_id="m1")
    assert attend_ask_for(meeting_id="m1", title="x", campaign_status="live", linked=True) is None
    assert attend_ask_for(meeting_id="m1", title="x", campaign_status="closed", linked=False) is None
    assert attend_ask_for(meeting_id="m1", title="x", campaign_status=None, linked=False) is None


def test_a_draft_is_published_once_and_only_with_something_to_do():
    with pytest.raises(InvalidInput) as refused:
        check_publish(campaign_status="draft", asks=0)
    assert "asks" in refused.value.errors
    assert check_publish(campaign_status="draft", asks=1) is True
    assert check_publish(campaign_status="live", asks=1) is False
    assert check_publish(campaign_status="closed", asks=3) is False


# Actions ------------------------------------------------------------------------------------------------------
def _ask(kind: str, **overrides: str) -> Ask:
    return Ask(**{"id": "ask-1", "campaign_id": "c-1", "kind": kind, **overrides})


def _accept(ask: Ask, form, constituency: Constituency | None = None, **overrides):
    return accept_action(ask, form, **{"action_id": str(uuid.uuid4()), "constituency": constituency,
                                       "region_id": None, "group_id": None, "source": "form",
                                       "secret_key": SECRET, "now": NOW, **overrides})


def _signature(**fields: str):
    return validate_action("petition", name=fields.get("name", "Ada Lovelace"),
                           email=fields.get("email", "ada@example.org"), postcode=fields.get("postcode", ""),
                           join_network=bool(fields.get("postcode")))


@pytest.mark.parametrize(("ask", "why"), [
    (_ask("petition", campaign_status="closed"), "campaign has closed"),
    (_ask("petition", status="closed"), "action has closed"),
    (_ask("petition", campaign_status="draft"), "not open yet"),
    (_ask("attend"), "RSVP on the meeting's own page"),
])
def test_an_ask_refuses_actions_when_closed_and_for_meetings(ask, why):
    with pytest.raises(ActionRefused, match=why):
        _accept(ask, _signature())


def test_a_letter_needs_an_mp_with_an_email_address():
    form = validate_action("write_to_mp", name="Ada", email="ada@example.org", postcode="B1 1AA",
                           letter_subject="Care", letter_body="Dear MP")
    with pytest.raises(NoConstituency, match="could not find a constituency for the postcode B1 1AA"):
        _accept(_ask("write_to_mp"), form, None)
    with pytest.raises(NoConstituency, match="no email address for the MP"):
        _accept(_ask("write_to_mp"), form, Constituency("X", "Nowhere", "B. Member", "", ""))


def test_the_same_email_address_is_the_same_person_and_a_share_is_anyone():
    first = _accept(_ask("petition"), _signature(email="Ada@Example.org"))
    again = _accept(_ask("petition"), _signature(email="ada@example.org "))
    assert first.person_ref == again.person_ref and first.person_ref.startswith("email:")
    assert "ada" not in first.person_ref
    assert _accept(_ask("share"), validate_action("share", channel="email")).person_ref is None


def test_a_pledge_waits_for_moderation():
    form = validate_action("pledge", name="Ada", email="ada@example.org", pledge_text="I pledge to speak up")
    assert _accept(_ask("pledge"), form).row()["moderation"] == "pending"


def test_an_action_announces_the_persons_fields_sealed_with_its_own_new_key():
    key = new_key()
    action = _accept(_ask("petition"), _signature(postcode="B1 1AA"))
    issued, taken = action.events(key, key_issued=True)
    assert isinstance(issued, ev.ActionKeyIssued) and issued.key_id == action.id
    assert isinstance(taken, ev.ActionTaken) and taken.join_network
    assert unseal(taken.email, key) == "ada@example.org"
    assert unseal(taken.postcode, key) == "B1 1AA"


def test_a_member_acting_through_their_link_gives_nothing_to_seal():
    action = _accept(_ask("petition"), validate_action("petition", member_id="m1"))
    assert not action.needs_key
    [taken] = action.events()
    assert isinstance(taken, ev.ActionTaken) and taken.member_id == "m1" and taken.email is None


def test_a_letter_to_an_mp_is_announced_for_notifications_to_send():
    key = new_key()
    form = validate_action("write_to_mp", name="Ada", email="ada@example.org", postcode="b11aa",
                           letter_subject="Care", letter_body="Dear MP")
    action = _accept(_ask("write_to_mp"), form, MP)
    assert action.row()["constituency_code"] == MP.code
    [_taken, letter] = action.events(key)
    assert isinstance(letter, ev.MpLetterRequested)
    assert (letter.mp_email, unseal(letter.sender_postcode, key)) == (MP.mp_email, "B1 1AA")


def test_a_letter_waits_for_its_writer_and_announces_only_that_until_confirmed():
    key = new_key()
    form = validate_action("write_to_mp", name="Ada Lovelace", email="ada@example.org", postcode="b11aa",
                           letter_subject="Care", letter_body="Dear MP")
    action = _accept(_ask("write_to_mp"), form, MP)
    assert action.awaits_confirmation and not _accept(_ask("petition"), validate_action(
        "petition", name="Ada", email="ada@example.org"), None).awaits_confirmation
    [issued, waiting] = action.confirmation_events(key, key_issued=True)
    assert isinstance(issued, ev.ActionKeyIssued) and isinstance(waiting, ev.MpLetterAwaitingConfirmation)
    assert unseal(waiting.sender_email, key) == "ada@example.org" and "ada@example.org" not in waiting.model_dump_json()
    assert (waiting.mp_name, waiting.constituency_name) == (MP.mp_name, MP.name)


class _Stored:
    """An action's row as take_action finds it again."""

    def __init__(self, **fields: object) -> None:
        defaults = {"id": "a1", "email": "ada@example.org", "name": "Ada", "member_id": None, "mp_name": "A. Member",
                    "letter_subject": "Care", "letter_confirmed_at": None}
        self.__dict__.update({**defaults, **fields})


def test_a_repeat_tells_the_address_that_took_the_action_and_resends_a_waiting_letters_link():
    key = new_key()
    [repeated] = repeat_events(_Stored(), _ask("petition"), key)
    assert isinstance(repeated, ev.ActionRepeated) and unseal(repeated.email, key) == "ada@example.org"
    [again] = repeat_events(_Stored(), _ask("write_to_mp"), key, constituency_name="Ladywood")
    assert isinstance(again, ev.MpLetterAwaitingConfirmation) and again.constituency_name == "Ladywood"
    [sent] = repeat_events(_Stored(letter_confirmed_at=NOW), _ask("write_to_mp"), key)
    assert isinstance(sent, ev.ActionRepeated)
    assert repeat_events(_Stored(email=None, name=None), _ask("petition"), key) == []  # nobody to tell


def test_an_rsvp_is_the_same_action_however_often_it_arrives():
    assert attend_action_id("ask-1", "rsvp-1") == attend_action_id("ask-1", "rsvp-1")
    assert attend_action_id("ask-1", "rsvp-1") != attend_action_id("ask-2", "rsvp-1")


def test_a_pledge_is_published_once_when_it_is_first_approved():
    from services.campaigns.domain import publishes_pledge

    assert publishes_pledge("pending", "approved") and publishes_pledge("rejected", "approved")
    assert not publishes_pledge("approved", "approved")  # approving again announces nothing
    assert not publishes_pledge("pending", "rejected") and not publishes_pledge("approved", "pending")


def test_an_integrations_signature_may_give_an_email_address_alone_but_a_letter_never():
    form = validate_action("petition", email="Only@Example.org", name_optional=True)
    assert form.name is None and form.email == "only@example.org"
    with pytest.raises(InvalidInput) as refused:
        validate_action("petition", email="only@example.org")
    assert "name" in refused.value.errors
    with pytest.raises(InvalidInput) as letter:
        validate_action("write_to_mp", email="only@example.org", postcode="B1 1AA", letter_subject="Hi",
                        letter_body="Dear MP", name_optional=True)
    assert "name" in letter.value.errors


@pytest.mark.parametrize(("levels", "field", "message"), [
    ([{"level": "a"}, {"level": "b", "min_total": 1_000_001}], "levels[1]", "at most 1,000,000"),
    ([{"level": "a"}, {"level": "b", "min_actions": 2**40}], "levels[1]", "at most 1,000,000"),
    ([{"level": "a"}, {"level": "b", "label": "x" * 81}], "levels[1]", "at most 80 characters"),
    ([{"level": "a"}, {"level": "b", "roles": ["r" * 41]}], "levels[1]", "roles 40"),
    ([{"level": f"l{i}"} for i in range(21)], "levels", "at most 20 levels"),
    ([{"level": "a"}, {"level": "b", "min_total": "two"}], "levels[1]", "whole numbers"),
])
def test_a_ladder_the_tables_cannot_hold_is_refused_with_what_to_fix(levels, field, message):
    with pytest.raises(InvalidInput) as refused:
        validate_ladder(levels)
    assert message in refused.value.errors[field]


def test_a_new_levels_name_becomes_its_id_cut_to_what_the_table_holds():
    ladder = validate_ladder([{"level": "a"}, {"level": "A very long name " * 4}])
    assert ladder[1].level == "a_very_long_name_a_very_long_name_a_very"
    assert ladder[1].label == "A_very_long_name_a_very_long_name_a_very"
