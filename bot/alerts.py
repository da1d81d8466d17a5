"""Who gets which alert, and what it says. Telegram-free: sending goes through ``AlertSender``.

Rules the users rely on:

* a chat never gets the same post twice (the alert row is claimed before sending);
* one alert per *story* within the window — reposts update the first alert's
  "also in @a, @b" line instead of sending again;
* a user who blocked the bot (403) is deactivated, and never stops the others;
* quiet hours hold alerts, which are delivered when the hours end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from bot.domain import StoredPost
from bot.messages import Rendered, render_alert
from bot.storage import ChatSettings, Storage

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class SendOutcome:
    status: Literal["sent", "blocked", "failed"]
    message_id: int | None = None
    error: str | None = None


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


@dataclass(slots=True)
class AlertStats:
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    held: int = 0
    grouped: int = 0
    latencies: list[float] = field(default_factory=list)


class AlertDispatcher:
    """Fans classified appeals out to the chats whose filters match."""

    def __init__(self, storage: Storage, sender: AlertSender, *, min_score: float, story_window: timedelta,
                 default_tz: str = "Europe/Kyiv", text_limit: int = 700, concurrency: int = 20) -> None:
        self.storage = storage
        self.sender = sender
        self.min_score = min_score
        self.story_window = story_window
        self.default_tz = default_tz
        self.text_limit = text_limit
        self.stats = AlertStats()
        self._sem = asyncio.Semaphore(concurrency)

    async def dispatch(self, post_ids: Sequence[int]) -> None:
        chats: list[ChatSettings] | None = None
        for pid in post_ids:
            post = await self.storage.get_post(pid)
            if post is None or not post.appeal or post.score is None:
                continue
            if chats is None:
                chats = await self.storage.subscribed_chats()
            await self._fan_out(post, [c for c in chats if self._matches(c, post)])

    def _matches(self, chat: ChatSettings, post: StoredPost) -> bool:
        if chat.filters is None or post.channel in chat.muted:
            return False
        return chat.filters.matches(labels=post.labels, lang=post.lang or "other", channel=post.channel,
                                    score=post.score or 0.0, default_min=self.min_score)

    async def _fan_out(self, post: StoredPost, targets: list[ChatSettings]) -> None:
        """Claim every recipient in one transaction, send concurrently, record outcomes in one.

        With a hundred subscribers, per-recipient database round trips were most of the
        fan-out's cost; claims stay exactly-once (rows are claimed before any send).
        """
        now = datetime.now(UTC)
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
        if to_hold:
            held = await self.storage.claim_alerts(post.id, post.story_id, [c.chat_id for c in to_hold], "held")
            self.stats.held += len(held)
        if not to_send:
            return
        claimed = await self.storage.claim_alerts(post.id, post.story_id, [c.chat_id for c in to_send], "pending")
        recipients = [c for c in to_send if c.chat_id in claimed]
        outcomes = await asyncio.gather(*(self._send_one(c, post) for c in recipients))
        await self._record(post, list(zip(recipients, outcomes, strict=True)))

    async def _send_one(self, chat: ChatSettings, post: StoredPost) -> SendOutcome:
        message = render_alert(post, text_limit=self.text_limit, forward=chat.forward_original)
        async with self._sem:
            try:
                return await self.sender.send(chat.chat_id, message)
            except Exception as exc:  # one failing recipient never stops the others
                log.exception("alert to chat %s failed", chat.chat_id)
                return SendOutcome("failed", error=repr(exc))

    async def _record(self, post: StoredPost, results: list[tuple[ChatSettings, SendOutcome]]) -> None:
        rows: list[tuple[int, int, str, int | None, str | None]] = []
        for chat, outcome in results:
            if outcome.status == "sent":
                self.stats.sent += 1
                self.stats.latencies.append((datetime.now(UTC) - post.date).total_seconds())
                rows.append((chat.chat_id, post.id, "sent", outcome.message_id, None))
            else:
                rows.append((chat.chat_id, post.id, "failed", None, outcome.error))
                if outcome.status == "blocked":
                    self.stats.blocked += 1
                    await self.storage.deactivate_chat(chat.chat_id, outcome.error or "blocked")
                    log.info("chat %s blocked the bot; deactivated", chat.chat_id)
                else:
                    self.stats.failed += 1
        await self.storage.finish_alerts(rows)

    async def _send(self, chat: ChatSettings, post: StoredPost) -> None:
        await self._record(post, [(chat, await self._send_one(chat, post))])

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
            if not await self.storage.release_held(chat_id, post_id):
                continue  # another delivery run took it
            await self._send(chat, post)
            sent += 1
        return sent
