"""A mailing's live count from memory (issue 17): the recipients a mailing can reach, as compressed bitmaps of
their `audience_no` (migration 0014), so a count of any combination of filters is a few bitmap operations instead
of PostgreSQL visiting every matching index entry (0.5 s for 774,000 people on two loaded cores).

Kept exactly live from the database, never from events: a trigger stamps each recipient's row with the writing
transaction's id (`audience_xid`) whenever something a count reads changes, and a deleted row leaves a tombstone
with the deleting transaction's id. Before each count the index refreshes: one statement reads its own snapshot
and every row and tombstone stamped by a transaction the previous refresh's snapshot could not see (one still
running then, in its xip list, or one begun after it, at or above its xmax), and each is applied whole (the member
is taken out of every bitmap and put back by its current state), so applying one twice is harmless. Whatever a
transaction running at a refresh commits later is read by the next one: commits out of order are never missed (a
sequence would be). Not "every id at or above the last xmin": xmin is the whole cluster's, and one long
transaction anywhere (a dump, a bulk load in another database) would make every refresh re-read all that was
written since it began. Decision 0013 says why, and how tombstones are pruned.

Each instance of the service keeps its own index, loaded in the background when it starts; until it is loaded,
or if loading or a refresh failed, `count` answers None and the caller counts in SQL.
"""

from __future__ import annotations

import asyncio
import gc
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pyroaring import BitMap
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.domain import MailingAudience
from shared.logging import get_logger

log = get_logger(__name__)

DAY_US = 86_400_000_000
_UTC_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
NULL_TS = -(2**63)  # no timestamp (NULL)
LOAD_BATCH = 100_000  # numbers a load reads at once
REFRESH_INTERVAL_S = 5.0  # a refresh between counts keeps the next count's delta small
PRUNE_INTERVAL_S = 3600.0

