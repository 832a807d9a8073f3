"""Load a sample network into a running Groundswell through the services' own APIs (`make demo`).

What it makes: the Midlands network's regions, local groups, sub-teams and partners are already there
(membership seeds them); this adds the sample MP dataset, a campaign with a petition, a pledge, a letter
to your MP and a share ask, a conference with sessions, an online meeting per region, and two dozen
members who joined through the public form (their welcome emails are in the catcher). Running it again
adds another campaign and another set of meetings; members are matched by email, so none is duplicated.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from deploy.local import launcher
from shared.auth import OrganiserScope, issue

REPO = Path(__file__).resolve().parents[2]
MPS_SAMPLE = REPO / "services" / "campaigns" / "data" / "mps_sample.csv"
REGIONS = (
    ("birmingham-black-country", "Birmingham and the Black Country"),
    ("coventry-warwickshire", "Coventry and Warwickshire"),
    ("east-midlands", "East Midlands"),
)
PEOPLE = (
    ("Ama Mensah", "B1 1AA"),
    ("Tariq Hussain", "B15 2TT"),
    ("Joy Campbell", "B20 3AA"),
    ("Ravi Patel", "WV1 1AA"),
    ("Grace Adeyemi", "WS1 1AA"),
    ("Liam Murphy", "DY1 1AA"),
    ("Nadia Rahman", "CV1 5FB"),
    ("Kwame Boateng", "CV32 4AA"),
    ("Sofia Kowalski", "CV11 4AA"),
    ("Yusuf Ali", "NG1 5FS"),
    ("Hannah Lewis", "NG7 2RD"),
    ("Precious Moyo", "LE1 1AA"),
    ("Imran Khan", "LE2 1AA"),
    ("Chloe Brown", "DE1 1AA"),
    ("Marcus Green", "DE22 1AA"),
    ("Fatima Begum", "B11 1AA"),
    ("Daniel Okoro", "B12 9AA"),
    ("Zara Ahmed", "B21 9AA"),
    ("Ellie Walsh", "WV3 0AA"),
    ("Samuel Osei", "CV2 2AA"),
    ("Aisha Bello", "NG3 1AA"),
    ("Tom Harris", "LE3 1AA"),
    ("Priya Sharma", "DE23 1AA"),
    ("Jamal Edwards", "B6 4AA"),
)
LEVELS = ("informed", "take_action", "organise")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.demo", description=__doc__)
    parser.add_argument("--base-url", default=launcher.GATEWAY_URL, help="the gateway (default: the local one)")
    args = parser.parse_args(argv)
    if args.base_url == launcher.GATEWAY_URL:
        launcher.ensure_up(services=True)
    token = issue(launcher.secret_key(), OrganiserScope("demo-loader", "network", None))
    organiser = {"Authorization": f"Bearer {token}"}
    run = uuid.uuid4().hex[:4]
    with httpx.Client(base_url=args.base_url, timeout=60) as client:
        mps = client.put("/campaigns/api/mps", content=MPS_SAMPLE.read_bytes(), headers=organiser)
        _check(mps, "load the MP dataset")
        print(f"MP dataset: {mps.json()}")

        campaign = client.post(
            "/campaigns/api/campaigns",
            headers=organiser,
            json={
                "title": f"Equal care: end racism in healthcare ({run})",
                "summary": "Black and Asian patients and NHS staff face racism every day. We can change that.",
                "goal": "The NHS collects, publishes and acts on data about racism in care and employment.",
                "issues": ["racism in healthcare"],
                "asks": [
                    {
                        "kind": "petition",
                        "title": "Sign the petition",
                        "addressee": "The Secretary of State for Health",
                        "body": "Collect and publish the data on racism in the NHS, and act on it.",
                        "goal": 5000,
                    },
                    {
                        "kind": "pledge",
                        "title": "Make a pledge",
                        "body": "What will you do to challenge racism in care?",
                    },
                    {
                        "kind": "write_to_mp",
                        "title": "Write to your MP",
                        "letter_subject": "Racism in healthcare",
                        "body": "Dear {mp_name},\n\nAs your constituent in {constituency} I ask you to press the "
                        "government to act on racism in the NHS.\n\nYours sincerely,\n{name}, {postcode}",
                    },
                    {"kind": "share", "title": "Share the campaign", "body": "Equal care for everyone. Sign now."},
                ],
            },
        )
        _check(campaign, "launch the campaign")
        print(f"Campaign: {args.base_url}/campaigns/{campaign.json()['id']}")

        start = (datetime.now(UTC) + timedelta(days=30)).replace(hour=9, minute=30, second=0, microsecond=0)
        conference = client.post(
            "/meetings",
            headers=organiser,
            json={
                "title": f"Midlands Anti-Racism Conference ({run})",
                "kind": "in_person",
                "scope_type": "network",
                "description": "A day of workshops, speakers and planning for the year ahead.",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=7)).isoformat(),
                "venue": "Birmingham Council House, Victoria Square, Birmingham B1 1BB",
                "capacity": 300,
            },
        )
        _check(conference, "schedule the conference")
        conference_id = conference.json()["id"]
        for i, title in enumerate(("Racism in healthcare: the evidence", "Organising at work", "Policing and us")):
            session_start = start + timedelta(hours=1 + 2 * i)
            _check(
                client.post(
                    "/meetings",
                    headers=organiser,
                    json={
                        "title": title,
                        "kind": "in_person",
                        "scope_type": "network",
                        "parent_meeting_id": conference_id,
                        "starts_at": session_start.isoformat(),
                        "ends_at": (session_start + timedelta(hours=1)).isoformat(),
                        "venue": "Birmingham Council House",
                        "capacity": 100,
                    },
                ),
                f"schedule the session {title!r}",
            )
        print(f"Conference: {args.base_url}/events/{conference_id}")

        for n, (slug, name) in enumerate(REGIONS):
            online = (datetime.now(UTC) + timedelta(days=7 + n)).replace(hour=19, minute=0, second=0, microsecond=0)
            body = {
                "title": f"{name}: monthly online meeting ({run})",
                "kind": "online",
                "scope_type": "region",
                "scope_id": _unit_id("region", slug),
                "starts_at": online.isoformat(),
                "ends_at": (online + timedelta(hours=1)).isoformat(),
                "online_url": f"https://meet.example.org/{slug}",
                "capacity": 80,
            }
            response = client.post("/meetings", headers=organiser, json=body)
            _check(response, f"schedule the online meeting of {name}")
        print(f"Meetings: {args.base_url}/events")

        joined = 0
        for i, (name, postcode) in enumerate(PEOPLE):
            email = f"{name.lower().replace(' ', '.')}@demo.example.org"
            response = client.post(
                "/join",
                data={
                    "name": name,
                    "email": email,
                    "postcode": postcode,
                    "email_consent": "yes",
                    "engagement_level": LEVELS[i % 3],
                },
            )
            joined += response.status_code in (200, 303)
        print(f"Members joined through the form: {joined} (welcome emails at {launcher.SMTP_CATCHER_URL})")
    return 0


def _unit_id(kind: str, slug: str) -> str:
    from services.membership.seeds import unit_id

    return unit_id(kind, slug)


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        print(f"demo: could not {what}: {response.status_code} {response.text[:500]}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    raise SystemExit(main())
