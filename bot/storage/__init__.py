"""SQLite storage through one aiosqlite connection: posts, classifications, chats, alerts.

Why these choices:

* **WAL** so searches never wait for ingestion, and a SIGKILL loses nothing committed.
* **Versioned migrations** (sqlite-utils style: ordered functions recorded in a table),
  so an old database file upgrades itself at start-up.
* **Exactly once**: a post is unique per (channel, message id); a repeated delivery is
  a no-op, a changed text becomes an edit with its history kept (evidence).
* **Alerts at most once per chat and post**: the row is written before the message is
  sent, so a crash can never produce a second copy.
* **FTS5** external-content index over each post's lemmas (``terms.py``: pymorphy3 for
  Russian and Ukrainian, Snowball for English) and filter tokens (``fts.py``: channel, month,
  language, labels, appeal, repost), kept in sync by triggers; user words are always quoted.
"""

from bot.storage.database import Storage
from bot.storage.fingerprint import content_hash, normalise_text
from bot.storage.fts import filter_tokens, meta_tokens, quote_fts
from bot.storage.records import (
    ArchivedPost,
    ChannelAccess,
    ChatSettings,
    FailedPost,
    IngestResult,
    SearchQuery,
    SearchRanking,
    VectorRow,
)

__all__ = [
    "ArchivedPost",
    "ChannelAccess",
    "ChatSettings",
    "FailedPost",
    "IngestResult",
    "SearchQuery",
    "SearchRanking",
    "Storage",
    "VectorRow",
    "content_hash",
    "filter_tokens",
    "meta_tokens",
    "normalise_text",
    "quote_fts",
]
