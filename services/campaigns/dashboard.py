"""The organisers' dashboard at /dashboard: the reporting read model as charts (inline SVG), tables and CSV.

An organiser sees their own scope (the network, a region, a group or a sub-team) and may narrow it to a region
or group inside it; never wider.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.campaigns import charts
from services.campaigns.deps import Engagement, SettingsDep, UnitsOfWorkDep
from services.campaigns.engagement import EngagementService
from services.campaigns.reports import Reports, Scope, units_by_id
from services.campaigns.views import PagesDep
from shared.auth import OrganiserScope, optional_organiser
from shared.exports import csv_text
from shared.uow import UnitsOfWork

router = APIRouter(prefix="/dashboard", tags=["dashboard"])
REPORTS = ("growth", "funnel", "attendance", "actions", "partners")
MaybeOrganiser = Annotated[OrganiserScope | None, Depends(optional_organiser)]


async def _signed_in(organiser: MaybeOrganiser) -> OrganiserScope:
    if organiser is None:
        raise HTTPException(401, "Sign in as an organiser to see the dashboard")
    return organiser


SignedIn = Annotated[OrganiserScope, Depends(_signed_in)]


def _ancestors(units: dict[str, Any], unit_id: str) -> list[str]:
    found: list[str] = []
    current = units.get(unit_id)
    while current is not None and current.parent_id and len(found) < 5:
        found.append(current.parent_id)
        current = units.get(current.parent_id)
    return found


def scope_within(units: dict[str, Any], organiser: OrganiserScope, region: str = "", group: str = "") -> Scope:
    """The organiser's scope, or the region or group inside it they asked for (403 outside it)."""
    own = Scope.of(organiser)
    wanted = ("group", group) if group else ("region", region) if region else None
    if wanted is None:
        return own
    if own.network or own.scope_id == wanted[1] or own.scope_id in _ancestors(units, wanted[1]):
        return Scope(*wanted)
    raise HTTPException(403, f"You organise {organiser.describe()}: you can only see figures inside it")


async def _figures(uows: UnitsOfWork, engagement: EngagementService, organiser: OrganiserScope, region: str,
                   group: str, weeks: int) -> tuple[Scope, dict[str, Any], dict[str, Any]]:
    """The scope asked for, its figures and the units by id, read in one transaction (the ladder with them)."""
    async with uows.begin() as uow:
        units = await units_by_id(uow.session)
        scope = scope_within(units, organiser, region, group)
        reports = Reports(await engagement.ladder(uow.session))
        return scope, await reports.snapshot(uow.session, scope, weeks=max(4, min(weeks, 104))), units


def _scope_name(scope: Scope, units: dict[str, Any], network_name: str) -> str:
    if scope.network:
        return network_name
    unit = units.get(scope.scope_id or "")
    return f"{unit.name if unit else scope.scope_id} ({scope.scope_type})"


