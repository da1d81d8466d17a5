"""The Telethon adapter on ``telethon.tl.types.Message`` objects built offline, and the
source against a stand-in client (MTProto cannot be faked; the client's surface can)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

telethon = pytest.importorskip("telethon")

from telethon import errors, events  # noqa: E402
from telethon.tl import types  # noqa: E402

from bot.domain import IncomingPost  # noqa: E402
from bot.sources.telethon_source import ChannelUnavailable, TelethonSource, message_to_post  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHANNEL_ID = 2048611355
PEER = types.PeerChannel(CHANNEL_ID)
WHEN = datetime(2024, 5, 20, 6, 15, 2, tzinfo=UTC)
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def msg(mid: int = 4101, text: str = "Российские солдаты, сдавайтесь!", **extra: Any) -> types.Message:
    values: dict[str, Any] = {"id": mid, "peer_id": PEER, "date": WHEN, "message": text, "post": True}
    values.update(extra)
    return types.Message(**values)


def test_text_post_of_a_public_channel() -> None:
    post = message_to_post(msg(views=12_500), "@FrontLine_Appeals", channel_title="Звернення з фронту")
    assert post == IncomingPost(
        channel="frontline_appeals",
        message_id=4101,
        text="Российские солдаты, сдавайтесь!",
        date=WHEN,
        source="telethon",
        chat_id=int(f"-100{CHANNEL_ID}"),
        channel_title="Звернення з фронту",
        views=12_500,
    )
    assert msg().raw_text == post.text  # the plain text, without markdown re-rendering


def test_private_channel_gets_the_c_key() -> None:
    post = message_to_post(msg(), None)
    assert post is not None and post.channel == f"c:{CHANNEL_ID}" and post.chat_id == int(f"-100{CHANNEL_ID}")


@pytest.mark.parametrize(
    ("media", "has_media"),
    [
        (types.MessageMediaPhoto(photo=types.PhotoEmpty(id=1)), True),
        (types.MessageMediaDocument(document=types.DocumentEmpty(id=2)), True),
        (types.MessageMediaUnsupported(), True),
        (types.MessageMediaWebPage(webpage=types.WebPageEmpty(id=3)), False),
        (types.MessageMediaEmpty(), False),
        (None, False),
    ],
)
def test_media_flag(media: Any, has_media: bool) -> None:
    post = message_to_post(msg(text="Фото: пресслужба бригади", media=media), "frontline_appeals")
    assert post is not None and post.has_media is has_media


def test_media_without_caption_is_kept_and_empty_text_without_media_is_not() -> None:
    photo = types.MessageMediaPhoto(photo=types.PhotoEmpty(id=1))
    post = message_to_post(msg(text="", media=photo), "frontline_appeals")
    assert post is not None and post.text == "" and post.has_media
    assert message_to_post(msg(text=""), "frontline_appeals") is None
    link_only = types.MessageMediaWebPage(webpage=types.WebPageEmpty(id=3))
    assert message_to_post(msg(text="  ", media=link_only), "frontline_appeals") is None


def test_edit_date_unless_hidden() -> None:
    edited = datetime(2024, 5, 20, 9, 0, tzinfo=UTC)
    assert message_to_post(msg(edit_date=edited), "x_chan").edit_date == edited  # type: ignore[union-attr]
    assert message_to_post(msg(edit_date=edited, edit_hide=True), "x_chan").edit_date is None  # type: ignore[union-attr]


def test_forwards() -> None:
    named = types.MessageFwdHeader(date=WHEN, from_name="Хочу жить | I want to live")
    from_channel = types.MessageFwdHeader(date=WHEN, from_id=types.PeerChannel(777), channel_post=987)
    anonymous = types.MessageFwdHeader(date=WHEN)
    assert message_to_post(msg(fwd_from=named), "a_chan").forwarded_from == "Хочу жить | I want to live"  # type: ignore[union-attr]
    assert message_to_post(msg(fwd_from=from_channel), "a_chan").forwarded_from == "c:777"  # type: ignore[union-attr]
    resolved = message_to_post(msg(fwd_from=from_channel), "a_chan", forwarded_name="Хочу жить")
    assert resolved is not None and resolved.forwarded_from == "Хочу жить"
    assert message_to_post(msg(fwd_from=anonymous), "a_chan").forwarded_from == "hidden"  # type: ignore[union-attr]
    assert message_to_post(msg(), "a_chan").forwarded_from is None  # type: ignore[union-attr]


def test_replies_in_the_same_chat_only() -> None:
    same = types.MessageReplyHeader(reply_to_msg_id=4100)
    other = types.MessageReplyHeader(reply_to_msg_id=55, reply_to_peer_id=types.PeerChannel(999))
    assert message_to_post(msg(reply_to=same), "a_chan").reply_to == 4100  # type: ignore[union-attr]
    assert message_to_post(msg(reply_to=other), "a_chan").reply_to is None  # type: ignore[union-attr]


def test_service_and_empty_messages_are_not_posts() -> None:
    service = types.MessageService(id=1, peer_id=PEER, date=WHEN, action=types.MessageActionChannelCreate(title="x"))
    assert message_to_post(service, "a_chan") is None
    assert message_to_post(types.MessageEmpty(id=2, peer_id=PEER), "a_chan") is None  # a deleted message


def test_naive_dates_are_taken_as_utc() -> None:
    post = message_to_post(msg(date=datetime(2024, 5, 20, 6, 15, 2)), "a_chan")
    assert post is not None and post.date == WHEN


# --------------------------------------------------------------------------- the source


class ListSink:
    def __init__(self, last: int | None = None) -> None:
        self.batches: list[list[IncomingPost]] = []
        self.fetches: list[tuple[str, bool, str | None]] = []
        self.last = last

    async def ingest(self, posts: Sequence[IncomingPost]) -> None:
        self.batches.append(list(posts))

    async def last_message_id(self, channel: str) -> int | None:
        return self.last

    async def record_fetch(
        self, channel: str, *, ok: bool, error: str | None = None, when: datetime | None = None
    ) -> None:
        self.fetches.append((channel, ok, error))


class FakeClient:
    """The few TelegramClient methods the source uses, over an in-memory history."""

    def __init__(self, history: list[types.Message], *, flood: bool = False) -> None:
        self.entity = types.Channel(
            id=CHANNEL_ID,
            title="Звернення з фронту",
            photo=types.ChatPhotoEmpty(),
            date=WHEN,
            broadcast=True,
            username="FrontLine_Appeals",
        )
        self.history = history
        self.flood = flood
        self.handlers: list[tuple[Any, Any]] = []
        self.lookups: list[Any] = []

    async def get_entity(self, target: Any) -> Any:
        self.lookups.append(target)
        if target in ("frontline_appeals", "FrontLine_Appeals", int(f"-100{CHANNEL_ID}")):
            return self.entity
        raise ValueError(f'No user has "{target}" as username')

    async def iter_messages(self, entity: Any, limit: int | None = None, min_id: int = 0) -> AsyncIterator[Any]:
        if self.flood:
            raise errors.FloodWaitError(request=None, capture=420)
        newest_first = sorted((m for m in self.history if m.id > min_id), key=lambda m: m.id, reverse=True)
        for m in newest_first[:limit]:
            yield m

    def add_event_handler(self, callback: Any, event: Any) -> None:
        self.handlers.append((callback, event))

    def remove_event_handler(self, callback: Any, event: Any) -> None:
        self.handlers.remove((callback, event))


def history() -> list[types.Message]:
    service = types.MessageService(id=1, peer_id=PEER, date=WHEN, action=types.MessageActionChannelCreate(title="x"))
    return [service] + [msg(i, f"Звернення {i}") for i in range(2, 12)]


async def test_backfill_oldest_first_in_batches_since_the_sinks_newest() -> None:
    sink = ListSink(last=5)
    source = TelethonSource(FakeClient(history()), sink, batch_size=4, now=lambda: NOW)
    assert await source.backfill("@FrontLine_Appeals") == 6
    assert [[p.message_id for p in b] for b in sink.batches] == [[6, 7, 8, 9], [10, 11]]
    assert {p.channel for b in sink.batches for p in b} == {"frontline_appeals"}
    assert sink.batches[0][0].channel_title == "Звернення з фронту"
    assert sink.fetches == [("frontline_appeals", True, None)]


async def test_backfill_limit_keeps_the_newest() -> None:
    sink = ListSink()
    source = TelethonSource(FakeClient(history()), sink, now=lambda: NOW)
    assert await source.backfill("frontline_appeals", limit=3) == 3
    assert [p.message_id for p in sink.batches[0]] == [9, 10, 11]


async def test_unknown_channel_is_reported_once() -> None:
    sink = ListSink()
    told: list[str] = []
    source = TelethonSource(FakeClient([]), sink, on_unavailable=lambda c, r: told.append(c), now=lambda: NOW)
    for _ in range(2):
        with pytest.raises(ChannelUnavailable, match="no_such_channel"):
            await source.backfill("no_such_channel")
    assert told == ["no_such_channel"]
    assert [(c, ok) for c, ok, _ in sink.fetches] == [("no_such_channel", False)]


async def test_flood_wait_is_recorded_and_raised() -> None:
    sink = ListSink()
    source = TelethonSource(FakeClient(history(), flood=True), sink, now=lambda: NOW)
    with pytest.raises(errors.FloodWaitError):
        await source.backfill("frontline_appeals")
    assert sink.fetches == [("frontline_appeals", False, "FloodWait: 420s")]


async def test_live_new_and_edited_messages_reach_the_sink() -> None:
    client = FakeClient([])
    sink = ListSink()
    source = TelethonSource(client, sink, now=lambda: NOW)
    assert await source.start(["frontline_appeals", "no_such_channel"]) == ["frontline_appeals"]
    assert {type(builder) for _, builder in client.handlers} == {events.NewMessage, events.MessageEdited}
    callback = client.handlers[0][0]
    await callback(events.NewMessage.Event(msg(20, "Нове звернення")))
    await callback(events.MessageEdited.Event(msg(20, "Нове звернення (виправлено)")))
    await callback(events.NewMessage.Event(types.MessageService(id=21, peer_id=PEER, date=WHEN, action=None)))
    posts = [p for b in sink.batches for p in b]
    assert [(p.message_id, p.text, p.edit_date) for p in posts] == [
        (20, "Нове звернення", None),
        (20, "Нове звернення (виправлено)", NOW),
    ]
    assert all(p.channel == "frontline_appeals" and p.source == "telethon" for p in posts)
    source.stop()
    assert client.handlers == []


def test_missing_telethon_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.sources import telethon_source

    monkeypatch.setitem(sys.modules, "telethon", None)  # makes "import telethon" fail
    with pytest.raises(ImportError, match=r"pip install appealwatch\[telethon\]"):
        telethon_source.require_telethon()


def test_sources_import_neither_telegram_nor_telethon_eagerly() -> None:
    code = (
        "import sys, bot.sources.webpreview, bot.sources.desktop_export, bot.sources.telethon_source;"
        "print(sorted(m for m in ('telegram', 'telethon') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
