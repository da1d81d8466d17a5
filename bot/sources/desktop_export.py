"""Import a Telegram Desktop chat export (``result.json``) into the pipeline.

Why streaming: exports of big channels run to hundreds of MB, and ``json.load``
would hold all of it (several times over, as Python objects) in memory. ijson
reads the header keys first and then one message at a time, so memory stays at
one batch of posts whatever the file size.

Export facts this relies on (see shared/notes/telegram-formats.md):

* top level ``{"name", "type", "id", "messages": [...]}``; the export knows no
  username, so the channel key is ``channel=`` or ``"c:<id>"``;
* ``date`` is local time without a zone, so ``date_unixtime`` (a string of seconds)
  is used; exports from before Desktop added it fall back to ``date`` read as UTC;
* ``text`` is a string or a list of strings and ``{"type", "text", "href"?}`` parts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Protocol

import ijson
from tqdm import tqdm

from bot.channels import channel_key
from bot.domain import IncomingPost

log = logging.getLogger(__name__)

__all__ = [
    "MEDIA_KEYS",
    "CountingSink",
    "ExportHeader",
    "ExportItem",
    "ImportSummary",
    "import_export",
    "iter_export",
    "read_header",
    "text_from_parts",
]

# Keys whose presence means the message carries media (photo, file, sticker, poll, …).
MEDIA_KEYS = frozenset(
    {
        "photo",
        "file",
        "media_type",
        "sticker_emoji",
        "thumbnail",
        "poll",
        "contact_information",
        "location_information",
        "place_name",
        "game_title",
        "invoice_information",
        "paid_media",
    }
)


class CountingSink(Protocol):
    """What an import needs of a sink: ``ingest``, optionally saying how many posts were new.

    Every :class:`~bot.sources.base.PostSink` fits (its ``ingest`` returns None); a
    storage that returns the count of inserted rows lets the summary report "N new".
    """

    async def ingest(self, posts: Sequence[IncomingPost]) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ExportHeader:
    """The export's own top-level keys (read before any message)."""

    name: str | None
    type: str | None
    id: int | None

    @property
    def channel_key(self) -> str | None:
        """``"c:<id>"``, the key storage uses for a channel without a known username."""
        return channel_key(self.chat_id, None) if self.chat_id is not None else None

    @property
    def chat_id(self) -> int | None:
        """Bot API chat id: channels and supergroups carry the -100 prefix the export drops."""
        if self.id is None:
            return None
        if self.type and ("channel" in self.type or "supergroup" in self.type):
            return int(f"-100{self.id}")
        return self.id


@dataclass(frozen=True, slots=True)
class ExportItem:
    """One entry of ``messages``: a post, or why it was skipped (exactly one is set)."""

    message_id: int | None
    post: IncomingPost | None = None
    skipped: str | None = None


@dataclass(slots=True)
class ImportSummary:
    """What an import did. ``new`` is None when the sink does not say how many were new."""

    path: str
    channel: str
    read: int = 0
    posts: int = 0
    new: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    bytes_read: int = 0
    seconds: float = 0.0


def text_from_parts(text: Any) -> str:
    """An export ``text`` value as plain text; ``text_link`` parts become ``"text (href)"``."""
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    if not isinstance(text, list):
        return str(text)
    out: list[str] = []
    for part in text:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, Mapping):
            shown = str(part.get("text") or "")
            href = part.get("href")
            if part.get("type") == "text_link" and href and href != shown:
                out.append(f"{shown} ({href})" if shown else str(href))
            else:
                out.append(shown)
    return "".join(out)


def _unix(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value), UTC)


