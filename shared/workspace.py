"""The organiser workspace's one menu: the areas of all four services, in the order a volunteer meets them.

Every service's organiser pages extend `organise_layout.html`, which lists these areas (marking the one a page is
in) and greets the signed-in organiser; each service still serves its own pages behind the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from shared.auth import OrganiserScope


@dataclass(frozen=True)
class Area:
    href: str
    label: str
    prefixes: tuple[str, ...]  # the paths whose pages belong to this area
    operators_only: bool = False  # network organisers: who run the system as well as the network


AREAS = (
    Area("/admin", "Home", ("/admin",)),
    Area("/members", "Members", ("/members",)),
    Area("/admin/units", "Regions and groups", ("/admin/units",)),
    Area("/organisers", "Organisers and roles", ("/organisers", "/admin/roles", "/admin/audit", "/admin/origins",
                                                 "/admin/public")),
    Area("/events/organise", "Meetings", ("/events/organise",)),
    Area("/events/organise#check-in", "Check-in", ("/events/organise/check-in",)),
    Area("/campaigns/organise", "Campaigns", ("/campaigns/organise",)),
    Area("/campaigns/organise/pledges", "Pledges", ("/campaigns/organise/pledges",)),
    Area("/campaigns/organise/ladder", "Engagement ladder", ("/campaigns/organise/ladder",)),
    Area("/dashboard", "Dashboard", ("/dashboard",)),
    Area("/notifications/organise/mailings", "Mailings", ("/notifications/organise/mailings",)),
    Area("/notifications/organise", "Emails and digests", ("/notifications/organise",)),
    Area("/admin/dead-letters", "Dead letters", ("/admin/dead-letters",), operators_only=True),
)


@dataclass(frozen=True)
class MenuItem:
    href: str
    label: str
    current: bool


def organiser_menu(request: Request | None, who: OrganiserScope | None) -> list[MenuItem]:
    """The areas `who` may open, the one the page belongs to (the longest matching path) marked current."""
    path = request.url.path if request is not None else ""
    shown = [a for a in AREAS if not a.operators_only or (who is not None and who.is_network)]
    matches = [(len(p), a) for a in shown for p in a.prefixes if path == p or path.startswith(p.rstrip("/") + "/")]
    current = max(matches, key=lambda m: m[0])[1] if matches else None
    return [MenuItem(a.href, a.label, a is current) for a in shown]
