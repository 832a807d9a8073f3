"""Membership's rules without I/O (services/membership/domain.py): what a join does to someone who is a member
already, has left, or was erased, which events it raises, and how the engagement ladder's level is recorded.
No Kafka, no database: the end-to-end tests in test_join.py and test_reactions.py cover the same through both."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from services.membership.domain import (
    OWNER,
    REQUEST_LIFETIME,
    TELL_BY_EMAIL,
    TELL_DIRECTLY,
    TELL_NOBODY,
    Choice,
    JoinApplication,
    JoinExtras,
    JoinOptions,
    MemberRecord,
    Unit,
    asks_first,
    change_summary,
    extras_join,
    join_details,
    join_from_details,
    joined_events,
    ladder_level,
    new_member_row,
    rejoin,
    tell_more_route,
    with_extras,
)
from shared.crypto import new_key, seal, unseal
from shared.events.catalog import (
    ConsentChanged,
    EngagementLevelChosen,
    MemberJoined,
    MemberProfileUpdated,
    SubjectKeyIssued,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EARLIER = datetime(2026, 1, 1, tzinfo=UTC)


def member(**fields) -> MemberRecord:
    values = dict(
        id="m-1",
        name="Claudia Jones",
        postcode="B15 2TT",
        region_id="west-midlands",
        suggested_group_id="birmingham",
        engagement_level="informed",
        interests=["housing"],
        organisation_id=None,
        status="confirmed",
        confirmed_at=EARLIER,
        email_consent=True,
        group_ids=["birmingham"],
        subteam_ids=[],
    )
    values.update(fields)
    return MemberRecord(**values)


def application(**fields) -> JoinApplication:
    values = dict(
        name="Claudia Jones",
        email="claudia@example.org",
        postcode="B15 2TT",
        email_consent=True,
        consent_version="email-2026-11",
        engagement_level="informed",
        interests=["housing"],
        group_ids=["birmingham"],
        region_id="west-midlands",
        suggested_group_id="birmingham",
    )
    values.update(fields)
    return JoinApplication(**values)


def test_joining_again_with_nothing_new_changes_nothing_and_raises_no_event():
    decision = rejoin(member(), application(), NOW, double_opt_in=True)

    assert decision.changed == [] and decision.events() == []
    assert not decision.back_after_leaving and "status" not in decision.values


def test_a_join_form_replaces_name_and_level_and_only_adds_to_groups_and_interests():
    previous = member()
    decision = rejoin(
        previous,
        application(name="Claudia Cumberbatch Jones", engagement_level="active", interests=["climate"],
                    group_ids=["coventry"]),
        NOW,
        double_opt_in=True,
    )

    assert decision.values["name"] == "Claudia Cumberbatch Jones" and decision.values["engagement_level"] == "active"
    assert decision.values["interests"] == ["housing", "climate"]
    assert decision.add_group_ids == ["coventry"] and decision.group_ids == ["birmingham", "coventry"]
    assert decision.changed == ["name", "group_ids", "interests", "engagement_level"]
    sealed = seal("Claudia Cumberbatch Jones", new_key(), key_id="m-1", owner=OWNER)
    updated, chosen = decision.events(sealed)
    assert isinstance(updated, MemberProfileUpdated) and updated.name == sealed
    assert updated.group_ids == ["birmingham", "coventry"] and updated.engagement_level == "active"
    assert chosen == EngagementLevelChosen(member_id="m-1", level="active", previous_level="informed")


def test_a_join_with_an_rsvp_fills_in_what_is_missing_and_does_not_move_someone_whose_postcode_is_known():
    decision = rejoin(
        member(),
        application(name="C. Jones", engagement_level="active", postcode="NG7 1AA", region_id="east-midlands",
                    group_ids=["nottingham"], suggested_group_id="nottingham", replace_profile=False),
        NOW,
        double_opt_in=True,
    )

    assert decision.values["name"] == "Claudia Jones" and decision.values["engagement_level"] == "informed"
    assert "postcode" not in decision.values and "region_id" not in decision.values
    assert decision.add_group_ids == [] and decision.group_ids == ["birmingham"]
    assert decision.changed == [] and decision.events() == []  # it announces nothing it did not store
    assert not decision.changes_anything


def test_a_join_with_an_rsvp_places_a_member_whose_postcode_was_not_known():
    decision = rejoin(
        member(postcode=None, region_id=None, suggested_group_id=None, group_ids=[]),
        application(postcode="NG7 1AA", region_id="east-midlands", group_ids=["nottingham"],
                    suggested_group_id="nottingham", replace_profile=False),
        NOW,
        double_opt_in=True,
    )

    assert decision.values["postcode"] == "NG7 1AA" and decision.values["region_id"] == "east-midlands"
    assert decision.values["suggested_group_id"] == "nottingham" and decision.add_group_ids == ["nottingham"]
    assert decision.changed == ["postcode", "region_id", "group_ids"]
    [updated] = decision.events()
    assert isinstance(updated, MemberProfileUpdated) and updated.name is None and updated.region_id == "east-midlands"


def test_a_leaver_who_joins_again_is_back_as_confirmed_as_before_and_announced_by_member_joined_not_updates():
    decision = rejoin(member(status="left", engagement_level="informed"), application(engagement_level="active"),
                      NOW, double_opt_in=True)

    assert decision.back_after_leaving and decision.values["status"] == "confirmed"
    assert decision.values["left_at"] is None and not decision.confirmation_required
    assert decision.events() == []  # the use case announces MemberJoined from the updated record instead


def test_a_leaver_who_never_confirmed_confirms_again_only_under_double_opt_in():
    never_confirmed = member(status="left", confirmed_at=None)

    pending = rejoin(never_confirmed, application(), NOW, double_opt_in=True)
    assert pending.values["status"] == "pending" and pending.confirmation_required
    assert rejoin(never_confirmed, application(), NOW, double_opt_in=False).values["status"] == "confirmed"


def test_consent_given_again_is_recorded_and_announced_with_the_wording_agreed_to():
    decision = rejoin(member(email_consent=False), application(source="join-form"), NOW, double_opt_in=True)

    assert decision.values["email_consent"] is True
    assert decision.events() == [
        ConsentChanged(member_id="m-1", granted=True, wording_version="email-2026-11", source="join-form")
    ]


def test_a_join_without_consent_never_withdraws_consent_given_before():
    decision = rejoin(member(), application(email_consent=False), NOW, double_opt_in=True)

    assert "email_consent" not in decision.values and decision.events() == []


def test_an_erased_members_address_joins_as_a_new_person_with_a_new_key_and_one_member_joined():
    """Erasure deletes the address, so the next join with it finds no member: a new row, key and MemberJoined."""
    joining = application(email="Claudia@Example.org")
    row = new_member_row("m-2", joining, NOW, double_opt_in=True)
    key = new_key()
    issued, joined = joined_events("m-2", key, joining, ["birmingham"], [], consent_version="email-2026-11",
                                   source="join-form", confirm=True, now=NOW)

    assert row["email_normalised"] == "claudia@example.org" and row["status"] == "pending"
    assert row["confirmed_at"] is None
    assert new_member_row("m-2", joining, NOW, double_opt_in=False)["confirmed_at"] == NOW
    assert isinstance(issued, SubjectKeyIssued) and issued.key_id == "m-2"
    assert isinstance(joined, MemberJoined) and joined.confirmation_required
    assert unseal(joined.email, key) == "claudia@example.org" and unseal(joined.name, key) == "Claudia Jones"


def test_the_ladder_level_is_recorded_for_a_member_but_never_for_an_erased_or_unknown_one():
    assert ladder_level("confirmed", "organising", NOW) == {"ladder_level": "organising", "ladder_changed_at": NOW}
    assert ladder_level("left", "organising", NOW) == {"ladder_level": "organising", "ladder_changed_at": NOW}
    assert ladder_level("erased", "organising", NOW) == {}
    assert ladder_level(None, "organising", NOW) == {}


def test_rules_take_loaded_state_and_leave_it_as_it_was():
    previous = member()
    before = replace(previous, interests=list(previous.interests), group_ids=list(previous.group_ids))
    joining = application(interests=["climate"], group_ids=["coventry"], replace_profile=False)
    rejoin(previous, joining, NOW, double_opt_in=True)

    assert previous == before and joining.group_ids == ["coventry"] and joining.postcode == "B15 2TT"


# A join for a member's address waits for them to confirm it (decision 0006) ----------------------------------

OPTIONS = JoinOptions(
    interests=(Choice("housing", "Housing"), Choice("climate", "Climate justice")),
    levels=(Choice("informed", "Keep me informed"), Choice("active", "Take action")),
    regions=(Unit("west-midlands", "wm", "West Midlands"), Unit("east-midlands", "em", "East Midlands")),
    groups=(Unit("birmingham", "brum", "Birmingham"), Unit("nottingham", "notts", "Nottingham")),
    subteams=(Unit("research", "research", "Research and policy"),),
    partners=(),
    consent_version="email-2026-11",
    consent_wording="We may email you",
    consent_versions=frozenset({"email-2026-11"}),
)


def test_a_join_form_always_asks_a_join_from_elsewhere_only_when_it_would_change_something():
    same = rejoin(member(), application(), NOW, double_opt_in=False)
    assert not same.changes_anything and asks_first(application(), same)
    rsvp = application(replace_profile=False)
    assert not asks_first(rsvp, rejoin(member(), rsvp, NOW, double_opt_in=False))
    assert asks_first(rsvp, rejoin(member(status="left"), rsvp, NOW, double_opt_in=False))
    assert asks_first(rsvp, rejoin(member(email_consent=False), rsvp, NOW, double_opt_in=False))


def test_a_waiting_join_keeps_its_personal_fields_apart_to_be_sealed_and_comes_back_whole():
    joining = application(name="Renamed", postcode="NG1 5FS", skills="Printing", group_ids=["nottingham"])
    plain, personal = join_details(joining)
    assert personal == {"name": "Renamed", "postcode": "NG1 5FS", "skills": "Printing"}
    assert not {"name", "postcode", "skills", "email"} & set(plain) and plain["group_ids"] == ["nottingham"]
    assert join_from_details(plain, personal, "claudia@example.org") == joining


def test_the_page_of_a_waiting_join_says_what_confirming_would_change_in_words():
    joining = application(name="Renamed", postcode="NG1 5FS", region_id="east-midlands", group_ids=["nottingham"],
                          subteam_ids=["research"], engagement_level="active", interests=["climate"])
    previous = member(status="left", email_consent=False)
    lines = dict(change_summary(previous, rejoin(previous, joining, NOW, double_opt_in=False), OPTIONS))
    assert lines == {
        "Your membership": "You join the network again",
        "Your name": "Renamed",
        "Your postcode": "NG1 5FS",
        "Your region": "East Midlands",
        "Local groups you join": "Nottingham",
        "Sub-teams you join": "Research and policy",
        "Issues you care about": "Climate justice",
        "How involved you want to be": "Take action",
        "Email from us": "You agree that we may email you again",
    }
    assert change_summary(member(), rejoin(member(), application(), NOW, double_opt_in=False), OPTIONS) == []


def test_a_joins_changes_wait_a_week_a_download_or_an_erasure_half_an_hour():
    assert REQUEST_LIFETIME["join-change"].days == 7
    assert REQUEST_LIFETIME["download"].total_seconds() == REQUEST_LIFETIME["erase"].total_seconds() == 30 * 60


# -- "tell us more" on the thank-you page of the short join ---------------------------------------------------------
EXTRAS = JoinExtras(interests=["climate"], group_ids=["nottingham"], subteam_ids=["research"], skills="Welsh")


def test_tell_us_more_adds_to_what_a_join_asks_and_replaces_nothing_else():
    joining = with_extras(application(name="Renamed", skills="Printing", time_available="Evenings"), EXTRAS)
    assert joining.name == "Renamed" and joining.postcode == "B15 2TT" and joining.time_available == "Evenings"
    assert joining.interests == ["housing", "climate"] and joining.group_ids == ["birmingham", "nottingham"]
    assert joining.subteam_ids == ["research"] and joining.skills == "Welsh"


def test_tell_us_more_on_its_own_changes_no_name_postcode_level_consent_and_brings_nobody_back():
    row = SimpleNamespace(name="Claudia Jones", email_normalised="claudia@example.org", email_consent=False,
                          engagement_level="organise")
    more = extras_join(row, EXTRAS, consent_version="email-2026-11")
    for previous in (member(email_consent=False, engagement_level="organise"),
                     member(status="left", email_consent=False, engagement_level="organise")):
        decision = rejoin(previous, more, NOW, double_opt_in=True)
        assert decision.values["name"] == "Claudia Jones" and "postcode" not in decision.values
        assert not decision.back_after_leaving and not decision.consent_regained
        assert decision.changed == ["group_ids", "subteam_ids", "interests"]
        assert decision.values["skills"] == "Welsh" and decision.values["engagement_level"] == "organise"
        assert [type(e) for e in decision.events()] == [MemberProfileUpdated]
    lines = dict(change_summary(member(), rejoin(member(), more, NOW, double_opt_in=False), OPTIONS))
    assert lines["Local groups you join"] == "Nottingham" and lines["Your skills"] == "Welsh"
    assert "Your name" not in lines and "Email from us" not in lines


def test_tell_us_more_goes_straight_into_a_record_only_while_it_is_still_the_joiners_unconfirmed_word():
    joined = NOW - timedelta(minutes=5)
    assert tell_more_route(new_member=True, status="pending", confirmed_at=None, since=joined) == TELL_DIRECTLY
    # without double opt-in the join itself confirmed the address: nobody else has
    assert tell_more_route(new_member=True, status="confirmed", confirmed_at=joined, since=joined) == TELL_DIRECTLY
    # the address's owner confirmed after the join: from now on the record is theirs
    assert tell_more_route(new_member=True, status="confirmed", confirmed_at=NOW, since=joined) == TELL_BY_EMAIL
    # a member's address: always by email, whatever its state
    assert tell_more_route(new_member=False, status="pending", confirmed_at=None, since=joined) == TELL_BY_EMAIL
    for status in (None, "left", "erased"):
        assert tell_more_route(new_member=True, status=status, confirmed_at=None, since=joined) == TELL_NOBODY
