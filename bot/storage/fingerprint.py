"""What makes two posts "the same words": the normalised text and its hash (exact reposts, evidence)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_URLS = re.compile(r"https?://\S+|t\.me/\S+|@\w+")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise_text(text: str) -> str:
    """Text as a repost would also read: no links, mentions, emoji, punctuation or case."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = _URLS.sub(" ", t)
    return " ".join(_NON_WORD.sub(" ", t).split())


def content_hash(text: str) -> str:
    """SHA-256 of the normalised text: the evidence fingerprint and the exact-repost key."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()
