"""Who may feed alerts and who may pull the archive. Telegram-free: the handlers apply these.

* **Channel approval**: a channel that adds the bot (or that users forward from) is
  ``pending`` until an admin approves it. Its posts are stored, classified and searchable,
  never alerted: :class:`ApprovedChannelsOnly` stands between the pipeline and the alert
  dispatcher and lets through only posts of approved channels first seen after the
  approval (posts stored while the channel waited are never alerted, approval or not).
  Digests count approved channels only (``Storage.digest_counts`` / ``top_appeals``).
* **Rate limits**: :class:`PerUserInterval` spaces out costly requests (``/export``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from bot.storage import Storage


class AlertFanout(Protocol):
    async def dispatch(self, post_ids: Sequence[int]) -> None: ...


class ApprovedChannelsOnly:
    """An ``AlertFanout`` in front of the real one: posts of channels not approved never reach it."""

    def __init__(self, storage: Storage, inner: AlertFanout) -> None:
        self.storage = storage
        self.inner = inner

    async def dispatch(self, post_ids: Sequence[int], *args: Any, **kwargs: Any) -> None:
        allowed = await self.storage.alertable_posts(post_ids)
        if allowed:
            await self.inner.dispatch(allowed, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # anything else the pipeline asks of the dispatcher
        return getattr(self.inner, name)


class PerUserInterval:
    """At most one costly request per user every ``interval`` seconds (remembers the newest ``size`` users)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._last: OrderedDict[int, float] = OrderedDict()

    def wait(self, user_id: int, interval: float, now: float | None = None) -> float:
        """Seconds until ``user_id`` may go again (0 = now)."""
        last = self._last.get(user_id)
        if last is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, last + interval - now)

    def take(self, user_id: int, now: float | None = None) -> None:
        self._last[user_id] = time.monotonic() if now is None else now
        self._last.move_to_end(user_id)
        while len(self._last) > self.size:
            self._last.popitem(last=False)


class SeenOnce:
    """Remembers ids (bounded): a private instance refuses a stranger once, then stays silent."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[int, None] = OrderedDict()

    def first_time(self, key: int) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True
