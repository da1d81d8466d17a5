"""Who gets which alert, and what it says. Telegram-free: sending goes through ``AlertSender``.

Rules the users rely on:

* **at least once**: each (chat, post) is claimed before sending — a 'pending' row with a lease —
  and its outcome is recorded right after its own send. A claim a crash left behind is sent
  again at the next start, one whose lease ran out by the periodic sweep (:meth:`resend_due`);
  the only duplicates possible are messages in flight at the crash (sent, not yet recorded);
* transient errors (network, timeouts, Telegram's 5xx, 429 flood waits) are retried with
  exponential backoff and jitter (:class:`RetryPolicy`); an alert still failing after a round
  stays pending for a later sweep, until its deadline (``max_age`` after the claim) makes it
  'expired'. Only permanent refusals (blocked, kicked, chat not found) are 'failed';
* one alert per *story* within the window — reposts update the first alert's
  "also in @a, @b" line instead of sending again; an alert that never arrived (a lost claim,
  failed, expired) mutes no repost;
* history never alerts: imported archives and posts older than ``max_age`` by their own date
  are stored, classified and searchable, but alert nobody (``on_history`` hears of them);
* a user who blocked the bot (403) is deactivated, and never stops the others;
* quiet hours hold alerts, which are delivered when the hours end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from bot.crashpoints import crash_point
from bot.domain import StoredPost
from bot.messages import Rendered, render_alert
from bot.storage import ChatSettings, Storage

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one send came to. 'retry' is a transient error (``retry_after``: the flood wait Telegram
    asked for); ``forwarded`` says the original post already went, so a retry sends the alert alone."""

    status: Literal["sent", "blocked", "failed", "retry"]
    message_id: int | None = None
    error: str | None = None
    retry_after: float | None = None
    forwarded: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transient send errors get ``retries`` more tries; retry n waits ``min(cap, base · 2^(n-1))``
    seconds scaled by a random factor in [0.5, 1) — jitter, so a burst of failures does not come
    back in lockstep — and never less than a flood wait asks.

    With the defaults (5 retries, 0.5 s, cap 30 s) one round waits at most 15.5 s in all. An alert
    still failing after a round stays pending; the sweep starts another round after
    :meth:`later` (1 min, doubling, at most 30 min), until the claim's deadline.
    """

    retries: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        factor = (rng or random.Random()).uniform(0.5, 1.0)
        return max(min(self.cap, self.base * 2 ** (retry - 1)) * factor, retry_after or 0.0)

    @staticmethod
    def later(rounds: int) -> timedelta:
        """How long a postponed alert waits for the sweep after ``rounds`` failed rounds before."""
        return timedelta(minutes=min(30, 2 ** min(rounds, 5)))


class AlertSender(Protocol):
    async def send(self, chat_id: int, message: Rendered) -> SendOutcome: ...

    async def edit(self, chat_id: int, message_id: int, message: Rendered) -> None: ...


def _parse_hhmm(value: str | None) -> time | None:
    if not value:
        return None
    hh, mm = value.split(":")
    return time(int(hh), int(mm))


def in_quiet_hours(chat: ChatSettings, now: datetime, default_tz: str) -> bool:
    start, end = _parse_hhmm(chat.quiet_start), _parse_hhmm(chat.quiet_end)
    if start is None or end is None or start == end:
        return False
    local = now.astimezone(ZoneInfo(chat.timezone or default_tz)).time()
    if start < end:
        return start <= local < end
    return local >= start or local < end  # across midnight, e.g. 23:00–07:00


LATENCY_SAMPLES = 10_000  # the newest alert latencies kept (a bounded window, not the whole run)


@dataclass(slots=True)
class AlertStats:
    """This run's counters (/status); the database keeps the lasting record."""

    sent: int = 0
    blocked: int = 0
    failed: int = 0
    held: int = 0
    grouped: int = 0
    retried: int = 0    # transient errors retried within a round
    postponed: int = 0  # rounds that still failed: left pending for the sweep
    resent: int = 0     # claims the sweep sent again (a crash, a postponed round)
    expired: int = 0    # claims past their deadline
    history: int = 0    # appeals too old (or imported) to alert
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))