def _local(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class _CountingReader:
    """A binary file wrapper that reports bytes read, for a progress bar by bytes."""

    def __init__(self, raw: IO[bytes], on_bytes: Callable[[int], None] | None) -> None:
        self._raw = raw
        self._on_bytes = on_bytes
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.bytes_read += len(data)
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return data


def read_header(path: str | os.PathLike[str]) -> ExportHeader:
    """Read ``name``/``type``/``id`` with ijson, stopping at ``messages`` when they come first.

    Telegram Desktop writes them before ``messages``, so this reads a few bytes; if a
    file has them after, the scan goes on (streaming, never loading the messages).
    """
    found: dict[str, Any] = {}
    wanted = {"name", "type", "id"}
    with open(path, "rb") as raw:
        for prefix, event, value in ijson.parse(raw):
            if prefix == "" and event == "map_key" and value == "messages" and wanted <= found.keys():
                break
            if prefix in wanted and event in ("string", "number", "null"):
                found[prefix] = value
    raw_id = found.get("id")
    return ExportHeader(
        name=found.get("name"),
        type=found.get("type"),
        id=int(raw_id) if raw_id is not None else None,
    )


def _to_item(message: Mapping[str, Any], channel: str, header: ExportHeader) -> ExportItem:
    raw_id = message.get("id")
    if message.get("type", "message") != "message":
        return ExportItem(message_id=raw_id if isinstance(raw_id, int) else None, skipped=str(message.get("type")))
    try:
        message_id = int(raw_id)  # type: ignore[arg-type]
        date = _unix(message.get("date_unixtime")) or _local(message.get("date"))
        if date is None:
            raise ValueError("no date")
        edit_date = _unix(message.get("edited_unixtime")) or _local(message.get("edited"))
    except (TypeError, ValueError, OverflowError):
        return ExportItem(message_id=None, skipped="malformed")
    text = text_from_parts(message.get("text"))
    has_media = any(key in message for key in MEDIA_KEYS)
    if not text.strip() and not has_media:
        return ExportItem(message_id=message_id, skipped="empty")
    reply = message.get("reply_to_message_id")
    forwarded = message.get("forwarded_from")
    post = IncomingPost(
        channel=channel,
        message_id=message_id,
        text=text,
        date=date,
        source="export",
        chat_id=header.chat_id,
        channel_title=header.name,
        edit_date=edit_date,
        forwarded_from=str(forwarded) if forwarded else None,
        reply_to=int(reply) if isinstance(reply, int | str) and str(reply).isdigit() else None,
        has_media=has_media,
    )
    return ExportItem(message_id=message_id, post=post)


def _channel_for(header: ExportHeader, channel: str | None) -> str:
    if channel:
        return channel.strip().lstrip("@").lower()
    if header.channel_key is None:
        raise ValueError("the export has no top-level 'id'; pass channel= (e.g. the channel's username)")
    return header.channel_key


def iter_export(
    path: str | os.PathLike[str],
    channel: str | None = None,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> Generator[ExportItem, None, None]:
    """Stream ``messages`` of a ``result.json`` as :class:`ExportItem`, in file order.

    Service messages (``"type": "service"``: joins, pins, title changes) and messages
    with neither text nor media are yielded as skipped items with a reason, so the
    caller can count them. ``on_bytes`` is called with every chunk size read.
    """
    header = read_header(path)
    key = _channel_for(header, channel)
    with open(path, "rb") as raw:
        reader = _CountingReader(raw, on_bytes)
        for message in ijson.items(reader, "messages.item", use_float=True):
            if not isinstance(message, Mapping):
                yield ExportItem(message_id=None, skipped="malformed")
                continue
            yield _to_item(message, key, header)


async def import_export(
    path: str | os.PathLike[str],
    sink: CountingSink,
    *,
    channel: str | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> ImportSummary:
    """Feed an export to ``sink`` in batches (file order: oldest first) and summarise.

    If ``sink.ingest`` returns an int, it is taken as the number of posts that were
    new, so a re-import can report "0 new"; a sink returning None leaves ``new`` None.
    The progress bar counts bytes of the file, the only total known without a
    first pass over the messages.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    # File reads run in a worker thread so a long import never stalls the bot's event loop.
    header = await asyncio.to_thread(read_header, path)
    key = _channel_for(header, channel)
    size = (await asyncio.to_thread(os.stat, path)).st_size
    summary = ImportSummary(path=str(path), channel=key)
    skipped: Counter[str] = Counter()
    started = time.perf_counter()
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"import {key}", disable=not progress)

    def advance(n: int) -> None:
        summary.bytes_read += n
        bar.update(n)

    async def flush(batch: list[IncomingPost]) -> None:
        result = await sink.ingest(batch)
        summary.batches += 1
        if isinstance(result, int) and not isinstance(result, bool):
            summary.new = (summary.new or 0) + result

    items = iter_export(path, key, on_bytes=advance)

    def take() -> tuple[list[IncomingPost], bool]:
        """Read up to one batch of posts; the flag says whether the file is exhausted."""
        batch: list[IncomingPost] = []
        for item in items:
            summary.read += 1
            if item.post is None:
                skipped[item.skipped or "unknown"] += 1
                continue
            batch.append(item.post)
            if len(batch) >= batch_size:
                return batch, False
        return batch, True

    try:
        done = False
        while not done:
            batch, done = await asyncio.to_thread(take)
            if batch:
                summary.posts += len(batch)
                await flush(batch)
    finally:
        items.close()
        bar.close()
    summary.skipped = dict(skipped)
    summary.seconds = time.perf_counter() - started
    log.info(
        "imported %s into %s: %d read, %d posts, new=%s, skipped=%s",
        path,
        key,
        summary.read,
        summary.posts,
        summary.new,
        summary.skipped,
    )
    return summary
