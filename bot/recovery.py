"""After downtime: one summary for the admins instead of a flood of stale alerts.

The bot writes a heartbeat into the database while it runs (the maintenance job). At start,
the last heartbeat says since when the bot was down. Posts that arrive during the catch-up
(Telegram's queued updates, the web preview's backfill, ``resume()``) and are too old to alert
(``[alerts] max_age``) are history: stored, classified, searchable, in digests — and, if they
are appeals dated inside the downtime, counted here. Once the catch-up has settled (the
pipeline idle, no such appeal for ``SETTLE_SECONDS``), the admins get one message with the
count; later history (a new channel's backfill) is not reported again.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from bot.domain import StoredPost
from bot.storage import Storage

HEARTBEAT_KEY = "heartbeat"
SETTLE_SECONDS = 20.0


async def beat(storage: Storage, now: datetime | None = None) -> datetime | None:
    """Write the heartbeat; return the previous one (None on a first start)."""
    previous = await storage.get_meta(HEARTBEAT_KEY)
    await storage.set_meta(HEARTBEAT_KEY, (now or datetime.now(UTC)).isoformat())
    return datetime.fromisoformat(previous) if previous else None


def digest_period(span: timedelta) -> str:
    """The shortest ``/digest`` period that covers ``span``: ``36h``, ``4d``."""
    hours = max(1, math.ceil(span.total_seconds() / 3600))
    return f"{hours}h" if hours <= 48 else f"{math.ceil(hours / 24)}d"


class DowntimeReport:
    """Counts the history appeals dated while the bot was down; says so once."""

    def __init__(self, down_since: datetime | None, up_since: datetime, settle: float | None = None) -> None:
        self.down_since = down_since
        self.up_since = up_since
        self.settle = SETTLE_SECONDS if settle is None else settle
        self.count = 0
        self.reported = False
        self._last_note = time.monotonic()

    def note(self, post: StoredPost) -> None:
        """An appeal too old to alert (``AlertDispatcher.on_history``)."""
        if self.reported or self.down_since is None or post.date < self.down_since:
            return
        self.count += 1
        self._last_note = time.monotonic()

    def due(self, *, idle: bool) -> str | None:
        """The summary, once, when there is one and the catch-up has settled; else None."""
        if self.reported or not self.count or not idle or time.monotonic() - self._last_note < self.settle:
            return None
        self.reported = True
        return self.message()

    def message(self) -> str:
        since = self.down_since or self.up_since
        period = digest_period(datetime.now(UTC) - since)
        n = self.count
        return (f"⏸ While I was down ({since:%Y-%m-%d %H:%M} – {self.up_since:%Y-%m-%d %H:%M} UTC), "
                f"{n} appeal{'s' if n != 1 else ''} arrived; too old to alert one by one. "
                f"/digest {period} shows them.")
