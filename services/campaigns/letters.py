"""Letters to MPs: the organisers' MP dataset (constituencies and the postcodes that lead to them), finding a
sender's MP, and the letter they start from. Sending the letter is notifications' work (MpLetterRequested)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.campaigns import db as tables
from services.campaigns import queries
from services.campaigns.domain import (
    Constituency,
    NoConstituency,
    no_constituency_message,
    parse_mp_csv,
    render_letter,
)
from shared.uow import UnitsOfWork


class MpLetters:
    def __init__(self, uows: UnitsOfWork) -> None:
        self.uows = uows

    async def load_mp_dataset(self, csv_text: str, *, replace: bool = True) -> tuple[int, int]:
        """Load (or, with replace=False, add to) the constituencies and postcodes; returns how many of each."""
        constituencies, postcodes = parse_mp_csv(csv_text)
        c, cp = tables.constituencies, tables.constituency_postcodes
        now = datetime.now(UTC)
        async with self.uows.begin() as uow:
            session = uow.session
            if replace:
                await session.execute(delete(cp))
                await session.execute(delete(c).where(c.c.code.not_in(list(constituencies))))
            for con in constituencies.values():
                values = {"name": con.name, "mp_name": con.mp_name, "mp_party": con.mp_party,
                          "mp_email": con.mp_email, "updated_at": now}
                await session.execute(pg_insert(c).values(code=con.code, **values)
                                      .on_conflict_do_update(index_elements=[c.c.code], set_=values))
            rows = [{"postcode_key": k, "constituency_code": v} for k, v in postcodes.items()]
            for i in range(0, len(rows), 1000):
                chunk = rows[i:i + 1000]
                stmt = pg_insert(cp).values(chunk)
                await session.execute(stmt.on_conflict_do_update(
                    index_elements=[cp.c.postcode_key], set_={"constituency_code": stmt.excluded.constituency_code}))
        return len(constituencies), len(postcodes)

    async def mp_dataset_size(self) -> tuple[int, int]:
        async with self.uows.begin() as uow:
            n = (await uow.session.execute(select(func.count()).select_from(tables.constituencies))).scalar_one()
            k = (await uow.session.execute(
                select(func.count()).select_from(tables.constituency_postcodes))).scalar_one()
        return int(n), int(k)

    async def constituency_for(self, postcode: str) -> Constituency:
        async with self.uows.begin() as uow:
            found = await queries.find_constituency(uow.session, postcode)
        if found is None:
            raise NoConstituency({"postcode": no_constituency_message(postcode)})
        return found

    def letter_draft(self, ask: Any, constituency: Constituency, *, name: str, postcode: str) -> str:
        return render_letter(ask.body, mp_name=constituency.mp_name, constituency=constituency.name, name=name,
                             postcode=postcode)
