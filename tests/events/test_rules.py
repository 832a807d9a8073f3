"""The events service's rules without a database or Kafka: who gets a place, who moves up from the waitlist, what
cancelling and checking in change, when self check-in works, when reminders fall due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.events.domain import (
    CheckInRefused,
    InvalidMeeting,
    InvalidRsvp,
    MeetingPlan,
    Places,
    Rsvp,
    attend,
    cancel_reason,
    cancel_rsvp,
    decide_rsvp,
    plan_change,
    profile_changes,
    promote_from_waitlist,
    reminder_due_times,
    reminder_wait,
    scope_moves,
    self_check_in_refusal,
    validate_meeting,
    validate_rsvp,
    walk_in_method,
    with_default_end,
)
from shared.events import catalog as ev

NOW = datetime(2027, 3, 4, 18, 0, tzinfo=UTC)


def places(capacity: int | None = 10, going: int = 0, waitlist_last: int = 0, status: str = "scheduled") -> Places:
    return Places("m1", status, capacity, going, waitlist_last)


def waiting(rsvp_id: str, guests: int = 0, position: int = 1) -> Rsvp:
    return Rsvp(rsvp_id, "waitlisted", guests, f"member-{rsvp_id}", position)


# RSVPs ---------------------------------------------------------------------------------------------------------
def test_a_party_that_fits_gets_places_for_everyone_in_it():
    decision = decide_rsvp(places(capacity=10, going=7), party=3, existing=None, someone_waiting=False)
    assert (decision.status, decision.waitlist_position, decision.places_taken) == ("going", None, 3)


def test_a_party_that_does_not_fit_whole_goes_on_the_waitlist_in_the_next_position():
    decision = decide_rsvp(places(capacity=10, going=8, waitlist_last=4), party=3, existing=None,
                           someone_waiting=True)
    assert (decision.status, decision.waitlist_position, decision.places_taken) == ("waitlisted", 5, 0)


def test_nobody_jumps_the_waitlist_even_when_a_place_is_free():
    decision = decide_rsvp(places(capacity=10, going=9, waitlist_last=2), party=1, existing=None,
                           someone_waiting=True)
    assert (decision.status, decision.waitlist_position) == ("waitlisted", 3)


def test_a_meeting_without_a_capacity_always_has_a_place():
    decision = decide_rsvp(places(capacity=None, going=5000), party=11, existing=None, someone_waiting=False)
    assert decision.status == "going"


def test_a_second_rsvp_from_the_same_person_changes_nothing():
    existing = Rsvp("r1", "waitlisted", 0, None, 2)
    decision = decide_rsvp(places(capacity=10, going=0), party=1, existing=existing, someone_waiting=False)
    assert (decision.status, decision.waitlist_position, decision.places_taken, decision.already) == (
        "waitlisted", 2, 0, True)


def test_someone_who_cancelled_can_rsvp_again():
    decision = decide_rsvp(places(capacity=10, going=0), party=1, existing=Rsvp("r1", "cancelled"),
                           someone_waiting=False)
    assert (decision.status, decision.already) == ("going", False)


# The waitlist ----------------------------------------------------------------------------------------------------
def test_freed_places_go_to_the_waitlist_in_order_until_a_party_does_not_fit():
    queue = [waiting("a", position=1), waiting("b", guests=2, position=2), waiting("c", position=3)]
    promotion = promote_from_waitlist(places(capacity=10, going=8), queue)
    assert [r.id for r in promotion.promoted] == ["a"]
    assert promotion.going_count == 9
    assert [(type(e), e.rsvp_id) for e in promotion.events] == [(ev.PromotedFromWaitlist, "a")]


def test_more_capacity_moves_up_everyone_who_now_fits():
    queue = [waiting("a", position=1), waiting("b", guests=1, position=2)]
    promotion = promote_from_waitlist(places(capacity=13, going=10), queue)
    assert [r.id for r in promotion.promoted] == ["a", "b"]
    assert promotion.going_count == 13


def test_a_cancelled_meeting_moves_nobody_up():
    promotion = promote_from_waitlist(places(capacity=10, going=0, status="cancelled"), [waiting("a")])
    assert promotion.promoted == [] and promotion.events == [] and promotion.going_count == 0


def test_cancelling_a_place_frees_the_whole_party():
    cancellation = cancel_rsvp(places(capacity=10, going=10), Rsvp("r1", "going", guests=2, member_id="m9"))
    assert cancellation is not None
    assert cancellation.places_freed == 3 and cancellation.places.going_count == 7
    [event] = cancellation.events
    assert isinstance(event, ev.RsvpCancelled) and (event.rsvp_id, event.member_id) == ("r1", "m9")


def test_leaving_the_waitlist_frees_no_place():
    cancellation = cancel_rsvp(places(capacity=10, going=10), waiting("r1"))
    assert cancellation is not None and cancellation.places_freed == 0 and cancellation.places.going_count == 10


def test_cancelling_twice_changes_nothing():
    assert cancel_rsvp(places(), Rsvp("r1", "cancelled")) is None


# Check-in ------------------------------------------------------------------------------------------------------
def test_checking_someone_in_records_their_attendance_once():
    attendance = attend(places(), Rsvp("r1", "going"), method="organiser", now=NOW)
    assert attendance is not None and not attendance.from_waitlist
    [event] = attendance.events
    assert isinstance(event, ev.AttendanceRecorded) and (event.method, event.attended_at) == ("organiser", NOW)
    assert attend(places(), Rsvp("r1", "going", attended=True), method="organiser", now=NOW) is None


def test_someone_from_the_waitlist_who_comes_anyway_takes_a_place():
    attendance = attend(places(capacity=10, going=10), waiting("r1", guests=1), method="self_check_in", now=NOW)
    assert attendance is not None and attendance.from_waitlist
    assert [type(e) for e in attendance.events] == [ev.PromotedFromWaitlist, ev.AttendanceRecorded]


def test_nobody_checks_in_to_a_cancelled_meeting():
    with pytest.raises(CheckInRefused):
        attend(places(status="cancelled"), Rsvp("r1", "going"), method="organiser", now=NOW)
    with pytest.raises(CheckInRefused):
        walk_in_method(places(status="cancelled"), None, "walk_in")


def test_someone_with_an_rsvp_at_the_door_is_checked_in_by_the_organiser_not_a_walk_in():
    assert walk_in_method(places(), Rsvp("r1", "going"), "walk_in") == "organiser"
    assert walk_in_method(places(), Rsvp("r1", "cancelled"), "walk_in") == "walk_in"
    assert walk_in_method(places(), None, "walk_in") == "walk_in"


def _refusal(code: str = "ABC234", now: datetime = NOW, status: str = "scheduled") -> str | None:
    return self_check_in_refusal(status=status, starts_at=NOW, ends_at=NOW + timedelta(hours=2),
                                 expected_code="ABC234", code=code, now=now)


def test_self_check_in_works_from_an_hour_before_to_an_hour_after_with_the_code_however_typed():
    assert _refusal("abc-234", now=NOW - timedelta(minutes=59)) is None
    assert _refusal(" ABC 234 ", now=NOW + timedelta(hours=2, minutes=59)) is None


def test_self_check_in_says_why_it_does_not_work():
    assert _refusal(now=NOW - timedelta(hours=2)) == "Check-in opens an hour before the meeting starts."
    assert _refusal(now=NOW + timedelta(hours=3, minutes=1)) == "Check-in for this meeting has closed."
    assert _refusal("XYZ789") == "That code does not match the one shown at the venue. Check it and try again."
    assert _refusal(status="cancelled") == "This meeting was cancelled."


# Meetings and reminders ------------------------------------------------------------------------------------------
def _plan(**overrides: object) -> MeetingPlan:
    plan = MeetingPlan(title="Spring planning", description="", kind="in_person", scope_type="group",
                       scope_id="g1", starts_at=NOW + timedelta(days=7), ends_at=NOW + timedelta(days=7, hours=2),
                       venue="Friends Meeting House", capacity=30)
    for name, value in overrides.items():
        setattr(plan, name, value)
    return plan


def test_a_change_names_the_fields_it_changes_and_may_move_the_meeting_to_another_scope():
    after, changed = plan_change(_plan(), status="scheduled", raw={"capacity": 40, "scope_id": "g2"}, now=NOW)
    assert changed == ["capacity", "scope_id"] and after.capacity == 40 and after.scope_id == "g2"
    assert scope_moves(changed) and not scope_moves(["capacity"])
    assert plan_change(_plan(), status="scheduled", raw={"capacity": 30}, now=NOW)[1] == []


def test_a_meeting_for_the_whole_network_has_no_unit_and_a_session_stays_in_its_conference():
    after, changed = plan_change(_plan(), status="scheduled", raw={"scope_type": "network", "scope_id": ""}, now=NOW)
    assert after.scope_type == "network" and after.scope_id is None and changed == ["scope_type", "scope_id"]
    session = _plan(parent_meeting_id="conference-1")
    assert plan_change(session, status="scheduled", raw={"parent_meeting_id": "other"}, now=NOW)[0].parent_meeting_id \
        == "conference-1"


def test_a_cancelled_meeting_cannot_be_changed():
    with pytest.raises(InvalidMeeting) as refused:
        plan_change(_plan(), status="cancelled", raw={"title": "Back on"}, now=NOW)
    assert "status" in refused.value.errors


def test_a_cancellation_reason_is_kept_on_one_line_and_empty_means_none():
    assert cancel_reason("  Venue\n flooded ") == "Venue flooded"
    assert cancel_reason("   ") is None and cancel_reason(None) is None


def test_only_reminders_still_ahead_are_planned():
    starts = NOW + timedelta(minutes=90)
    assert reminder_due_times(starts, [1440, 60], NOW) == [(60, NOW + timedelta(minutes=30))]


def test_the_reminder_loop_sleeps_until_the_next_reminder_but_no_longer_than_its_poll_interval():
    assert reminder_wait(None, now=NOW, poll_interval_s=5.0) == 5.0
    assert reminder_wait(NOW + timedelta(seconds=2), now=NOW, poll_interval_s=5.0) == 2.0
    assert reminder_wait(NOW + timedelta(hours=1), now=NOW, poll_interval_s=5.0) == 5.0
    assert reminder_wait(NOW - timedelta(seconds=1), now=NOW, poll_interval_s=5.0) == 0.05


def test_a_profile_update_changes_only_the_read_model_fields_it_names():
    event = ev.MemberProfileUpdated(member_id="m1", changed=["groups"], region_id="r1", group_ids=["g1"],
                                    subteam_ids=[])
    assert profile_changes(event) == {"group_ids": ["g1"]}


def test_an_integrations_rsvp_may_give_an_email_address_alone():
    form = validate_rsvp(name="", email="Only@Example.org", name_optional=True)
    assert form.name is None and form.email == "only@example.org"
    with pytest.raises(InvalidRsvp) as refused:
        validate_rsvp(name="", email="Only@Example.org")
    assert "name" in refused.value.errors


def test_a_meeting_typed_without_an_end_lasts_the_default_length():
    raw = with_default_end({"starts_at": "2027-03-14 18:30:00", "timezone": "Europe/London"}, timedelta(hours=2))
    assert raw["ends_at"] == datetime(2027, 3, 14, 20, 30, tzinfo=UTC)
    assert with_default_end({"starts_at": "2027-03-14 18:30", "ends_at": "x"}, timedelta(hours=2))["ends_at"] == "x"
    assert "ends_at" not in with_default_end({"starts_at": "soon"}, timedelta(hours=2))


def test_a_capacity_beyond_any_venue_is_refused():
    with pytest.raises(InvalidMeeting) as refused:
        validate_meeting({"title": "Assembly", "starts_at": "2027-03-14 18:30", "ends_at": "2027-03-14 20:30",
                          "venue": "Town Hall", "capacity": 10**12}, now=NOW)
    assert "capacity" in refused.value.errors
