"""Moving the members to a newly saved engagement ladder, in chunks, in the background (issue 20).

Saving a ladder records it and a `ladder_changes` row at once (`save`); the members whose level it changes are then
moved a chunk at a time (`step`), each chunk one transaction: its members' rows locked as the per-member recompute
locked them (a consumer counting a fact for one of them is waited for), their moves written, each published as
EngagementLevelChanged through the outbox, and the change's cursor and progress moved, together. A chunk cut short
(the service killed or restarted) is rolled back whole and done again by the next pass, by whichever instance: a move
is committed once with its event, and a member already at the new level is not moved again, so each move is published
once. The service's background loop (`run`) works through the change in progress; the save itself does the first
chunk, so a small change is done before the organiser's page answers (the same code either way).

One change moves at a time: a new save supersedes the one in progress (its ladder is the one in force; the members
the old one had not reached are moved by the new one's pass, which visits every member whose level is wrong).
Why it is correct against consumers: docs/decisions/0014-ladder-moves-in-the-background.md.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.campaigns import queries
from services.campaigns.domain import LadderRung
from shared.events import catalog as ev
from shared.logging import get_logger
from shared.uow import UnitsOfWork

log = get_logger(__name__)

CHUNK = 1_000  # members moved a transaction (LADDER_MOVE_CHUNK)
EMIT_CHUNK = 1_000  # EngagementLevelChanged written to the outbox this many at a time
REASON = "the ladder changed"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LadderChange:
    """A saved ladder and how far moving the members to it has got."""

    id: uuid.UUID
    ladder: tuple[LadderRung, ...]
    status: str  # moving | done | superseded
    expected: int  # members it moved when it was saved (what the organiser confirmed)
    moved: int
    published: int
    chunks: int
    saved_at: datetime
    finished_at: datetime | None

    @property
    def moving(self) -> bool:
        return self.status == "moving"

    @classmethod
    def of(cls, row: Any) -> LadderChange:
        return cls(row.id, tuple(LadderRung.of(r) for r in row.ladder), row.status, row.expected, row.moved,
                   row.published, row.chunks, row.saved_at, row.finished_at)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "members_to_move": self.expected, "members_moved": self.moved,
                "saved_at": self.saved_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}


class LadderMoves:
    def __init__(self, uows: UnitsOfWork, *, chunk: int = CHUNK, poll_interval_s: float = 2.0) -> None:
        self.uows = uows
        self.chunk = chunk
        self.poll_interval_s = poll_interval_s
        self.wake = asyncio.Event()

    async def save(self, ladder: Sequence[LadderRung], expected: int) -> LadderChange:
        """Put `ladder` in force and record its moves as the change in progress (superseding any other). Waits for
        every transaction applying the ladder it replaces (queries.hold_ladder)."""
        change_id = uuid.uuid4()
        async with self.uows.begin() as uow:
            await queries.hold_ladder(uow.session, exclusive=True)
            await queries.replace_ladder(uow.session, ladder)
            if await queries.start_ladder_change(uow.session, change_id, ladder, expected, utcnow()):
                log.info("a newer ladder superseded the one whose members were moving")
            row = await queries.ladder_change(uow.session, change_id)
        assert row is not None
        return LadderChange.of(row)

    async def step(self, change_id: uuid.UUID | None = None) -> LadderChange | None:
        """Move one chunk of the change in progress (`change_id`'s, waiting for another instance's chunk of it;
        without one, whichever is in progress and not being worked on). None when there was nothing to move."""
        async with self.uows.begin() as uow:
            session = uow.session
            await queries.hold_ladder(session)  # before any member's row, as the consumers take it
            row = await queries.moving_ladder_change(session, change_id, skip_locked=change_id is None)
            if row is None:
                return None
            ladder = LadderChange.of(row).ladder
            ids = await queries.next_to_move(session, ladder, row.cursor, self.chunk)
            moved = await queries.move_to_ladder(session, ladder, ids, utcnow())
            # As domain.assess: a first level at the bottom of the ladder (where everyone starts) is not news.
            events = [ev.EngagementLevelChanged(member_id=member_id, level=level, previous_level=previous,
                                                reason=REASON)
                      for member_id, previous, level in moved if previous is not None or level != ladder[0].level]
            for start in range(0, len(events), EMIT_CHUNK):
                await uow.emit(*events[start:start + EMIT_CHUNK])
            # Fewer than a chunk left to move after the cursor: every member's level is the ladder's now (consumers
            # apply this ladder since it was saved, so no one moves away from it again).
            done = len(ids) < self.chunk
            row = await queries.record_ladder_chunk(session, row.id, cursor=ids[-1] if ids else row.cursor,
                                                    moved=len(moved), published=len(events), done=done, now=utcnow())
        return LadderChange.of(row)

    async def finish(self, change_id: uuid.UUID | None = None) -> LadderChange | None:
        """Move chunk after chunk until the change is done (the benchmark and tests; the service uses `run`)."""
        last = None
        while (change := await self.step(change_id)) is not None:
            last = change
            if not change.moving:
                break
        return last

    async def get(self, change_id: uuid.UUID) -> LadderChange:
        async with self.uows.begin() as uow:
            row = await queries.ladder_change(uow.session, change_id)
        if row is None:
            raise LookupError(change_id)
        return LadderChange.of(row)

    async def latest(self) -> LadderChange | None:
        """The latest ladder saved and how far its moves have got (None before any was saved here)."""
        async with self.uows.begin() as uow:
            row = await queries.ladder_change(uow.session)
        return None if row is None else LadderChange.of(row)

    async def run(self) -> None:
        """The background loop: chunk after chunk while a change is in progress; else wait for a save (here) or the
        poll interval (a save on another instance, or a change left by a killed one)."""
        while True:
            try:
                change = await self.step()
                worked = change is not None and change.moving
                if change is not None and not change.moving:
                    log.info("ladder change done", moved=change.moved, published=change.published,
                             chunks=change.chunks)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a deadlock with a consumer, the database away: the chunk is done again
                log.warning("moving members to the new ladder failed; will retry", error=repr(exc))
                worked = False
            if not worked:
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=self.poll_interval_s)
                except TimeoutError:
                    pass
                self.wake.clear()
