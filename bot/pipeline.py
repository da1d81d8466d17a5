"""store → language → classify → group into stories → alerts. No Telegram here.

Every source hands posts to :meth:`Pipeline.ingest`, which *stores first* and only
then queues the work, so a crash or a restart loses nothing: posts whose processing
did not finish are picked up again by :meth:`Pipeline.resume`. Classification runs on
a worker thread (the event loop keeps answering users) and batches posts that arrive
together, which is several times faster per post on a CPU.

Work heals itself while the bot runs: a batch that fails is classified again post by post
(one bad post never takes its neighbours down), each failing post is retried with backoff
(:class:`HealingPolicy`) and, after the last attempt, left in state 'error' with its reason
(``/status`` shows it, ``appealwatch reprocess`` retries it). :meth:`Pipeline.heal`, run by a
periodic job, picks up unfinished posts nobody is working on — a handler that raised after
storing, a fan-out that failed, posts ``reprocess`` classified in another process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np

from bot.domain import IncomingPost
from bot.storage import IngestResult, Storage
from models.language import detect_language
from models.taxonomy import Classification

log = logging.getLogger(__name__)


class ScoredLike(Protocol):
    # read-only: the classifier's Scored is a frozen dataclass
    @property
    def classification(self) -> Classification: ...

    @property
    def vector(self) -> np.ndarray | None: ...


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
    reused: int = 0  # of those, reposts that took a classified twin's result without a model pass
    appeals: int = 0
    batches: int = 0
    retries: int = 0  # failed classifications queued again
    errors: int = 0   # posts given up on (state 'error')


@dataclass(frozen=True, slots=True)
class HealingPolicy:
    """Failed classifications: ``attempts`` tries in all, try n+1 after ``min(cap, base · 2^(n-1))``
    seconds times a random factor in [0.5, 1); then the post is state 'error'. An unfinished post
    that no one in this process works on for ``stall`` is picked up by :meth:`Pipeline.heal`."""

    attempts: int = 3
    base: float = 2.0
    cap: float = 60.0
    stall: timedelta = timedelta(seconds=60)

    def delay(self, failures: int, rng: random.Random) -> float:
        return min(self.cap, self.base * 2 ** (failures - 1)) * rng.uniform(0.5, 1.0)


STORE_ATTEMPTS = 4  # a busy database (another process's checkpoint) is retried; storing must not fail


def failure_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


@dataclass(frozen=True, slots=True)
class ScoredPosts:
    items: list[tuple[int, Classification, np.ndarray | None]]  # (post id, result, search vector)
    reused: int  # of those, reposts that borrowed a classified twin's result
    model_passes: int  # 0 or 1


async def score_stored(storage: Storage, scorer: Scorer, post_ids: Sequence[int], executor: ThreadPoolExecutor) -> ScoredPosts:
    """Classify stored posts by id (the bot's pipeline and ``appealwatch worker`` share this). Writes nothing.

    No work twice: a repost (same content hash as a post classified before) borrows that
    post's classification and search embedding instead of a model pass. A twin stored
    without an embedding (classified when only appeals got one) is classified again, so
    that every post reaches the search index. Copies within the batch are scored once.
    """
    texts = await storage.post_texts(list(dict.fromkeys(post_ids)))
    ids = list(texts)
    if not ids:
        return ScoredPosts([], 0, 0)
    twins = {pid: twin for pid, twin in (await storage.classified_twins(ids)).items() if twin[1] is not None}
    fresh = [pid for pid in ids if pid not in twins]
    results: dict[int, tuple[Classification, np.ndarray | None]] = dict(twins)
    passes = 0
    if fresh:
        unique = list(dict.fromkeys(texts[pid] for pid in fresh))
        scored = await asyncio.get_running_loop().run_in_executor(executor, scorer.score, unique)
        passes = 1
        by_text = {text: (s.classification, s.vector) for text, s in zip(unique, scored, strict=True)}
        for pid in fresh:
            results[pid] = by_text[texts[pid]]
    items = []
    for pid in ids:
        c, vector = results[pid]
        if c.lang == "other" and c.lang_confidence == 0.0:
            lang, conf = detect_language(texts[pid])
            c = dataclasses.replace(c, lang=lang, lang_confidence=conf)
        items.append((pid, c, vector))
    return ScoredPosts(items, len(twins), passes)


class Pipeline:
    """Owns the classification worker; implements the sources' ``PostSink``."""

    def __init__(
        self,
        storage: Storage,
        scorer: Scorer | None,  # None only with classify=False: workers classify
        *,
        alerts: AlertFanout | None = None,
        batch_size: int = 32,
        linger: float = 0.02,
        story_window: timedelta = timedelta(hours=48),
        story_similarity: float = 0.94,
        on_classified: Callable[[list[int]], Awaitable[None]] | None = None,
        healing: HealingPolicy | None = None,
        hand_off: bool = False,
        classify: bool = True,
    ) -> None:
        self.storage = storage
        self.scorer = scorer
        self.alerts = alerts
        self.batch_size = batch_size
        self.linger = linger
        self.story_window = story_window
        self.story_similarity = story_similarity
        self.on_classified = on_classified  # e.g. the search index takes the new posts' vectors
        self.healing = healing or HealingPolicy()
        # hand_off: classified posts stay 'classified' for the running bot to fan out (appealwatch reprocess)
        self.hand_off = hand_off
        # classify=False ([pipeline] classify_in_bot = false): 'new' posts are left to `appealwatch worker`
        # processes; their results come back through take_classified
        self.classify = classify
        if classify and scorer is None:
            raise ValueError("a pipeline that classifies needs a scorer")
        self.stats = PipelineStats()
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._dispatch_queue: asyncio.Queue[list[int]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
        self._idle = asyncio.Event()
        self._idle.set()
        # Posts this process is working on (queued, classifying, waiting to retry, dispatching):
        # one count per hold, released when that piece of work is finished.
        self._active: Counter[int] = Counter()
        self._timers: set[asyncio.TimerHandle] = set()
        self._failing: set[int] = set()  # posts with failures recorded, cleared once they are classified
        self._rng = random.Random()
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}

    # -- PostSink ---------------------------------------------------------------------------

    async def ingest(self, posts: Sequence[IncomingPost]) -> int:
        """Store each post exactly once, then queue the new and edited ones. Returns new posts.

        Storing comes first and is the only step whose failure reaches the caller; anything
        after it that fails leaves the post 'new', and the healing sweep picks it up.
        """
        new = 0
        results = await self._store(posts)
        for post, result in zip(posts, results, strict=True):
            if result.is_new:
                new += 1
                self.stats.stored += 1
            elif result.edited:
                self.stats.edits += 1
            else:
                self.stats.duplicates += 1
                continue
            try:
                await self._queue_stored(post, result.post_id)
            except Exception:
                log.exception("post %s/%s is stored, but queueing it failed; the healing sweep picks it up",
                              post.channel, post.message_id)
        return new

    async def _store(self, posts: Sequence[IncomingPost]) -> list[IngestResult]:
        """``store_posts``, retried while the database is busy (a post must not be lost to a lock)."""
        for attempt in range(STORE_ATTEMPTS):
            try:
                return await self.storage.store_posts(posts)
            except self.storage.transient_errors as exc:
                if attempt == STORE_ATTEMPTS - 1:
                    raise
                log.warning("storing %d posts failed (%s); trying again", len(posts), exc)
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def _queue_stored(self, post: IncomingPost, post_id: int) -> None:
        if not post.text.strip():
            # media without text: stored (and searchable by channel/date), nothing to classify
            await self.storage.save_language_only(post_id, "other", 0.0)
            return
        if self.classify:
            self._enqueue(post_id)

    async def ingest_and_wait(self, post: IncomingPost, timeout: float = 120.0, *, answered_chat: int | None = None) -> int:
        """Store one post and wait until it is classified (a user forwarded it and waits).

        ``answered_chat`` gets the classification as a reply, so it gets no alert for it too.
        """
        [result] = await self._store([post])
        if answered_chat is not None:
            await self.storage.claim_alert(answered_chat, result.post_id, None, status="skipped")
        if not post.text.strip():
            await self.storage.save_language_only(result.post_id, "other", 0.0)
            return result.post_id
        if result.is_new or result.edited or (await self.storage.get_post(result.post_id)) is None:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(result.post_id, []).append(waiter)
            self._request(result.post_id)
            await asyncio.wait_for(waiter, timeout)
        else:
            post_row = await self.storage.get_post(result.post_id)
            if post_row is not None and post_row.appeal is None:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(result.post_id, []).append(waiter)
                self._request(result.post_id)
                await asyncio.wait_for(waiter, timeout)
        return result.post_id

    async def last_message_id(self, channel: str) -> int | None:
        return await self.storage.last_message_id(channel)

    async def record_fetch(self, channel: str, *, ok: bool, error: str | None = None, when: datetime | None = None) -> None:
        await self.storage.record_fetch(channel, ok=ok, error=error, when=when)

    # -- worker -------------------------------------------------------------------------------

    def _hold(self, post_id: int) -> None:
        self._active[post_id] += 1
        self._idle.clear()

    def _release(self, post_ids: Sequence[int]) -> None:
        for pid in post_ids:
            self._active[pid] -= 1
            if self._active[pid] <= 0:
                del self._active[pid]
        if not self._active:
            self._idle.set()

    def _request(self, post_id: int) -> None:
        """Classify this post: here, or (classify=False) it is already in the workers' queue."""
        if self.classify:
            self._enqueue(post_id)

    def _enqueue(self, post_id: int) -> None:
        self._hold(post_id)
        self._queue.put_nowait(post_id)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="classification-worker")
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="alert-fanout")

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
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
        """Posts stored but not yet classified and dispatched (retries waiting included)."""
        return len(self._active)

    def working_on(self, post_id: int) -> bool:
        return post_id in self._active

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until every queued post is classified and dispatched, or given up on (tests, import, shutdown)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def resume(self) -> int:
        """Finish posts a crash interrupted: classify the 'new', fan out the 'classified'."""
        picked = await self._pick_up_all(await self.storage.unfinished_posts())
        if picked:
            log.info("resumed %d unfinished posts", picked)
        return picked

    async def heal(self) -> int:
        """The healing sweep: unfinished posts nobody here has worked on for a while are picked up again.

        They are posts a handler stored before it failed, fan-outs that raised, posts another
        process (``appealwatch reprocess``) classified. Returns how many were picked up.
        """
        picked = await self._pick_up_all(await self.storage.stalled_posts(datetime.now(UTC) - self.healing.stall))
        if picked:
            log.warning("picked up %d stalled posts", picked)
        return picked

    async def retry_failed(self) -> list[int]:
        """Queue every post in state 'error' again (``appealwatch reprocess``); returns their ids."""
        ids = [f.id for f in await self.storage.failed_posts()]
        if not self.classify:
            await self.storage.requeue(ids)  # the workers take them again
            return ids
        self._failing.update(ids)
        for pid in ids:
            if pid not in self._active:
                self._enqueue(pid)
        return ids

    async def _pick_up_all(self, rows: Sequence[tuple[int, str]]) -> int:
        """``_pick_up``; without classification here, 'classified' posts are a worker's and go to take_classified."""
        if self.classify:
            return self._pick_up(rows)
        return await self.take_classified([pid for pid, state in rows if state == "classified"])

    def _pick_up(self, rows: Sequence[tuple[int, str]]) -> int:
        """Queue 'new' posts for classification and 'classified' ones for the fan-out (unless already ours)."""
        fresh = [(pid, state) for pid, state in rows if pid not in self._active]
        classified = [pid for pid, state in fresh if state == "classified"]
        for pid, state in fresh:
            if state == "new":
                self._enqueue(pid)
        for pid in classified:
            self._hold(pid)
        if classified:
            self._dispatch_queue.put_nowait(classified)
        return len(fresh)

    async def _next_batch(self) -> list[int]:
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
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            unique = list(dict.fromkeys(batch))
            self._release(list((Counter(batch) - Counter(unique)).elements()))  # one hold per post goes on
            done, failed = await self._classify(unique)
            self._wake_waiters(unique)
            await self._recovered([pid for pid in done if pid in self._failing])
            settled = set(done) | set(failed)
            self._release([pid for pid in unique if pid not in settled])  # gone from the database
            if failed:
                await self._failed(failed)
            if done:
                # Fan-out runs beside classification, so a slow recipient never delays the next batch.
                self._dispatch_queue.put_nowait(done)

    async def _classify(self, ids: list[int]) -> tuple[list[int], dict[int, str]]:
        """(classified ids, {id: reason} of those that failed). A failed batch is tried again post by post."""
        try:
            return await self._process(ids), {}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if len(ids) == 1:
                log.warning("classifying post %d failed: %s", ids[0], failure_reason(exc), exc_info=True)
                return [], {ids[0]: failure_reason(exc)}
            log.warning("a batch of %d posts failed (%s); classifying them one by one", len(ids), failure_reason(exc))
        done: list[int] = []
        failed: dict[int, str] = {}
        for pid in ids:
            one_done, one_failed = await self._classify([pid])
            done += one_done
            failed.update(one_failed)
        return done, failed

    def _wake_waiters(self, post_ids: Sequence[int]) -> None:
        for pid in post_ids:
            for fut in self._waiters.pop(pid, []):
                if not fut.done():
                    fut.set_result(None)

    async def _failed(self, failed: dict[int, str]) -> None:
        """Count each failure; retry with backoff, or give up ('error') after the last attempt."""
        counts: dict[int, int] = {}
        try:
            for reason in set(failed.values()):
                ids = [pid for pid, r in failed.items() if r == reason]
                counts.update(await self.storage.record_failures(ids, reason, max_attempts=self.healing.attempts))
        except Exception:
            log.exception("could not record %d failed classifications; the healing sweep retries them", len(failed))
            self._release(list(failed))
            return
        self._failing.update(failed)
        for pid in failed:
            failures = counts.get(pid, self.healing.attempts)
            if failures >= self.healing.attempts:
                self.stats.errors += 1
                log.error("post %d failed %d times (%s); state 'error' until `appealwatch reprocess`",
                          pid, failures, failed[pid])
                self._failing.discard(pid)
                self._release([pid])
            else:
                self.stats.retries += 1
                self._retry_later(pid, self.healing.delay(failures, self._rng))

    async def _recovered(self, post_ids: list[int]) -> None:
        if not post_ids:
            return
        try:
            await self.storage.clear_failures(post_ids)
            self._failing.difference_update(post_ids)
        except Exception:
            log.exception("could not clear the failures of %d classified posts", len(post_ids))

    def _retry_later(self, post_id: int, delay: float) -> None:
        """Put a held post back in the queue after ``delay`` seconds (it keeps its hold meanwhile)."""
        def requeue() -> None:
            self._timers.discard(timer)
            self._queue.put_nowait(post_id)

        timer = asyncio.get_running_loop().call_later(delay, requeue)
        self._timers.add(timer)

    async def _dispatch_loop(self) -> None:
        while True:
            ids = await self._dispatch_queue.get()
            try:
                await self._dispatch(ids)
            except asyncio.CancelledError:
                raise
            except Exception:
                # State stays 'classified': the healing sweep (or the next start) dispatches them again.
                log.exception("alert fan-out for %d posts failed", len(ids))
            finally:
                self._release(ids)

    async def _process(self, post_ids: list[int]) -> list[int]:
        if self.scorer is None:
            raise RuntimeError("this pipeline has no model: its posts are classified by workers")
        scored = await score_stored(self.storage, self.scorer, post_ids, self._executor)
        if not scored.items:
            return []
        self.stats.batches += scored.model_passes
        self.stats.classified += len(scored.items)
        self.stats.reused += scored.reused
        await self.storage.save_classifications(scored.items)
        await self._classified([(pid, c.appeal, vec) for pid, c, vec in scored.items])
        return [pid for pid, _, _ in scored.items]

    async def _classified(self, posts: Sequence[tuple[int, bool, np.ndarray | None]]) -> None:
        """After classification, wherever it ran: stories for the appeals, search vectors into the index."""
        self.stats.appeals += sum(1 for _, appeal, _ in posts if appeal)
        for pid, appeal, vec in posts:
            if appeal and vec is not None:
                await self._assign_story(pid, vec)
        if self.on_classified is not None:
            try:
                await self.on_classified([pid for pid, _, vec in posts if vec is not None])
            except Exception:  # the index is rebuilt from storage at the next start; alerts must not wait for it
                log.exception("adding %d posts to the search index failed", len(posts))

    # -- classification in worker processes ([pipeline] classify_in_bot = false) ----------------

    async def take_classified(self, post_ids: Sequence[int]) -> int:
        """Posts a worker process classified: group into stories, index, fan out (as ``_process`` would).

        Called when a worker's NOTIFY arrives, and by the healing sweep for any it missed; a
        post this process already works on, or no longer 'classified', is left alone.
        Returns how many were taken.
        """
        wanted = [pid for pid in dict.fromkeys(post_ids) if pid not in self._active]
        for pid in wanted:  # held before the first await: a notification and the sweep never both take a post
            self._hold(pid)
        try:
            ids = await self.storage.posts_in_state(wanted, "classified")
        except Exception:
            self._release(wanted)
            raise
        self._release([pid for pid in wanted if pid not in set(ids)])
        if not ids:
            return 0
        try:
            rows = {r.post_id: r for r in await self.storage.vector_rows(ids=ids)}
            await self._classified([(pid, rows[pid].meta.appeal if pid in rows else False,
                                     np.frombuffer(rows[pid].embedding, dtype=np.float16).astype(np.float32)
                                     if pid in rows else None) for pid in ids])
        except Exception:
            self._release(ids)
            raise
        self.stats.classified += len(ids)
        self._wake_waiters(ids)
        self._dispatch_queue.put_nowait(ids)
        return len(ids)

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
        if self.hand_off:
            return  # they stay 'classified': the running bot (or its next start) fans them out
        if self.alerts is not None:
            await self.alerts.dispatch(post_ids)
        await self.storage.finish_posts(post_ids)
