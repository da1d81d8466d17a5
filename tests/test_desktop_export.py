"""Telegram Desktop ``result.json`` import: parsing small exports, then a big one streamed."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.domain import IncomingPost
from bot.sources.desktop_export import (
    ExportHeader,
    import_export,
    iter_export,
    read_header,
    text_from_parts,
)

EXPORT_ID = 2048611355
T0 = 1716185702  # 2024-05-20T06:15:02Z


def message(mid: int, text: Any, **extra: Any) -> dict[str, Any]:
    """One message the way Desktop writes it (local ``date`` plus ``date_unixtime``)."""
    unix = T0 + mid * 60
    base: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "date": datetime.fromtimestamp(unix).strftime("%Y-%m-%dT%H:%M:%S"),
        "date_unixtime": str(unix),
        "from": "Звернення з фронту",
        "from_id": f"channel{EXPORT_ID}",
        "text": text,
        "text_entities": [{"type": "plain", "text": text}] if isinstance(text, str) else [],
    }
    base.update(extra)
    return base


SMALL_MESSAGES: list[dict[str, Any]] = [
    {
        "id": 1,
        "type": "service",
        "date": "2024-05-20T09:00:00",
        "date_unixtime": str(T0),
        "actor": "Звернення з фронту",
        "actor_id": f"channel{EXPORT_ID}",
        "action": "create_channel",
        "title": "Звернення з фронту",
        "text": "",
        "text_entities": [],
    },
    message(2, "Российские солдаты, сдавайтесь! Горячая линия «Хочу жить» работает круглосуточно."),
    message(
        3,
        [
            {"type": "bold", "text": "Важливо:"},
            " полонені мають право на зв'язок з родиною. ",
            {"type": "text_link", "text": "Женевська конвенція", "href": "https://example.org/gc3"},
            ". Бот: ",
            {"type": "mention", "text": "@hochu_zhit_demo_bot"},
            " ",
            {"type": "link", "text": "https://example.org/faq"},
            " ",
            {"type": "hashtag", "text": "#полонені"},
        ],
    ),
    message(
        4,
        "",
        photo="(File not included. Change data exporting settings to download.)",
        file_size=181234,
        width=1280,
        height=853,
    ),
    message(
        5,
        "Уточнення: пункт збору переїхав на вул. Соборну, 12.",
        edited="2024-05-20T12:00:00",
        edited_unixtime=str(T0 + 3600),
    ),
    message(
        6, "Mothers of Russian soldiers: your sons can come home alive.", forwarded_from="Хочу жить | I want to live"
    ),
    message(7, "Оновлення: лінія працює цілодобово.", reply_to_message_id=2),
    message(
        8,
        "Відеозвернення полоненого",
        file="(File exceeds maximum size. Change data exporting settings to download.)",
        media_type="video_file",
        mime_type="video/mp4",
        duration_seconds=102,
    ),
    {
        "id": 9,
        "type": "service",
        "date": "2024-05-20T15:00:00",
        "date_unixtime": str(T0 + 7200),
        "action": "pin_message",
        "message_id": 2,
        "text": "",
        "text_entities": [],
    },
    message(10, ""),  # neither text nor media: nothing to classify
    {"id": 11, "type": "message", "text": "no date at all"},
]


def write_export(path: Path, messages: list[dict[str, Any]], **header: Any) -> Path:
    top = {"name": "Звернення з фронту", "type": "public_channel", "id": EXPORT_ID}
    top.update(header)
    top["messages"] = messages
    path.write_text(json.dumps(top, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


@pytest.fixture
def small_export(tmp_path: Path) -> Path:
    return write_export(tmp_path / "result.json", SMALL_MESSAGES)


class ListSink:
    """Records batches; returns None like the plain PostSink protocol (typed ``int | None``, as
    ``CountingSink`` is, so that the subclasses below may return a count)."""

    def __init__(self) -> None:
        self.batches: list[list[IncomingPost]] = []

    async def ingest(self, posts: Sequence[IncomingPost]) -> int | None:
        self.batches.append(list(posts))
        return None

    async def last_message_id(self, channel: str) -> int | None:
        return None

    async def record_fetch(
        self, channel: str, *, ok: bool, error: str | None = None, when: datetime | None = None
    ) -> None:
        return None


class DictSink(ListSink):
    """Idempotent per (channel, message_id, text), like storage; ingest returns how many were new."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, int, str], IncomingPost] = {}

    async def ingest(self, posts: Sequence[IncomingPost]) -> int:
        new = 0
        for post in posts:
            key = (post.channel, post.message_id, post.text)
            if key not in self.rows:
                self.rows[key] = post
                new += 1
        return new


def test_header_is_read_before_messages(small_export: Path) -> None:
    header = read_header(small_export)
    assert header == ExportHeader(name="Звернення з фронту", type="public_channel", id=EXPORT_ID)
    assert header.channel_key == f"c:{EXPORT_ID}"
    assert header.chat_id == int(f"-100{EXPORT_ID}")


def test_header_after_messages_is_still_found(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"messages": [message(2, "x")], "name": "N", "type": "private_channel", "id": 7}))
    assert read_header(path) == ExportHeader(name="N", type="private_channel", id=7)


