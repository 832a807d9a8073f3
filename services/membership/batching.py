"""Join forms submitted at the same moment are stored together: group commit for the join form.

A join is one short transaction of nine round trips to PostgreSQL (check-out, BEGIN, the limits, the member,
groups, consent, key, outbox, COMMIT). When many people join at once (a campaign email goes out, a speaker
says "join now" to a hall), each waiting in its own transaction mostly waits its turn for CPU and for the
round trips. The batcher lets a few writers run at once; a submission that arrives while they are busy waits
for the next free writer, which takes every submission waiting (up to `max_batch`) and stores them with
`Joins.submit_joins`: the same round trips for the lot, one COMMIT. Each person still gets their
answer only after their join is committed, and the effects are those of the submissions one after another.

If a batch fails as a whole (a database error), its submissions are retried one by one, so one bad
submission fails alone and the others are stored.
"""

from __future__ import annotations

import asyncio
from collections import deque

from services.membership.domain import JoinApplication
from services.membership.joins import Joins, JoinSubmission, PendingJoin
from shared.logging import get_logger
from shared.uow import current_correlation_id

log = get_logger(__name__)


class JoinBatcher:
    def __init__(self, joins: Joins, *, writers: int = 2, max_batch: int = 64) -> None:
        self.joining = joins
        self.max_writers = writers
        self.max_batch = max_batch
        self._waiting: deque[tuple[PendingJoin, asyncio.Future[JoinSubmission]]] = deque()
        self._writers: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.joins = 0

    async def submit(self, application: JoinApplication, *, ip: str) -> JoinSubmission:
        """Store a valid join form (see `Joins.submit_joins`); returns once it is committed."""
        done: asyncio.Future[JoinSubmission] = asyncio.get_running_loop().create_future()
        self._waiting.append((PendingJoin(application, ip, current_correlation_id()), done))
        if len(self._writers) < self.max_writers:
            task = asyncio.create_task(self._write(), name="join-batch-writer")
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        # Shielded: a person who closes the page does not cancel the others' batch; their join is still stored.
        return await asyncio.shield(done)

    async def _write(self) -> None:
        while self._waiting:
            batch = [self._waiting.popleft() for _ in range(min(len(self._waiting), self.max_batch))]
            self.batches += 1
            self.joins += len(batch)
            try:
                results = await self.joining.submit_joins([pending for pending, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc=exc)
                    continue
                log.warning("a batch of joins failed: storing them one by one", joins=len(batch), error=repr(exc))
                for pending, done in batch:
                    try:
                        [result] = await self.joining.submit_joins([pending])
                        _settle(done, result)
                    except Exception as one_exc:
                        _settle(done, exc=one_exc)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                _settle(done, result)


def _settle(
    done: asyncio.Future[JoinSubmission], result: JoinSubmission | None = None, exc: Exception | None = None
) -> None:
    if done.done():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        assert result is not None
        done.set_result(result)
