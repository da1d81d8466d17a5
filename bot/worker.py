"""``appealwatch worker``: a classification process beside the bot, on this machine or another.

With ``[pipeline] classify_in_bot = false`` the bot only stores posts and sends alerts; any
number of workers share the classification through the database (PostgreSQL):

1. **claim**: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`` hands each worker
   its own batch of 'new' posts with a lease (``[pipeline] lease``); two workers never wait
   on, or take, the same post;
2. **classify**: the same code as the bot's pipeline (``score_stored``), reposts reusing a
   classified twin;
3. **write**: only posts the worker still holds are written (``save_classifications(worker=)``),
   so a worker that was too slow, or was killed mid-batch, never writes a second result: its
   lease runs out and another worker classifies the posts;
4. **notify**: ``NOTIFY appealwatch_classified`` with the ids wakes the bot, which groups
   stories, updates its search index and fans out alerts (``Pipeline.take_classified``).

Workers sleep on ``LISTEN appealwatch_new`` (the bot's NOTIFY after storing), and look again
every ``[pipeline] poll`` seconds for leases that ran out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.pipeline import HealingPolicy, Scorer, failure_reason, score_stored
from bot.storage import Storage
from bot.storage.postgres import CHANNEL_CLASSIFIED, CHANNEL_NEW

log = logging.getLogger(__name__)

def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class WorkerStats:
    claimed: int = 0
    classified: int = 0
    lost: int = 0  # results not written: the lease had run out and another worker took the posts
    failed: int = 0
    batches: int = 0


class ClassificationWorker:
    """Claims, classifies and writes posts until ``stop`` is set."""

    def __init__(self, storage: Storage, scorer: Scorer, *, name: str | None = None, batch_size: int = 16,
                 lease: float = 120.0, poll: float = 5.0, healing: HealingPolicy | None = None) -> None:
        self.storage = storage
        self.scorer = scorer
        self.name = name or default_worker_name()
        self.batch_size = batch_size
        self.lease = lease
        self.poll = poll
        self.healing = healing or HealingPolicy()
        self.stats = WorkerStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
        self._wake = asyncio.Event()
        self._rng = random.Random()

    async def run(self, stop: asyncio.Event) -> None:
        if self.storage.backend == "postgresql":
            await self.storage.listen(CHANNEL_NEW, lambda _payload: self._wake.set())
        log.info("worker %s: claiming up to %d posts at a time, lease %.0f s", self.name, self.batch_size, self.lease)
        try:
            while not stop.is_set():
                self._wake.clear()  # before claiming: a NOTIFY that arrives during the claim is not lost
                try:
                    claimed = await self.step()
                except self.storage.transient_errors as exc:  # the database restarting, a deadlock: try again
                    log.warning("worker %s: database error (%s); trying again in %.1f s", self.name, exc, self.poll)
                    claimed = 0
                if not claimed:
                    await self._idle(stop)
        finally:
            released = await self.storage.release_claims(self.name)
            if released:
                log.info("worker %s: gave back %d unfinished posts", self.name, released)
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def step(self) -> int:
        """Claim one batch and finish it; returns how many posts were claimed (0: nothing to do)."""
        ids = await self.storage.claim_posts(self.name, self.batch_size, lease=self.lease,
                                             max_attempts=self.healing.attempts)
        if not ids:
            return 0
        self.stats.claimed += len(ids)
        renewing = asyncio.create_task(self._renew(ids), name="renew-claims")
        try:
            await self._classify(ids)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        return len(ids)

    async def _renew(self, ids: list[int]) -> None:
        """While the batch is classified, its lease is renewed every third of it: a slow batch is not a dead worker."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.storage.renew_claims(self.name, ids, lease=self.lease)
            except self.storage.transient_errors as exc:
                log.warning("worker %s: could not renew its claims (%s)", self.name, exc)

    async def _classify(self, ids: list[int]) -> None:
        try:
            scored = await score_stored(self.storage, self.scorer, ids, self._executor)
        except Exception as exc:
            if len(ids) > 1:  # one bad post never takes its batch down
                log.warning("worker %s: a batch of %d failed (%s); one by one", self.name, len(ids), failure_reason(exc))
                for pid in ids:
                    await self._classify([pid])
                return
            self.stats.failed += 1
            counts = await self.storage.record_failures(ids, failure_reason(exc), max_attempts=self.healing.attempts)
            failures = counts.get(ids[0], self.healing.attempts)
            log.warning("worker %s: post %d failed (%d of %d attempts): %s", self.name, ids[0], failures,
                        self.healing.attempts, failure_reason(exc))
            # given back with a backoff: any worker tries it again then ('error' after the last attempt)
            retry_at = datetime.now(UTC) + timedelta(seconds=self.healing.delay(failures, self._rng))
            await self.storage.release_claims(self.name, ids, retry_at=retry_at)
            return
        from bot.crashpoints import crash_point

        crash_point("worker_scored")  # tests: SIGKILL with a batch classified and nothing written
        saved = await self.storage.save_classifications(scored.items, worker=self.name)
        self.stats.batches += 1
        self.stats.classified += len(saved)
        self.stats.lost += len(scored.items) - len(saved)
        if saved:
            await self.storage.notify(CHANNEL_CLASSIFIED, ",".join(map(str, saved)))
