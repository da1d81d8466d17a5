"""The one interface every source feeds: the pipeline's door.

Sources (bot updates, the t.me/s web preview, Desktop exports, forwards) only turn
what they read into :class:`~bot.domain.IncomingPost` and hand it over; storing,
language, classification and alerts happen behind ``ingest`` so every source gets
the same guarantees (stored first, exactly once).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from bot.domain import IncomingPost


class PostSink(Protocol):
    """Where sources deliver posts and report their health."""

    async def ingest(self, posts: Sequence[IncomingPost]) -> int | None:
        """Store and process posts; idempotent per (channel, message_id, text).

        Returns the number of new posts when the sink knows it."""

    async def last_message_id(self, channel: str) -> int | None:
        """The newest message id already stored for ``channel`` (None if none)."""

    async def record_fetch(
        self, channel: str, *, ok: bool, error: str | None = None, when: datetime | None = None
    ) -> None:
        """Remember a fetch attempt for source health (/channels)."""
