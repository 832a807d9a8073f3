"""How pages show a time (shared/web.py's `local_time` filter), the same in every service."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.web import local_time, make_templates


def test_a_time_is_shown_as_people_in_its_zone_read_it() -> None:
    at = datetime(2027, 3, 4, 18, 30, tzinfo=UTC)
    assert local_time(at) == "Thursday 4 March 2027, 6:30pm"
    assert local_time(datetime(2027, 7, 1, 17, 0, tzinfo=UTC)) == "Thursday 1 July 2027, 6pm"  # summer time
    assert local_time(at, "Europe/Berlin", "time") == "7:30pm"
    assert local_time(at, "", "input") == "2027-03-04T18:30"
    assert local_time(None) == ""


def test_every_service_templates_have_the_filter() -> None:
    template = make_templates(None).env.from_string("{{ at | local_time }}")
    assert template.render(at=datetime(2027, 3, 4, 18, 30, tzinfo=UTC)) == "Thursday 4 March 2027, 6:30pm"
