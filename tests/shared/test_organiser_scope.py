"""Where an organiser may look (shared/auth.py's OrganiserScope), the one rule every service applies."""

from __future__ import annotations

from shared.auth import OrganiserScope


def test_a_network_organiser_covers_everything() -> None:
    scope = OrganiserScope("o", "network")
    assert scope.is_network
    assert scope.covers("subteam", "t1", "r1", ancestors=["g1", "r1"])
    assert scope.describe() == "the whole network"


def test_a_region_organiser_covers_their_region_and_what_lies_in_it_only() -> None:
    scope = OrganiserScope("o", "region", "r1")
    assert scope.covers("region", "r1")
    assert scope.covers("group", "g1", "r1")
    assert scope.covers("subteam", "t1", None, ancestors=["g1", "r1"])
    assert not scope.covers("group", "g2", "r2", ancestors=["r2"])
    assert not scope.covers("network", None)
    assert scope.describe() == "the region r1"


def test_a_group_organiser_covers_their_group_and_its_sub_teams_but_not_the_region() -> None:
    scope = OrganiserScope("o", "group", "g1")
    assert scope.covers("group", "g1", "r1")
    assert scope.covers("subteam", "t1", "r1", ancestors=["g1"])
    assert not scope.covers("region", "r1", "r1")
    assert not scope.covers("subteam", "t2", "r1", ancestors=["g2"])


def test_a_scope_without_its_unit_covers_nothing_beyond_an_exact_match() -> None:
    scope = OrganiserScope("o", "group", None)
    assert not scope.covers("group", "g1", None, ancestors=["g1"])
    assert not scope.covers("region", None, None)