# What a count needs of a recipient, timestamps as microseconds since the epoch (exact: extract gives a numeric).
_STATE = (
    f"audience_no, ({tables.AUDIENCE}) AS reachable, region_id, group_ids, subteam_ids, engagement_level, "
    "interests, (extract(epoch FROM joined_at) * 1000000)::bigint AS joined_us, "
    "(extract(epoch FROM took_part_at) * 1000000)::bigint AS took_part_us"
)
_NO_STATE = (
    "NULL::boolean AS reachable, NULL::text AS region_id, NULL::text[] AS group_ids, NULL::text[] AS subteam_ids, "
    "NULL::text AS engagement_level, NULL::text[] AS interests, NULL::bigint AS joined_us, "
    "NULL::bigint AS took_part_us"
)
# One statement, so one snapshot: the snapshot itself, the generation (a TRUNCATE) and the prune horizon, then
# every row and tombstone stamped by a transaction the last refresh's snapshot did not see.
REFRESH_SQL = text(
    "SELECT 's' AS kind, NULL::bigint AS audience_no, pg_current_snapshot()::text AS snapshot, "
    "generation, prune_horizon::text AS horizon, " + _NO_STATE + " FROM audience_index_state "
    # Each condition its own branch, so each is an index range scan: with an OR, the planner scanned the whole
    # index on audience_xid and filtered it.
    f"UNION ALL SELECT 'r', {_STATE.replace('audience_no, ', 'audience_no, NULL, NULL, NULL, ', 1)} "
    "FROM recipients WHERE audience_xid >= CAST(:xmax AS xid8) "
    f"UNION ALL SELECT 'r', {_STATE.replace('audience_no, ', 'audience_no, NULL, NULL, NULL, ', 1)} "
    "FROM recipients WHERE audience_xid = ANY(CAST(:xip AS xid8[])) "
    "UNION ALL SELECT 'd', audience_no, NULL, NULL, NULL, " + _NO_STATE + " FROM audience_tombstones "
    "WHERE xid >= CAST(:xmax AS xid8) "
    "UNION ALL SELECT 'd', audience_no, NULL, NULL, NULL, " + _NO_STATE + " FROM audience_tombstones "
    "WHERE xid = ANY(CAST(:xip AS xid8[]))"
)
START_SQL = text(
    "SELECT pg_current_snapshot()::text AS snapshot, generation, prune_horizon::text AS horizon, "
    "(SELECT max(audience_no) FROM recipients) AS last FROM audience_index_state"
)
# A load's batch (a range of numbers) grouped by PostgreSQL, so Python gets an array of numbers a bitmap, not a row
# a member: who can be reached, by unit, level and interest, and by join and participation day with each member's
# exact timestamp (in the same order as the numbers).
LOAD_SQL = text(
    f"WITH m AS MATERIALIZED (SELECT {_STATE} FROM recipients "
    f"WHERE audience_no > :low AND audience_no <= :high AND {tables.AUDIENCE}) "
    "SELECT 'reachable' AS kind, NULL AS key, array_agg(audience_no) AS numbers, NULL::bigint[] AS stamps FROM m "
    "UNION ALL SELECT 'unit', u, array_agg(DISTINCT audience_no), NULL FROM m, "
    "unnest(region_id::text || group_ids || subteam_ids) AS u WHERE u IS NOT NULL GROUP BY u "
    "UNION ALL SELECT 'level', engagement_level, array_agg(audience_no), NULL FROM m "
    "WHERE engagement_level IS NOT NULL GROUP BY engagement_level "
    "UNION ALL SELECT 'interest', i, array_agg(DISTINCT audience_no), NULL FROM m, unnest(interests) AS i GROUP BY i "
    "UNION ALL SELECT 'joined', NULL, array_agg(audience_no ORDER BY audience_no), "
    "array_agg(joined_us ORDER BY audience_no) FROM m WHERE joined_us IS NOT NULL "
    "UNION ALL SELECT 'took_part', NULL, array_agg(audience_no ORDER BY audience_no), "
    "array_agg(took_part_us ORDER BY audience_no) FROM m WHERE took_part_us IS NOT NULL"
)
# Tombstones a day old that every refresh since has read (decision 0013): gone, and the horizon raised past them;
# an instance whose last snapshot's xmin is at or below the horizon may have missed one and loads afresh.
PRUNE_SQL = text(
    "WITH gone AS (DELETE FROM audience_tombstones WHERE deleted_at < now() - interval '1 day' "
    "AND xid < pg_snapshot_xmin(pg_current_snapshot()) RETURNING xid) "
    "UPDATE audience_index_state SET prune_horizon = GREATEST(prune_horizon, (SELECT max(xid) FROM gone)) "
    "WHERE EXISTS (SELECT 1 FROM gone)"
)


def epoch_micros(moment: datetime) -> int:
    """A timezone-aware moment as integer microseconds since 1970-01-01 UTC."""
    return (moment - _UTC_EPOCH) // timedelta(microseconds=1)


def _add_to(bitmaps: dict[Any, BitMap], key: Any, numbers: Iterable[int]) -> None:
    """Put `numbers` in the bitmap of `key`, made when it is the key's first."""
    bm = bitmaps.get(key)
    if bm is None:
        bitmaps[key] = BitMap(numbers)
    else:
        bm.update(numbers)