def test_items_text_dates_and_flags(small_export: Path) -> None:
    items = list(iter_export(small_export))
    posts = {i.post.message_id: i.post for i in items if i.post is not None}
    assert sorted(posts) == [2, 3, 4, 5, 6, 7, 8]
    assert [(i.message_id, i.skipped) for i in items if i.post is None] == [
        (1, "service"),
        (9, "service"),
        (10, "empty"),
        (None, "malformed"),
    ]
    first = posts[2]
    assert first.source == "export" and first.channel == f"c:{EXPORT_ID}"
    assert first.chat_id == int(f"-100{EXPORT_ID}") and first.channel_title == "Звернення з фронту"
    assert first.date == datetime.fromtimestamp(T0 + 120, UTC) and first.date.tzinfo is not None
    assert posts[3].text == (
        "Важливо: полонені мають право на зв'язок з родиною. Женевська конвенція (https://example.org/gc3). "
        "Бот: @hochu_zhit_demo_bot https://example.org/faq #полонені"
    )
    assert posts[4].has_media and posts[4].text == ""
    assert posts[8].has_media and posts[8].text == "Відеозвернення полоненого"
    assert posts[5].edit_date == datetime.fromtimestamp(T0 + 3600, UTC)
    assert posts[2].edit_date is None
    assert posts[6].forwarded_from == "Хочу жить | I want to live"
    assert posts[7].reply_to == 2
    assert not posts[2].has_media


def test_channel_override(small_export: Path) -> None:
    posts = [i.post for i in iter_export(small_export, "@FrontLine_Appeals") if i.post is not None]
    assert {p.channel for p in posts} == {"frontline_appeals"}


def test_export_without_id_needs_a_channel(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"name": "N", "type": "personal_chat", "messages": [message(2, "x")]}))
    with pytest.raises(ValueError, match="channel="):
        list(iter_export(path))
    assert [i.post.channel for i in iter_export(path, "somebody") if i.post] == ["somebody"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        (None, ""),
        (["a ", {"type": "bold", "text": "b"}], "a b"),
        ([{"type": "text_link", "text": "site", "href": "https://x.example"}], "site (https://x.example)"),
        ([{"type": "text_link", "text": "https://x.example", "href": "https://x.example"}], "https://x.example"),
        ([{"type": "custom_emoji", "text": "🔥", "document_id": "5"}], "🔥"),
    ],
)
def test_text_from_parts(text: Any, expected: str) -> None:
    assert text_from_parts(text) == expected


@pytest.fixture
def small_export_size(small_export: Path) -> int:
    return small_export.stat().st_size


async def test_import_batches_and_summary(small_export: Path, small_export_size: int) -> None:
    sink = ListSink()
    summary = await import_export(small_export, sink, batch_size=3, progress=False)
    assert [[p.message_id for p in b] for b in sink.batches] == [[2, 3, 4], [5, 6, 7], [8]]
    assert summary.read == len(SMALL_MESSAGES)
    assert summary.posts == 7 and summary.batches == 3
    assert summary.new is None  # this sink does not count
    assert summary.skipped == {"service": 2, "empty": 1, "malformed": 1}
    assert summary.bytes_read == small_export_size


def write_big_export(path: Path, count: int) -> None:
    """Writes the export message by message, so the test itself never holds it all."""
    with path.open("w", encoding="utf-8") as f:
        f.write(f'{{"name": "Великий канал", "type": "public_channel", "id": {EXPORT_ID}, "messages": [\n')
        for mid in range(1, count + 1):
            if mid % 97 == 0:
                msg: dict[str, Any] = {
                    "id": mid,
                    "type": "service",
                    "date": "2024-05-20T09:00:00",
                    "date_unixtime": str(T0 + mid),
                    "action": "pin_message",
                    "text": "",
                    "text_entities": [],
                }
            elif mid % 3 == 0:
                msg = message(
                    mid,
                    [
                        f"Звернення №{mid}: ",
                        {"type": "bold", "text": "сдавайтесь"},
                        ", горячая линия ",
                        {"type": "text_link", "text": "«Хочу жить»", "href": "https://example.org/live"},
                    ],
                )
            else:
                msg = message(mid, f"Новина {mid}. Russian soldiers, save your lives. " + "Текст " * 20)
            f.write(json.dumps(msg, ensure_ascii=False))
            f.write(",\n" if mid < count else "\n")
        f.write("]}\n")


@pytest.mark.slow
async def test_big_export_streams_in_bounded_memory_and_reimport_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    count = 20_000
    write_big_export(path, count)
    size = path.stat().st_size
    sink = DictSink()

    class CountingOnly(DictSink):
        """Keeps only a count, so tracemalloc measures the importer, not the test's storage."""

        async def ingest(self, posts: Sequence[IncomingPost]) -> int:
            return len(posts)

    tracemalloc.start()
    try:
        summary = await import_export(path, CountingOnly(), batch_size=256, progress=True)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    services = count // 97
    assert summary.read == count and summary.posts == count - services
    assert summary.skipped == {"service": services}
    assert peak < size / 8, f"peak {peak} bytes for a {size}-byte file"  # json.load peaks at ~4x the size

    first = await import_export(path, sink, progress=False)
    assert first.new == count - services and len(sink.rows) == count - services
    second = await import_export(path, sink, progress=False)
    assert second.new == 0 and second.posts == count - services
    assert len(sink.rows) == count - services
