"""SQLite storage through one aiosqlite connection: posts, classifications, chats, alerts.

Why these choices:

* **WAL** so searches never wait for ingestion, and a SIGKILL loses nothing committed.
* **Versioned migrations** (sqlite-utils style: ordered functions recorded in a table),
  so an old database file upgrades itself at start-up.
* **Exactly once**: a post is unique per (channel, message id); a repeated delivery is
  a no-op, a changed text becomes an edit with its history kept (evidence).
* **Alerts at most once per chat and post**: the row is written before the message is
  sent, so a crash can never produce a second copy.
* **FTS5** external-content index over post text with ``unicode61 remove_diacritics 2``
  (folds Cyrillic case and ё/е), kept in sync by triggers; user words are always quoted.
"""

from bot.storage.database import Storage
from bot.storage.fingerprint import content_hash, normalise_text
from bot.storage.fts import filter_tokens, meta_tokens, quote_fts
from bot.storage.records import ArchivedPost, ChannelAccess, ChatSettings, FailedPost, IngestResult, SearchQuery

__all__ = [
    "ArchivedPost",
    "ChannelAccess",
    "ChatSettings",
    "FailedPost",
    "IngestResult",
    "SearchQuery",
    "Storage",
    "content_hash",
    "filter_tokens",
    "meta_tokens",
    "normalise_text",
    "quote_fts",
]
