"""Plain value types shared by sources, pipeline, storage and handlers.

They carry no Telegram types so that everything except ``handlers/`` and
``bot/app.py`` can be tested without python-telegram-bot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from bot.channels import permalink

SourceKind = Literal["bot", "web", "export", "forward"]


@dataclass(frozen=True, slots=True)
class IncomingPost:
    """A post as a source saw it, before anything is stored.

    ``channel`` is the channel's public username without ``@`` (lower case) when it
    has one, else ``"c:<id>"`` (the id without its -100 prefix; a colon never
    occurs in a username) for private channels (``chat_id`` then set). Sources
    never classify: they hand posts to the pipeline, which stores them first.
    """

    channel: str
    message_id: int
    text: str
    date: datetime
    source: SourceKind
    chat_id: int | None = None
    channel_title: str | None = None
    edit_date: datetime | None = None
    views: int | None = None
    forwarded_from: str | None = None
    reply_to: int | None = None
    has_media: bool = False


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    """One row of ``/channels``: is this source alive, and how far behind is it."""

    channel: str
    source: str
    title: str | None
    last_fetch_ok: datetime | None
    last_post_date: datetime | None
    last_message_id: int | None
    errors_24h: int
    last_error: str | None = None
    posts: int = 0
    approval: str = "approved"  # 'pending': waiting for an admin; 'rejected'


@dataclass(frozen=True, slots=True)
class Filters:
    """A subscription's filters; empty tuples mean "any"."""

    labels: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    min_score: float | None = None

    def matches(self, *, labels: tuple[str, ...], lang: str, channel: str, score: float, default_min: float) -> bool:
        threshold = self.min_score if self.min_score is not None else default_min
        if score < threshold:
            return False
        if self.labels and not set(self.labels) & set(labels):
            return False
        if self.languages and lang not in self.languages:
            return False
        if self.channels and channel not in self.channels:
            return False
        return True


@dataclass(frozen=True, slots=True)
class StoredPost:
    """A post row joined with its classification, as search, digests and alerts use it."""

    id: int
    channel: str
    message_id: int
    text: str
    date: datetime
    lang: str | None
    appeal: bool | None
    score: float | None
    labels: tuple[str, ...] = ()
    addressee: str | None = None
    reasons: tuple[str, ...] = ()
    chat_id: int | None = None
    story_id: int | None = None
    repost_count: int = 0
    snippet: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    source: str | None = None  # the SourceKind that first stored it ('export': history, never alerted)

    @property
    def permalink(self) -> str:
        return permalink(self.channel, self.message_id)
