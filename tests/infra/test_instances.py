"""GROUNDSWELL_INSTANCES: how many instances of each service the launcher runs, and on which ports (docs/scaling.md)."""

from __future__ import annotations

import pytest

from deploy.local import launcher


def test_extra_instances_are_named_b_c_and_listen_100_ports_apart(monkeypatch):
    monkeypatch.setenv("GROUNDSWELL_INSTANCES", "membership=3, notifications=2")
    base = launcher.SERVICE_PORTS
    assert launcher.extra_instances("membership") == [("b", base["membership"] + 100), ("c", base["membership"] + 200)]
    assert launcher.extra_instances("notifications") == [("b", base["notifications"] + 100)]
    assert launcher.extra_instances("events") == []


@pytest.mark.parametrize("value", ["membership", "membership=0", "membership=two", "mebership=2", "membership=99"])
def test_a_wrong_instance_count_is_refused_with_the_form_it_takes(monkeypatch, value):
    monkeypatch.setenv("GROUNDSWELL_INSTANCES", value)
    with pytest.raises(launcher.LauncherError, match="GROUNDSWELL_INSTANCES|Unknown service"):
        launcher.extra_instances("membership")
