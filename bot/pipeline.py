"""store → language → classify → group into stories → alerts. No Telegram here.

Every source hands posts to :meth:`Pipeline.ingest`, which *stores first* and only
then queues the work, so a crash or a restart loses nothing: posts whose processing
did not finish are picked up again by :meth:`Pipeline.resume`. Classification runs on
a worker thread (the event loop keeps answering users) and batches posts that arrive
together, which is several times faster per post on a CPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np

from bot.domain import IncomingPost
from bot.storage import Storage
from models.language import detect_language
from models.taxonomy import Classification

log = logging.getLogger(__name__)


class ScoredLike(Protocol):
    classification: Classification
    vector: np.ndarray | None


class Scorer(Protocol):
    """What the pipeline needs from the model (``models.classifier.AppealClassifier``)."""

    def score(self, texts: Sequence[str]) -> Sequence[ScoredLike]: ...


class AlertFanout(Protocol):
    async def dispatch(self, post_ids: Sequence[int]) -> None: ...


@dataclass(slots=True)
class PipelineStats:
    stored: int = 0
    duplicates: int = 0
    edits: int = 0
    classified: int = 0
    appeals: int = 0
    batches: int = 0


class Pipeline:
    """Owns the classification worker; implements the sources' ``PostSink``."""

    def __init__(
        self,
        storage: Storage,
        scorer: Scorer,
        *,
        alerts: AlertFanout | None = None,
        batch_size: int = 32,
        linger: float = 0.02,
        story_window: timedelta = timedelta(hours=48),
        story_similarity: float = 0.94,
        on_appeal: Callable[[int, np.ndarray], None] | None = None,
    ) -> None:
        self.storage = storage
        self.scorer = scorer
        self.alerts = alerts
        self.batch_size = batch_size
        self.linger = linger
        self.story_window = story_window
        self.story_similarity = story_similarity
        self.on_appeal = on_appeal  # e.g. the semantic search index
        self.stats = PipelineStats()
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._dispatch_queue: asyncio.Queue[tuple[list[int], int]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}

    # -- PostSink ---------------------------------------------------------------------------

    async def ingest(self, posts: Sequence[IncomingPost]) -> int:
        """Store each post exactly once, then queue the new and edited ones. Returns new posts."""
        new = 0
        results = await self.storage.store_posts(posts)
        for post, result in zip(posts, results, strict=True):
            if result.is_new:
                new += 1
                self.stats.stored += 1
            elif result.edited:
                self.stats.edits += 1
            else:
                self.stats.duplicates += 1
                continue
            if not post.text.strip():
                # media without text: stored (and searchable by channel/date), nothing to classify
                await self.storage.save_language_only(result.post_id, "other", 0.0)
                continue
            self._enqueue(result.post_id)
        return new

    async def ingest_and_wait(self, post: IncomingPost, timeout: float = 120.0, *, answered_chat: int | None = None) -> int:
        """Store one post and wait until it is classified (a user forwarded it and waits).

        ``answered_chat`` gets the classification as a reply, so it gets no alert for it too.
        """
        result = await self.storage.store_post(post)
        if answered_chat is not None:
            await self.storage.claim_alert(answered_chat, result.post_id, None, status="skipped")
        if not post.text.strip():
            await self.storage.save_language_only(result.post_id, "other", 0.0)
            return result.post_id
        if result.is_new or result.edited or (await self.storage.get_post(result.post_id)) is None:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(result.post_id, []).append(waiter)
            self._enqueue(result.post_id)
            await asyncio.wait_for(waiter, timeout)
        else:
            post_row = await self.storage.get_post(result.post_id)
            if post_row is not None and post_row.appeal is None:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(result.post_id, []).append(waiter)
                self._enqueue(result.post_id)
                await asyncio.wait_for(waiter, timeout)
        return result.post_id

    async def last_message_id(self, channel: str) -> int | None:
        return await self.storage.last_message_id(channel)

    async def record_fetch(self, channel: str, *, ok: bool, error: str | None = None, when: datetime | None = None) -> None:
        await self.storage.record_fetch(channel, ok=ok, error=error, when=when)

    # -- worker -------------------------------------------------------------------------------

    def _enqueue(self, post_id: int) -> None:
        self._inflight += 1
        self._idle.clear()
        self._queue.put_nowait(post_id)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="classification-worker")
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="alert-fanout")

    async def stop(self) -> None:
        for task in (self._worker, self._dispatcher):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._worker = self._dispatcher = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def pending(self) -> int:
        """Posts stored but not yet classified and dispatched."""
        return self._inflight

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until every queued post is classified and dispatched (tests, import, shutdown)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def resume(self) -> int:
        """Finish posts a crash interrupted: classify the 'new', fan out the 'classified'."""
        pending = await self.storage.unfinished_posts()
        to_dispatch = [pid for pid, state in pending if state == "classified"]
        for pid, state in pending:
            if state == "new":
                self._enqueue(pid)
        if to_dispatch:
            await self._dispatch(to_dispatch)
        if pending:
            log.info("resumed %d unfinished posts", len(pending))
        return len(pending)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self.linger
            while len(batch) < self.batch_size:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            classified: list[int] = []
            try:
                classified = await self._process(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The posts stay 'new' in the database and are retried on the next resume().
                log.exception("processing a batch of %d posts failed", len(batch))
            finally:
                for pid in batch:
                    for fut in self._waiters.pop(pid, []):
                        if not fut.done():
                            fut.set_result(None)
            # Fan-out runs beside classification, so a slow recipient never delays the next batch.
            self._dispatch_queue.put_nowait((classified, len(batch)))

    async def _dispatch_loop(self) -> None:
        while True:
            ids, count = await self._dispatch_queue.get()
            try:
                if ids:
                    await self._dispatch(ids)
            except asyncio.CancelledError:
                raise
            except Exception:
                # State stays 'classified': resume() dispatches these posts again after a restart.
                log.exception("alert fan-out for %d posts failed", len(ids))
            finally:
                self._inflight -= count
                if self._inflight <= 0 and self._queue.empty() and self._dispatch_queue.empty():
                    self._inflight = 0
                    self._idle.set()

    async def _process(self, post_ids: list[int]) -> list[int]:
        texts = await self.storage.post_texts(list(dict.fromkeys(post_ids)))
        ids = list(texts)
        if not ids:
            return []
        loop = asyncio.get_running_loop()
        scored = await loop.run_in_executor(self._executor, self.scorer.score, [texts[i] for i in ids])
        self.stats.batches += 1
        self.stats.classified += len(ids)
        items = []
        for pid, s in zip(ids, scored, strict=True):
            c = s.classification
            if c.lang == "other" and c.lang_confidence == 0.0:
                lang, conf = detect_language(texts[pid])
                c = dataclasses.replace(c, lang=lang, lang_confidence=conf)
            items.append((pid, c, s.vector))
        await self.storage.save_classifications(items)
        appeals = [(pid, vec) for pid, c, vec in items if c.appeal and vec is not None]
        self.stats.appeals += sum(1 for _, c, _ in items if c.appeal)
        for pid, vec in appeals:
            await self._assign_story(pid, vec)
            if self.on_appeal is not None:
                self.on_appeal(pid, vec)
        return ids

    async def _assign_story(self, post_id: int, vector: np.ndarray) -> None:
        """Exact copies (same normalised text) or near-copies/translations (cosine) share a story."""
        since = datetime.now(UTC) - self.story_window
        known = await self.storage.story_and_hash(post_id)
        if known is None or known[0] is not None:
            return
        h = known[1]
        best: tuple[float, int] | None = None
        for _pid, story, other_hash, emb in await self.storage.story_candidates(since, post_id):
            if other_hash == h:
                best = (1.0, story)
                break
            if emb is None:
                continue
            sim = float(np.frombuffer(emb, dtype=np.float16).astype(np.float32) @ vector)
            if sim >= self.story_similarity and (best is None or sim > best[0]):
                best = (sim, story)
        await self.storage.assign_story(post_id, best[1] if best else None)

    async def _dispatch(self, post_ids: list[int]) -> None:
        if self.alerts is not None:
            await self.alerts.dispatch(post_ids)
        await self.storage.set_state(post_ids, "done")
