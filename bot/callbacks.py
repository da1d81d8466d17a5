"""Inline-button payloads: one typed codec per kind, so the format lives in one place.

Each kind is a frozen dataclass with ``encode()`` (what goes into ``callback_data``, at most
64 bytes), ``decode(data)`` (raises ``ValueError`` on anything it did not write) and
``PATTERN`` (the regular expression ``handlers/`` registers). A button built here is
always matched and split by the same class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

MAX_BYTES = 64  # Telegram's limit on callback_data
# Numbers are bounded (ids fit SQLite's 64-bit integers): longer ones are not ours and match no handler.


class _Codec:
    PREFIX: ClassVar[str]
    PATTERN: ClassVar[str]

    def encode(self) -> str:
        values = [str(getattr(self, f.name)) for f in fields(self)]  # type: ignore[arg-type]
        data = ":".join([self.PREFIX, *(v for v in values if v != "")])
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
        return data

    @classmethod
    def decode(cls, data: str | None) -> Self:
        m = re.match(cls.PATTERN, data or "")
        if m is None:
            raise ValueError(f"not a {cls.__name__} button: {data!r}")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            raw = m.group(f.name) or ""
            kwargs[f.name] = int(raw) if f.type in ("int", int) else raw
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class Feedback(_Codec):
    """✅ / ❌ under an alert: the user's verdict on one post."""

    PREFIX: ClassVar[str] = "fb"
    PATTERN: ClassVar[str] = r"^fb:(?P<verdict>ok|no):(?P<post_id>\d{1,18})\Z"
    verdict: str
    post_id: int


@dataclass(frozen=True, slots=True)
class Mute(_Codec):
    """🔕 under an alert: mute the post's channel in this chat."""

    PREFIX: ClassVar[str] = "mute"
    PATTERN: ClassVar[str] = r"^mute:(?P<post_id>\d{1,18})\Z"
    post_id: int


@dataclass(frozen=True, slots=True)
class SearchPage(_Codec):
    """◀ / ▶ under search results: a page of a search session kept in memory."""

    PREFIX: ClassVar[str] = "s"
    PATTERN: ClassVar[str] = r"^s:(?P<token>[\w-]+):(?P<page>\d{1,6})\Z"
    token: str
    page: int


@dataclass(frozen=True, slots=True)
class SubscriptionChoice(_Codec):
    """The /subscribe keyboard: toggle a label (l), a language (g), pick a min score (m), or done."""

    PREFIX: ClassVar[str] = "sub"
    PATTERN: ClassVar[str] = r"^sub:(?P<kind>l|g|m|done)(?::(?P<value>[\w.]+))?\Z"
    kind: str
    value: str = ""


@dataclass(frozen=True, slots=True)
class SettingsChoice(_Codec):
    """The /settings keyboard: digest mode (d), quiet hours (q), forwarding originals (f)."""

    PREFIX: ClassVar[str] = "set"
    PATTERN: ClassVar[str] = r"^set:(?P<key>d|q|f):(?P<value>[\w:-]+)\Z"
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class DigestOriginals(_Codec):
    """📨 under a digest: forward the period's original posts."""

    PREFIX: ClassVar[str] = "dg"
    PATTERN: ClassVar[str] = r"^dg:(?P<since>-?\d{1,12}):(?P<until>-?\d{1,12})\Z"  # before 1970 is negative
    since: int
    until: int


@dataclass(frozen=True, slots=True)
class ChannelApproval(_Codec):
    """Approve / Reject under the message admins get when a channel adds the bot (``channel_id``: its row id)."""

    PREFIX: ClassVar[str] = "chn"
    PATTERN: ClassVar[str] = r"^chn:(?P<verdict>ok|no):(?P<channel_id>\d{1,18})\Z"
    verdict: str
    channel_id: int