class _Timeline:
    """Members by the day of a timestamp (a bitmap a day) and each member's exact timestamp, so "at or after a
    moment" is the days after its day whole and, of its own day, those at or after it to the microsecond."""

    def __init__(self) -> None:
        self.days: dict[int, BitMap] = {}
        self.at = array("q")

    def reserve(self, no: int) -> None:
        """Room in `at` for member `no` (doubling, so a load's members cost few extensions)."""
        if no >= len(self.at):
            self.at.extend([NULL_TS] * (max(no + 1, len(self.at) * 2) - len(self.at)))

    def set_many(self, numbers: list[int], stamps: list[int]) -> None:
        """Members (ascending) and their timestamps, none of them here yet."""
        self.reserve(numbers[-1])
        at = self.at
        by_day: dict[int, list[int]] = defaultdict(list)
        for no, us in zip(numbers, stamps, strict=True):
            at[no] = us
            by_day[us // DAY_US].append(no)
        self.add_many(by_day)

    def add_many(self, by_day: dict[int, list[int]]) -> None:
        for day, numbers in by_day.items():
            _add_to(self.days, day, numbers)

    def forget(self, numbers: Iterable[int]) -> None:
        """Take members out of their day (found by their timestamp) and forget the timestamp."""
        for no in numbers:
            if no < len(self.at) and self.at[no] != NULL_TS:
                day = self.at[no] // DAY_US
                bm = self.days.get(day)
                if bm is not None:
                    bm.discard(no)
                    if not bm:
                        del self.days[day]
                self.at[no] = NULL_TS

    def since(self, moment_us: int) -> BitMap:
        """Members whose timestamp is at or after `moment_us` (never those without one)."""
        first = moment_us // DAY_US
        whole = [bm for day, bm in self.days.items() if day > first]
        found = BitMap.union(*whole) if whole else BitMap()
        boundary = self.days.get(first)
        if boundary is not None:
            at = self.at
            found.update([no for no in boundary if at[no] >= moment_us])
        return found

    def nbytes(self) -> int:
        return sum(_bitmap_bytes(bm) for bm in self.days.values()) + self.at.itemsize * len(self.at)


def _bitmap_bytes(bm: BitMap) -> int:
    s = bm.get_statistics()
    return int(s["n_bytes_array_containers"] + s["n_bytes_bitset_containers"] + s["n_bytes_run_containers"])


@dataclass
class _Snapshot:
    """What a refresh needs of the last one: its snapshot (xmin:xmax:xip), the table's generation, the horizon."""

    xmin: int
    xmax: int
    xip: list[int]
    generation: int
    horizon: int


class _Bitmaps:
    """The index itself: who can be reached, and by unit (region, group or sub-team alike), level, interest, join
    day and last participation day."""

    def __init__(self) -> None:
        self.reachable = BitMap()
        self.units: dict[str, BitMap] = {}
        self.levels: dict[str, BitMap] = {}
        self.interests: dict[str, BitMap] = {}
        self.joined = _Timeline()
        self.took_part = _Timeline()

    def _keyed(self) -> Iterable[dict[str, BitMap]]:
        return (self.units, self.levels, self.interests)

    def add_rows(self, rows: Iterable[Any]) -> int:
        """Add members by their state (rows of `_STATE`; the unreachable are left out). Fast for a batch: each
        bitmap is updated once."""
        reach: list[int] = []
        by_key: tuple[dict[str, list[int]], ...] = (defaultdict(list), defaultdict(list), defaultdict(list))
        units, levels, interests = by_key
        joined_days: dict[int, list[int]] = defaultdict(list)
        took_days: dict[int, list[int]] = defaultdict(list)
        n = 0
        for row in rows:
            n += 1
            if not row.reachable:
                continue
            no = row.audience_no
            reach.append(no)
            for unit in {row.region_id, *row.group_ids, *row.subteam_ids}:
                if unit is not None:
                    units[unit].append(no)
            if row.engagement_level is not None:
                levels[row.engagement_level].append(no)
            for interest in set(row.interests):
                interests[interest].append(no)
            for timeline, days, us in (
                (self.joined, joined_days, row.joined_us),
                (self.took_part, took_days, row.took_part_us),
            ):
                timeline.reserve(no)
                if us is None:
                    timeline.at[no] = NULL_TS
                else:
                    timeline.at[no] = us
                    days[us // DAY_US].append(no)
        self.reachable.update(reach)
        for target, source in zip(self._keyed(), by_key, strict=True):
            for key, numbers in source.items():
                _add_to(target, key, numbers)
        self.joined.add_many(joined_days)
        self.took_part.add_many(took_days)
        return n

    def add_grouped(self, rows: Iterable[Any]) -> None:
        """Add a load's batch (rows of LOAD_SQL: numbers grouped by what they share)."""
        keyed = {"unit": self.units, "level": self.levels, "interest": self.interests}
        for row in rows:
            if not row.numbers:
                continue
            if row.kind == "reachable":
                self.reachable.update(row.numbers)
            elif row.kind in keyed:
                _add_to(keyed[row.kind], row.key, row.numbers)
            else:
                timeline = self.joined if row.kind == "joined" else self.took_part
                timeline.set_many(row.numbers, row.stamps)

    def forget(self, numbers: BitMap) -> None:
        """Take members out of every bitmap they are in."""
        if not numbers:
            return
        self.reachable.difference_update(numbers)
        for keyed in self._keyed():
            for key in [k for k, bm in keyed.items() if bm.intersect(numbers)]:
                bm = keyed[key]
                bm.difference_update(numbers)
                if not bm:
                    del keyed[key]
        self.joined.forget(numbers)
        self.took_part.forget(numbers)

    def _any(self, keyed: dict[str, BitMap], keys: Iterable[str]) -> BitMap:
        found = [keyed[k] for k in keys if k in keyed]
        return BitMap.union(*found) if found else BitMap()

    def count(self, scope_type: str, scope_id: str | None, audience: MailingAudience, now: datetime) -> int:
        """How many reachable members the audience written in the scope picks out: the same as
        mailings.count_audience at `now`."""
        if scope_type != "network" and not scope_id:
            return 0
        chosen: list[BitMap] = []
        if scope_type != "network" and scope_id:
            chosen.append(self.units.get(scope_id, BitMap()))
        if audience.unit_ids:
            chosen.append(self._any(self.units, audience.unit_ids))
        if audience.interests:
            chosen.append(self._any(self.interests, audience.interests))
        if audience.levels:
            chosen.append(self._any(self.levels, audience.levels))
        if audience.joined_within_days:
            chosen.append(self.joined.since(epoch_micros(now - timedelta(days=audience.joined_within_days))))
        if audience.took_part_within_days:
            chosen.append(self.took_part.since(epoch_micros(now - timedelta(days=audience.took_part_within_days))))
        excluded = [self.units[u] for u in audience.exclude_unit_ids if u in self.units]
        if audience.quiet_for_days:  # never took part, or not since then
            excluded.append(self.took_part.since(epoch_micros(now - timedelta(days=audience.quiet_for_days))))
        chosen.sort(key=len)
        if not chosen and not excluded:
            return len(self.reachable)
        if not excluded:
            if len(chosen) == 1:
                return self.reachable.intersection_cardinality(chosen[0])
            found = chosen[0] & self.reachable
            for bm in chosen[1:-1]:
                found &= bm
            return found.intersection_cardinality(chosen[-1])
        found = self.reachable.copy() if not chosen else chosen[0] & self.reachable
        for bm in chosen[1:]:
            found &= bm
        for bm in excluded:
            found -= bm
        return len(found)

    def nbytes(self) -> int:
        keyed = sum(_bitmap_bytes(bm) for k in self._keyed() for bm in k.values())
        return _bitmap_bytes(self.reachable) + keyed + self.joined.nbytes() + self.took_part.nbytes()


def _xid(value: str | None) -> int:
    return int(value) if value is not None else 0


def _snapshot(head: Any) -> _Snapshot:
    """From pg_current_snapshot()'s text, 'xmin:xmax:xip,xip,...', and the state row."""
    xmin, xmax, xip = head.snapshot.split(":")
    return _Snapshot(int(xmin), int(xmax), [int(x) for x in xip.split(",") if x], head.generation, _xid(head.horizon))


class AudienceIndex:
    """One instance's audience index: loaded once, refreshed before every count (see the module's docstring)."""

    def __init__(self, sessions: Callable[[], AsyncSession], *, load_batch: int = LOAD_BATCH) -> None:
        self.sessions = sessions
        self.load_batch = load_batch
        self._bitmaps: _Bitmaps | None = None
        self._snapshot: _Snapshot | None = None
        self._lock = asyncio.Lock()
        self._last_prune = 0.0
        self._frozen = False
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._bitmaps is not None

    def nbytes(self) -> int:
        """Roughly what the bitmaps and timestamp arrays hold in memory."""
        return self._bitmaps.nbytes() if self._bitmaps is not None else 0

    async def run(self) -> None:
        """The service's background task: load, then refresh now and then (a count refreshes anyway) and prune
        old tombstones hourly. A failure is logged, the counts fall back to SQL, and the load is tried again."""
        while True:
            try:
                if self._bitmaps is None:
                    await self.load()
                else:
                    await self.refresh()
                if time.monotonic() - self._last_prune > PRUNE_INTERVAL_S:
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("audience_index_failed", error=repr(exc))
                self._bitmaps = None
            await asyncio.sleep(REFRESH_INTERVAL_S)

    async def load(self) -> None:
        """Read every reachable recipient in batches. The watermark is a snapshot taken before the first batch:
        whatever changes while the batches are read is stamped by a transaction it did not see, read again by the
        first refresh."""
        async with self._lock:
            started = time.monotonic()
            bitmaps = _Bitmaps()
            async with self.sessions() as session:
                head = (await session.execute(START_SQL)).one()
                await session.commit()
                for low in range(0, head.last or 0, self.load_batch):
                    batch = {"low": low, "high": low + self.load_batch}
                    bitmaps.add_grouped((await session.execute(LOAD_SQL, batch)).all())
                    await session.commit()
                    await asyncio.sleep(0)  # let requests in between batches
            n = len(bitmaps.reachable)
            self._bitmaps = bitmaps
            self._snapshot = _snapshot(head)
            if not self._frozen:
                # What the process holds once loaded (its modules, the app, the index) is kept for good: out of
                # the collector's way, or a full collection every few hundred refreshes walks all of it (0.6-0.7 s
                # on this loaded machine, the p95 of counts after a busy minute). Once per process.
                gc.collect()
                gc.freeze()
                self._frozen = True
            self.load_seconds = time.monotonic() - started
            log.info("audience_index_loaded", members=n, seconds=round(self.load_seconds, 2), bytes=self.nbytes())

    async def refresh(self, session: AsyncSession | None = None) -> bool:
        """Apply every change committed since the last refresh. False when the index is not loaded or must be
        loaded afresh (the table was truncated, or tombstones it had not read were pruned)."""
        async with self._lock:
            if self._bitmaps is None or self._snapshot is None:
                return False
            unseen = {"xmax": self._snapshot.xmax, "xip": self._snapshot.xip}
            if session is None:
                async with self.sessions() as own:
                    rows = (await own.execute(REFRESH_SQL, unseen)).all()
                    await own.commit()
            else:
                rows = (await session.execute(REFRESH_SQL, unseen)).all()
            head = next(row for row in rows if row.kind == "s")
            if head.generation != self._snapshot.generation or self._snapshot.xmin <= _xid(head.horizon):
                self._bitmaps = None
                return False
            changed = [row for row in rows if row.kind != "s"]
            if changed:
                try:
                    self._bitmaps.forget(BitMap(row.audience_no for row in changed))
                    self._bitmaps.add_rows(row for row in changed if row.kind == "r")
                except Exception:
                    self._bitmaps = None
                    raise
            self._snapshot = _snapshot(head)
            return True

    async def count(
        self, session: AsyncSession, scope_type: str, scope_id: str | None, audience: MailingAudience, now: datetime
    ) -> int | None:
        """The live count at `now`, or None when the index cannot answer (the caller counts in SQL)."""
        if self._bitmaps is None:
            return None
        try:
            if not await self.refresh(session):
                return None
        except Exception as exc:
            log.warning("audience_index_refresh_failed", error=repr(exc))
            return None
        bitmaps = self._bitmaps
        if bitmaps is None:
            return None
        return bitmaps.count(scope_type, scope_id, audience, now)

    async def prune(self) -> None:
        """Delete the tombstones a day old (any instance may; the horizon tells the others)."""
        async with self.sessions() as session, session.begin():
            await session.execute(PRUNE_SQL)
        self._last_prune = time.monotonic()