class AlertDispatcher:
    """Fans classified appeals out to the chats whose filters match, at least once each."""

    def __init__(self, storage: Storage, sender: AlertSender, *, min_score: float, story_window: timedelta,
                 default_tz: str = "Europe/Kyiv", text_limit: int = 700, concurrency: int = 20,
                 max_age: timedelta = timedelta(hours=6), retry: RetryPolicy | None = None,
                 lease: timedelta = timedelta(minutes=5), on_history: Callable[[StoredPost], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.storage = storage
        self.sender = sender
        self.min_score = min_score
        self.story_window = story_window
        self.default_tz = default_tz
        self.text_limit = text_limit
        self.max_age = max_age
        self.retry = retry or RetryPolicy()
        self.lease = lease  # longer than a round of retries; the in-memory set guards longer ones
        self.on_history = on_history
        self.stats = AlertStats()
        self._sem = asyncio.Semaphore(concurrency)
        self._rng = rng or random.Random()
        self._inflight: set[tuple[int, int]] = set()  # (chat, post) being sent by this process
        self._retrying: set[asyncio.Task[None]] = set()  # deliveries retrying a transient error

    async def dispatch(self, post_ids: Sequence[int]) -> None:
        chats: list[ChatSettings] | None = None
        now = datetime.now(UTC)
        for pid in post_ids:
            post = await self.storage.get_post(pid)
            if post is None or not post.appeal or post.score is None:
                continue
            if self.is_history(post, now):
                self._history(post)
                continue
            if chats is None:
                chats = await self.storage.subscribed_chats()
            await self._fan_out(post, [c for c in chats if self._matches(c, post)])

    def is_history(self, post: StoredPost, now: datetime) -> bool:
        """Imported archives, and posts older than ``max_age`` by their own date, alert nobody."""
        return post.source == "export" or post.date < now - self.max_age

    def _history(self, post: StoredPost) -> None:
        self.stats.history += 1
        if self.on_history is not None and post.source != "export":
            self.on_history(post)  # e.g. the downtime summary counts it

    def _matches(self, chat: ChatSettings, post: StoredPost) -> bool:
        if chat.filters is None or post.channel in chat.muted:
            return False
        return chat.filters.matches(labels=post.labels, lang=post.lang or "other", channel=post.channel,
                                    score=post.score or 0.0, default_min=self.min_score)

    async def _fan_out(self, post: StoredPost, targets: list[ChatSettings]) -> None:
        """Claim every recipient in one transaction, then send and record each on its own.

        The claims are 'pending' rows with a lease, so a crash at any point leaves every
        unrecorded recipient to the sweep; recording each outcome right after its send bounds
        the duplicates a crash can cause to the messages in flight at that moment.
        """
        now = datetime.now(UTC)
        to_send, to_hold = await self._sort_out(post, targets, now)
        if to_hold:
            held = await self.storage.claim_alerts(post.id, post.story_id, [c.chat_id for c in to_hold], "held")
            self.stats.held += len(held)
        if not to_send:
            return
        claimed = await self.storage.claim_alerts(post.id, post.story_id, [c.chat_id for c in to_send], "pending",
                                                  lease_until=now + self.lease, deliver_by=now + self.max_age)
        crash_point("alert_claimed")
        await self._deliver_all([self._deliver(c, post) for c in to_send if c.chat_id in claimed])

    async def _sort_out(self, post: StoredPost, targets: list[ChatSettings],
                        now: datetime) -> tuple[list[ChatSettings], list[ChatSettings]]:
        """(send now, hold for quiet hours); a repost of a story the chat already has only updates that alert."""
        to_send: list[ChatSettings] = []
        to_hold: list[ChatSettings] = []
        for chat in targets:
            if post.story_id is not None and post.repost_count > 0:  # a story's first post can't have been sent
                earlier = await self.storage.story_alerted(chat.chat_id, post.story_id, now - self.story_window)
                if earlier is not None:
                    await self.storage.claim_alert(chat.chat_id, post.id, post.story_id, status="skipped")
                    self.stats.grouped += 1
                    await self._update_story_alert(chat, post, earlier)
                    continue
            (to_hold if in_quiet_hours(chat, now, self.default_tz) else to_send).append(chat)
        return to_send, to_hold

    @staticmethod
    async def _deliver_all(deliveries: Sequence[Awaitable[None]]) -> None:
        """Run deliveries side by side; one that raises (a database error) never stops the others."""
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            log.error("an alert delivery failed; its claim stays pending for the sweep", exc_info=error)

    async def _deliver(self, chat: ChatSettings, post: StoredPost, rounds: int = 0) -> None:
        """Send one claimed alert and record its outcome at once.

        A transient error goes on being retried in a task of its own, so one slow chat never
        holds up the next post's fan-out (its claim stays pending meanwhile; :meth:`drain`).
        """
        key = (chat.chat_id, post.id)
        self._inflight.add(key)
        message = render_alert(post, text_limit=self.text_limit, forward=chat.forward_original)
        try:
            outcome = await self._send_once(chat.chat_id, message)
            if outcome.status == "retry" and self.retry.retries > 0:
                task = asyncio.create_task(self._retry_and_record(chat, post, message, outcome, rounds))
                self._retrying.add(task)
                task.add_done_callback(self._retrying.discard)
                return
            await self._conclude(chat, post, outcome, rounds)
        except BaseException:
            self._inflight.discard(key)
            raise
        self._inflight.discard(key)

    async def _retry_and_record(self, chat: ChatSettings, post: StoredPost, message: Rendered,
                                outcome: SendOutcome, rounds: int) -> None:
        try:
            outcome = await self._retry(chat.chat_id, message, outcome)
            await self._conclude(chat, post, outcome, rounds)
        except Exception:
            log.exception("retrying the alert to chat %s failed; its claim stays pending for the sweep", chat.chat_id)
        finally:
            self._inflight.discard((chat.chat_id, post.id))

    async def _retry(self, chat_id: int, message: Rendered, outcome: SendOutcome) -> SendOutcome:
        """Retry a transient error with backoff and jitter, at most ``retry.retries`` times."""
        for retry in range(1, self.retry.retries + 1):
            if outcome.status != "retry":
                break
            self.stats.retried += 1
            if outcome.forwarded:  # the original already went: don't forward it twice
                message = dataclasses.replace(message, forward_from=None)
            await asyncio.sleep(self.retry.delay(retry, outcome.retry_after, self._rng))
            outcome = await self._send_once(chat_id, message)
        return outcome

    async def _conclude(self, chat: ChatSettings, post: StoredPost, outcome: SendOutcome, rounds: int) -> None:
        crash_point("alert_sent")
        await self._record(chat, post, outcome, rounds)
        crash_point("alert_recorded")

    async def drain(self) -> None:
        """Until every delivery retrying a transient error has finished (tests, benchmarks)."""
        while self._retrying:
            await asyncio.gather(*list(self._retrying), return_exceptions=True)

    async def close(self) -> None:
        """Stop retrying (shutdown): those claims stay pending, and the next start sends them."""
        for task in list(self._retrying):
            task.cancel()
        await asyncio.gather(*list(self._retrying), return_exceptions=True)

    async def _send_once(self, chat_id: int, message: Rendered) -> SendOutcome:
        async with self._sem:
            try:
                return await self.sender.send(chat_id, message)
            except Exception as exc:  # the sender sorts Telegram's errors; anything else is a bug, not retried
                log.exception("alert to chat %s failed", chat_id)
                return SendOutcome("failed", error=repr(exc))

    async def _record(self, chat: ChatSettings, post: StoredPost, outcome: SendOutcome, rounds: int) -> None:
        now = datetime.now(UTC)
        if outcome.status == "sent":
            self.stats.sent += 1
            self.stats.latencies.append((now - post.date).total_seconds())
            await self.storage.finish_alerts([(chat.chat_id, post.id, "sent", outcome.message_id, None)])
        elif outcome.status == "retry":
            self.stats.postponed += 1
            log.warning("alert to chat %s still failing after a round of retries (%s); the sweep tries again",
                        chat.chat_id, outcome.error)
            await self.storage.postpone_alert(chat.chat_id, post.id, retry_at=now + self.retry.later(rounds),
                                              error=outcome.error or "transient error")
        else:
            await self.storage.finish_alerts([(chat.chat_id, post.id, "failed", None, outcome.error)])
            if outcome.status == "blocked":
                self.stats.blocked += 1
                await self.storage.deactivate_chat(chat.chat_id, outcome.error or "blocked")
                log.info("chat %s blocked the bot; deactivated", chat.chat_id)
            else:
                self.stats.failed += 1

    async def resend_due(self) -> int:
        """The sweep: expire claims past their deadline; send again those whose lease ran out.

        At start every pending claim is due (``Storage.release_leases``): the process that held
        it is gone. Returns how many alerts were sent again (whatever their outcome).
        """
        now = datetime.now(UTC)
        self.stats.expired += await self.storage.expire_alerts(now)
        deliveries: list[Awaitable[None]] = []
        for chat_id, post_id, rounds in await self.storage.due_alerts(now):
            if (chat_id, post_id) in self._inflight:
                continue
            delivery = await self._retake(chat_id, post_id, rounds, now)
            if delivery is not None:
                deliveries.append(delivery)
        self.stats.resent += len(deliveries)
        await self._deliver_all(deliveries)
        return len(deliveries)

    async def _retake(self, chat_id: int, post_id: int, rounds: int, now: datetime) -> Awaitable[None] | None:
        """Renew a due claim's lease and return its delivery; None if it is no longer ours to send."""
        chat = await self.storage.chat_settings(chat_id)
        post = await self.storage.get_post(post_id)
        if chat is None or post is None or not chat.active or chat.filters is None:
            # unsubscribed, blocked or gone since the claim: nobody waits for it any more
            await self.storage.finish_alerts([(chat_id, post_id, "skipped", None, "chat no longer subscribed")])
            return None
        if not await self.storage.take_due_alert(chat_id, post_id, now=now, lease_until=now + self.lease):
            return None
        return self._deliver(chat, post, rounds)

    async def _update_story_alert(self, chat: ChatSettings, post: StoredPost, message_id: int) -> None:
        """Edit the story's first alert so it lists where else the appeal appeared."""
        if not message_id or post.story_id is None:
            return
        channels = await self.storage.story_channels(post.story_id)
        first = await self.storage.story_first_post(post.story_id)
        if first is None:
            return
        others = [c for c in channels[1:] if c != first.channel]
        message = render_alert(first, text_limit=self.text_limit, also_in=others, reposts=len(channels) - 1)
        try:
            await self.sender.edit(chat.chat_id, message_id, message)
        except Exception:
            log.debug("could not update the story alert in chat %s", chat.chat_id, exc_info=True)

    async def deliver_held(self) -> int:
        """Send alerts held by quiet hours whose chats are now awake. Returns how many were sent."""
        now = datetime.now(UTC)
        sent = 0
        for chat_id, post_id in await self.storage.held_alerts():
            chat = await self.storage.chat_settings(chat_id)
            if chat is None or not chat.active:
                continue
            if in_quiet_hours(chat, now, self.default_tz):
                continue
            post = await self.storage.get_post(post_id)
            if post is None:
                continue
            if not await self.storage.release_held(chat_id, post_id, lease_until=now + self.lease,
                                                   deliver_by=now + self.max_age):
                continue  # another delivery run took it
            await self._deliver(chat, post)
            sent += 1
        return sent
