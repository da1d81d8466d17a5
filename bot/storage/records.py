"""Value types the storage API takes and returns (besides ``bot.domain``'s posts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from bot.domain import Filters
from bot.vector_index import VectorMeta
from models.taxonomy import Classification


@dataclass(frozen=True, slots=True)
class IngestResult:
    post_id: int
    is_new: bool
    edited: bool


@dataclass(frozen=True, slots=True)
class ChatSettings:
    chat_id: int
    type: str
    title: str | None
    active: bool
    timezone: str | None
    quiet_start: str | None
    quiet_end: str | None
    digest_mode: str
    digest_time: str | None
    forward_original: bool
    filters: Filters | None  # None: not subscribed
    muted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchQuery:
    words: str = ""
    lang: str | None = None
    labels: tuple[str, ...] = ()
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    appeals_only: bool = False


@dataclass(frozen=True, slots=True)
class SearchRanking:
    """Full-text search's answer before any post is read: ranked ids, how many, whether a window filled up."""

    ids: list[int]
    total: int
    capped: bool
    terms: frozenset[str]  # the query's terms, for highlighting


@dataclass(frozen=True, slots=True)
class VectorRow:
    """A post's stored search embedding (float16 bytes) and the fields vector search filters on."""

    post_id: int
    embedding: bytes
    meta: VectorMeta


@dataclass(frozen=True, slots=True)
class ArchivedPost:
    """A post already classified elsewhere, loaded in bulk (benchmark archives, archives moved in)."""

    channel: str
    message_id: int
    text: str
    date: datetime
    lang: str | None
    classification: Classification | None = None
    embedding: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class ChannelAccess:
    """Whether a channel's posts may be alerted: 'approved', 'pending' (an admin must decide) or 'rejected'."""

    id: int
    key: str
    chat_id: int | None
    title: str | None
    watched: bool
    added_by: int | None
    approval: str
    approved_by: int | None = None


@dataclass(frozen=True, slots=True)
class FailedPost:
    """A post whose classification failed ``attempts`` times (state 'error'); ``appealwatch reprocess`` retries it."""

    id: int
    channel: str
    message_id: int
    attempts: int
    error: str