def _charts(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each chart's visible caption and its SVG."""
    growth = data["growth"]
    labels = [w[5:] for w in growth["weeks"]]  # MM-DD of each week's Monday
    top = growth["series"][:6]
    place = "region" if growth["place_kind"] == "region" else "group"
    attended = [m for m in data["attendance"]["meetings"] if m["rate"] is not None][:10][::-1]
    titles = {
        "growth": f"Members per {place}, week by week",
        "joins": "People joining each week",
        "funnel": "Engagement funnel: members at each level or above",
        "attendance": "Share of people with a place who came, by meeting",
        "actions": "Actions per ask",
        "partners": "Actions on partner organisations' campaigns",
    }
    svgs = {
        "growth": charts.line_chart(titles["growth"], labels, [("All", growth["totals"]["members"])]
                                    + [(s["name"], s["members"]) for s in top]),
        "joins": charts.bar_chart(titles["joins"], labels, growth["totals"]["joined"]),
        "funnel": charts.horizontal_bars(titles["funnel"], [(f["label"], f["members"]) for f in data["funnel"]],
                                         kind="funnel"),
        "attendance": charts.bar_chart(titles["attendance"], [m["title"] for m in attended],
                                       [m["rate"] for m in attended], percent=True),
        "actions": charts.horizontal_bars(
            titles["actions"], [(f"{a['campaign'][:14]}: {a['ask']}", a["actions"]) for a in data["actions"][:15]]),
        "partners": charts.horizontal_bars(titles["partners"],
                                           [(p["name"], p["actions"]) for p in data["partners"][:10]]),
    }
    return {name: {"title": titles[name], "svg": svg} for name, svg in svgs.items()}


@router.get("", response_class=HTMLResponse)
async def dashboard(request: Request, pages: PagesDep, organiser: MaybeOrganiser, uows: UnitsOfWorkDep,
                    engagement: Engagement, settings: SettingsDep, region: str = "", group: str = "",
                    weeks: int = 12) -> HTMLResponse:
    if organiser is None:
        return pages.message(
            "Sign in to see the dashboard",
            "The dashboard is for organisers: sign in, and you will come straight back here.", 401,
            link=f"/signin?next={quote(str(request.url.path))}", link_text="Sign in as an organiser")
    weeks = max(4, min(weeks, 104))
    scope, data, units = await _figures(uows, engagement, organiser, region, group, weeks)
    own = Scope.of(organiser)
    narrower = sorted(
        (u for u in units.values() if u.kind in ("region", "group")
         and (own.network or own.scope_id in _ancestors(units, u.unit_id))),
        key=lambda u: (u.kind != "region", u.name))
    query = "&".join(f"{k}={v}" for k, v in (("region", region), ("group", group), ("weeks", weeks)) if v)
    return pages.render("dashboard.html", {
        "data": data, "charts": _charts(data), "organiser": organiser, "scope": scope,
        "scope_name": _scope_name(scope, units, settings.network_name),
        "narrower": narrower, "filters": {"region": region, "group": group, "weeks": weeks}, "query": query,
        "reports": REPORTS})


@router.get("/data.json")
async def dashboard_data(organiser: SignedIn, uows: UnitsOfWorkDep, engagement: Engagement, region: str = "",
                         group: str = "", weeks: int = 12) -> JSONResponse:
    _, data, _ = await _figures(uows, engagement, organiser, region, group, weeks)
    return JSONResponse(data)


def csv_rows(report: str, data: dict[str, Any]) -> list[list[Any]]:
    """One report of a snapshot as CSV rows, header first."""
    if report == "growth":
        g = data["growth"]
        rows: list[list[Any]] = [["week_starting", g["place_kind"] + "_id", g["place_kind"], "members", "joined"]]
        for s in g["series"]:
            rows += [[w, s["id"] or "", s["name"], s["members"][i], s["joined"][i]] for i, w in enumerate(g["weeks"])]
        rows += [[w, "", "all", g["totals"]["members"][i], g["totals"]["joined"][i]] for i, w in enumerate(g["weeks"])]
        return rows
    if report == "funnel":
        return [["level", "label", "members_at_or_above", "members_at_level"]] + [
            [f["level"], f["label"], f["members"], f["at_level"]] for f in data["funnel"]]
    if report == "attendance":
        return [["meeting_id", "title", "starts_at", "places_taken", "attended", "rate"]] + [
            [m["meeting_id"], m["title"], m["starts_at"], m["going"], m["attended"],
             "" if m["rate"] is None else m["rate"]] for m in data["attendance"]["meetings"]]
    if report == "actions":
        return [["campaign_id", "campaign", "ask_id", "ask", "kind", "actions", "joined_network"]] + [
            [a["campaign_id"], a["campaign"], a["ask_id"], a["ask"], a["kind"], a["actions"], a["joined_network"]]
            for a in data["actions"]]
    return [["partner_id", "partner", "campaigns", "actions", "members"]] + [
        [p["partner_id"], p["name"], p["campaigns"], p["actions"], p["members"]] for p in data["partners"]]


@router.get("/export/{report}.csv")
async def export(organiser: SignedIn, uows: UnitsOfWorkDep, engagement: Engagement, report: str, region: str = "",
                 group: str = "", weeks: int = 12) -> Response:
    if report not in REPORTS:
        raise HTTPException(404, f"Choose one of: {', '.join(REPORTS)}")
    scope, data, _ = await _figures(uows, engagement, organiser, region, group, weeks)
    name = f"{report}-{scope.scope_type}{'-' + scope.scope_id if scope.scope_id else ''}.csv"
    return Response(csv_text(csv_rows(report, data)), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
