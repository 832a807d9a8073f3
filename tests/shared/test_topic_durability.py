"""Topics are created with a `min.insync.replicas` that means what `acks=all` promises (issue #19)."""

from __future__ import annotations

import pytest

from shared.topics import all_topics, min_insync_for


@pytest.mark.parametrize(("replication_factor", "expected"), [(1, None), (2, None), (3, 2), (5, 2)])
def test_unconfigured_topics_take_two_from_a_replication_factor_of_three(replication_factor, expected):
    assert min_insync_for(replication_factor) == expected


def test_a_single_broker_takes_the_clusters_own_setting_whatever_is_configured():
    assert min_insync_for(1, 1) is None


@pytest.mark.parametrize(("replication_factor", "configured"), [(3, 1), (3, 2), (5, 3), (5, 4)])
def test_a_configured_value_is_used_as_given(replication_factor, configured):
    assert min_insync_for(replication_factor, configured) == configured


@pytest.mark.parametrize(("replication_factor", "configured"), [(3, 3), (2, 2), (3, 0)])
def test_a_value_that_would_stop_writes_when_one_broker_is_down_is_refused(replication_factor, configured):
    with pytest.raises(ValueError, match="KAFKA_MIN_INSYNC_REPLICAS"):
        min_insync_for(replication_factor, configured)


def test_no_topic_overrides_min_insync_to_one_on_a_cluster():
    for spec in all_topics():
        assert spec.config(3)["min.insync.replicas"] == "2", spec.name
        assert "min.insync.replicas" not in spec.config(1), spec.name
