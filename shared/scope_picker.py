"""Choosing who something is for by name, never by id: the network, a region, a group or a sub-team.

Events and campaigns keep membership's units (`OrganisationUnitDefined`) in a read model of their own; from it this
builds the choices an organiser may make (only those inside their own part of the network), grouped by region, and
reads a choice back, refusing anything that is not one of them. A choice's value is `network` or `<kind>:<unit id>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.auth import OrganiserScope

NETWORK = "network"
KIND_WORDS = {"region": "region", "group": "group", "subteam": "sub-team"}
UNKNOWN_CHOICE = "Choose who it is for from the list"


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class ChoiceGroup:
    label: str  # a region's name; "" for the whole network
    choices: tuple[Choice, ...]


def choice_value(scope_type: str, scope_id: str | None) -> str:
    return NETWORK if scope_type == NETWORK or not scope_id else f"{scope_type}:{scope_id}"


def _lineage(unit_id: str, parents: dict[str, str | None]) -> list[str]:
    """The unit's parents, nearest first (a loop or a missing parent stops the walk)."""
    seen: list[str] = []
    current = parents.get(unit_id)
    while current and current not in seen:
        seen.append(current)
        current = parents.get(current)
    return seen


def scope_choices(units: Iterable[Any], who: OrganiserScope) -> list[ChoiceGroup]:
    """The network (for network organisers), then each region with its groups and sub-teams, by name: only the
    units `who` looks after. `units` are rows with unit_id, kind, name and parent_id."""
    rows = [u for u in units if u.kind in KIND_WORDS]
    parents = {u.unit_id: u.parent_id for u in rows}
    names = {u.unit_id: u.name for u in rows}
    groups: list[ChoiceGroup] = []
    if who.is_network:
        groups.append(ChoiceGroup("", (Choice(NETWORK, "The whole network"),)))
    by_region: dict[str, list[tuple[int, str, Choice]]] = {}
    for u in rows:
        lineage = _lineage(u.unit_id, parents)
        region_id = u.unit_id if u.kind == "region" else next((p for p in lineage if parents.get(p) is None), None)
        if region_id is None or not who.covers(u.kind, u.unit_id, region_id, ancestors=lineage):
            continue
        if u.kind == "region":
            label, order = f"{u.name} (the whole region)", 0
        elif u.kind == "group":
            label, order = f"{u.name} (group)", 1
        else:
            parent = names.get(lineage[0], "") if lineage else ""
            label, order = f"{u.name} (sub-team{' of ' + parent if parent else ''})", 2
        by_region.setdefault(region_id, []).append((order, u.name.lower(), Choice(f"{u.kind}:{u.unit_id}", label)))
    for region_id in sorted(by_region, key=lambda r: names.get(r, "").lower()):
        choices = tuple(c for _, _, c in sorted(by_region[region_id], key=lambda t: (t[0], t[1])))
        groups.append(ChoiceGroup(names.get(region_id, "Other"), choices))
    return groups


def read_choice(value: str, groups: Iterable[ChoiceGroup]) -> tuple[str, str | None] | None:
    """(scope_type, scope_id) for one of the offered choices; None for anything else."""
    if not any(c.value == value for g in groups for c in g.choices):
        return None
    if value == NETWORK:
        return NETWORK, None
    kind, _, unit_id = value.partition(":")
    return kind, unit_id


def scope_label(scope_type: str, scope_id: str | None, units: Iterable[Any] | Mapping[str, str]) -> str:
    """Who something is for, in words: `the whole network`, `the region West Midlands`. `units`: the units (rows
    with `unit_id` and `name`), or their names by id for a list that labels many things (a lookup, not a search)."""
    if scope_type == NETWORK or not scope_id:
        return "the whole network"
    if isinstance(units, Mapping):
        name = units.get(scope_id)
    else:
        rows: Iterable[Any] = units  # rows, not names by id (Any: a row of any service's units table)
        name = next((u.name for u in rows if u.unit_id == scope_id), None)
    return f"the {KIND_WORDS.get(scope_type, scope_type)} {name or 'that no longer exists'}"
