"""Who gets which alert: filters, mutes, quiet hours, blocked chats and story grouping.

``AlertDispatcher`` over a real ``Storage`` in tmp_path, with a recording sender instead of Telegram.
Posts and classifications are written the way ``bot.pipeline`` writes them: store, classify,
assign a story, then dispatch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from bot.alerts import AlertDispatcher, SendOutcome, in_quiet_hours
from bot.domain import Filters, IncomingPost
from bot.messages import Rendered
from bot.storage import ChatSettings, Storage
from models.taxonomy import Classification

APPEAL = "Российские военные! Сдавайтесь в плен — вам гарантированы жизнь, еда и медицинская помощь."
Behaviour = Literal["sent", "blocked", "failed", "raise"]


class RecordingSender:
    """An AlertSender that records every call; chats can be set to block, fail or raise."""

    def __init__(self, behaviour: dict[int, Behaviour] | None = None) -> None:
        self.behaviour: dict[int, Behaviour] = behaviour or {}
        self.attempts: list[int] = []
        self.sent: list[tuple[int, int, Rendered]] = []  # (chat, message id, message)
        self.edits: list[tuple[int, int, Rendered]] = []
        self._next_message_id = 500

    async def send(self, chat_id: int, message: Rendered) -> SendOutcome:
        self.attempts.append(chat_id)
        how = self.behaviour.get(chat_id, "sent")
        if how == "raise":
            raise ConnectionError("network is down")
        if how == "blocked":
            return SendOutcome("blocked", error="Forbidden: bot was blocked by the user")
        if how == "failed":
            return SendOutcome("failed", error="Bad Request: chat not found")
        self._next_message_id += 1
        self.sent.append((chat_id, self._next_message_id, message))
        return SendOutcome("sent", message_id=self._next_message_id)

    async def edit(self, chat_id: int, message_id: int, message: Rendered) -> None:
        self.edits.append((chat_id, message_id, message))

    def sent_to(self) -> list[int]:
        return sorted(chat for chat, _, _ in self.sent)

    def message_id_for(self, chat_id: int) -> int:
        return next(mid for chat, mid, _ in self.sent if chat == chat_id)


@pytest.fixture
async def storage(make_storage: Callable[..., Storage]) -> AsyncIterator[Storage]:
    s = make_storage("alerts.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def dispatcher(storage: Storage, sender: RecordingSender) -> AlertDispatcher:
    return AlertDispatcher(storage, sender, min_score=0.6, story_window=timedelta(hours=48), default_tz="UTC")


async def appeal(s: Storage, channel: str = "chan_one", mid: int = 1, text: str = APPEAL, *,
                 labels: tuple[str, ...] = ("surrender",), lang: str = "ru", score: float = 0.85,
                 is_appeal: bool = True, chat_id: int | None = None, story: int | Literal["new"] | None = None) -> int:
    """Store and classify a post as the pipeline does; ``story="new"`` opens a story, an int joins one."""
    post = IncomingPost(channel=channel, message_id=mid, text=text, date=datetime.now(UTC) - timedelta(minutes=1),
                        source="bot", chat_id=chat_id)
    pid = (await s.store_post(post)).post_id
    c = Classification(appeal=is_appeal, score=score, labels=labels, label_scores={lbl: score for lbl in labels},
                       addressee="ru_military", reasons=("сдавайтесь в плен",), lang=lang, lang_confidence=0.99)
    await s.save_classifications([(pid, c, None)])
    if story == "new":
        await s.assign_story(pid, None)
    elif story is not None:
        await s.assign_story(pid, story)
    return pid


async def subscribed(s: Storage, chat_id: int, filters: Filters | None = None, **settings: object) -> None:
    await s.ensure_chat(chat_id)
    await s.subscribe(chat_id, filters or Filters())
    if settings:
        await s.update_chat(chat_id, **settings)


# -- who matches ------------------------------------------------------------------------------


async def test_only_subscribed_chats_whose_filters_match_get_the_alert(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    await subscribed(storage, 101)                                          # anything ≥ default 0.6
    await subscribed(storage, 102, Filters(labels=("family",)))
    await subscribed(storage, 103, Filters(labels=("pow", "threat")))       # shares a label
    await subscribed(storage, 104, Filters(languages=("uk",)))
    await subscribed(storage, 105, Filters(languages=("ru", "uk")))
    await subscribed(storage, 106, Filters(channels=("chan_two",)))
    await subscribed(storage, 107, Filters(channels=("chan_one",)))
    await subscribed(storage, 108, Filters(min_score=0.9))
    await subscribed(storage, 109, Filters(min_score=0.85))                 # the threshold is inclusive
    await subscribed(storage, 110, Filters(labels=("surrender",), languages=("uk",)))  # every filter must match
    await storage.ensure_chat(111)                                          # talked to the bot, never subscribed
    await subscribed(storage, 112)
    assert await storage.unsubscribe(112)
    await subscribed(storage, 113)
    await storage.deactivate_chat(113, "left")
    pid = await appeal(storage, labels=("surrender", "pow"), lang="ru", score=0.85)
    await dispatcher.dispatch([pid])
    assert sorted(sender.attempts) == [101, 103, 105, 107, 109]
    for chat in (101, 103, 105, 107, 109):
        assert await storage.alerts_for_chat(chat) == [(pid, "sent")]
    for chat in (102, 104, 106, 108, 110, 111, 112, 113):
        assert await storage.alerts_for_chat(chat) == []
    assert dispatcher.stats.sent == 5
    message = sender.sent[0][2]
    assert "surrender, prisoners speak" in message.html and "https://t.me/chan_one/1" in message.html
    assert message.buttons[0][0].data == f"fb:ok:{pid}"


async def test_the_default_min_score_applies_to_chats_without_their_own(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    await subscribed(storage, 201)
    await subscribed(storage, 202, Filters(min_score=0.4))
    await subscribed(storage, 203, Filters(min_score=0.0))
    weak = await appeal(storage, mid=1, score=0.5)
    await dispatcher.dispatch([weak])
    assert sender.sent_to() == [202, 203]
    lenient = AlertDispatcher(storage, sender, min_score=0.45, story_window=timedelta(hours=48), default_tz="UTC")
    other = await appeal(storage, mid=2, score=0.5)
    await lenient.dispatch([other])
    assert sorted(sender.attempts[2:]) == [201, 202, 203]


async def test_posts_that_are_not_appeals_alert_nobody(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    await subscribed(storage, 301, Filters(min_score=0.0))
    not_appeal = await appeal(storage, mid=1, text="Погода в Харькове", labels=(), is_appeal=False, score=0.9)
    unclassified = (await storage.store_post(IncomingPost("chan_one", 2, "Без классификации", datetime.now(UTC),
                                                          "bot"))).post_id
    await dispatcher.dispatch([not_appeal, unclassified, 99_999])
    assert sender.attempts == []


async def test_a_chat_never_gets_the_same_post_twice(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    await subscribed(storage, 401)
    pid = await appeal(storage)
    await dispatcher.dispatch([pid, pid])
    await dispatcher.dispatch([pid])
    assert sender.attempts == [401]


async def test_muted_channels_are_skipped_for_that_chat_only(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    await subscribed(storage, 501)
    await subscribed(storage, 502)
    await storage.mute_channel(501, "chan_one")
    first = await appeal(storage, "chan_one", 1)
    other_channel = await appeal(storage, "chan_two", 1)
    await dispatcher.dispatch([first, other_channel])
    assert await storage.alerts_for_chat(501) == [(other_channel, "sent")]
    assert {p for p, _ in await storage.alerts_for_chat(502)} == {first, other_channel}
    await storage.unmute_channel(501, "chan_one")
    later = await appeal(storage, "chan_one", 2)
    await dispatcher.dispatch([later])
    assert (later, "sent") in await storage.alerts_for_chat(501)


async def test_forwarding_originals_is_per_chat(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    await subscribed(storage, 601, forward_original=1)
    await subscribed(storage, 602)
    pid = await appeal(storage, "chan_one", 45, chat_id=-1001234567890)
    await dispatcher.dispatch([pid])
    by_chat = {chat: msg for chat, _, msg in sender.sent}
    assert by_chat[601].forward_from == (-1001234567890, 45)
    assert by_chat[602].forward_from is None


# -- quiet hours ------------------------------------------------------------------------------


def chat(quiet_start: str | None, quiet_end: str | None, timezone: str | None = None) -> ChatSettings:
    return ChatSettings(chat_id=1, type="private", title=None, active=True, timezone=timezone,
                        quiet_start=quiet_start, quiet_end=quiet_end, digest_mode="off", digest_time=None,
                        forward_original=False, filters=Filters())


def utc(day: int, hh: int, mm: int, month: int = 1) -> datetime:
    return datetime(2026, month, day, hh, mm, tzinfo=UTC)


@pytest.mark.parametrize(("now", "quiet"), [
    (utc(10, 20, 59), False),  # 22:59 in Kyiv (UTC+2 in winter)
    (utc(10, 21, 0), True),    # 23:00: the start is inclusive
    (utc(10, 22, 30), True),   # 00:30 the next day
    (utc(11, 0, 0), True),     # 02:00
    (utc(11, 4, 59), True),    # 06:59
    (utc(11, 5, 0), False),    # 07:00: the end is exclusive
    (utc(11, 12, 0), False),   # 14:00
    (utc(10, 20, 30, month=7), True),   # 23:30 in Kyiv in summer (UTC+3)
    (utc(10, 3, 59, month=7), True),    # 06:59 in summer
    (utc(10, 4, 0, month=7), False),    # 07:00 in summer
])
def test_quiet_hours_across_midnight_in_the_chats_time_zone(now: datetime, quiet: bool) -> None:
    assert in_quiet_hours(chat("23:00", "07:00", "Europe/Kyiv"), now, "UTC") is quiet
    # a chat without a time zone uses the default one
    assert in_quiet_hours(chat("23:00", "07:00"), now, "Europe/Kyiv") is quiet


def test_quiet_hours_depend_on_the_time_zone() -> None:
    now = utc(11, 4, 0)  # 04:00 UTC = 06:00 Kyiv = 23:00 New York (the day before)
    assert in_quiet_hours(chat("23:00", "07:00", "America/New_York"), now, "UTC")
    assert in_quiet_hours(chat("23:00", "07:00", "Europe/Kyiv"), now, "UTC")
    assert not in_quiet_hours(chat("23:00", "07:00", "Asia/Tokyo"), now, "UTC")  # 13:00 in Tokyo
    assert not in_quiet_hours(chat("00:00", "03:00"), now, "Europe/Kyiv")
    assert in_quiet_hours(chat("00:00", "03:00"), now - timedelta(hours=4), "Europe/Kyiv")  # 02:00 in Kyiv


def test_quiet_hours_within_one_day_and_degenerate_settings() -> None:
    window = chat("13:00", "15:00", "UTC")
    assert in_quiet_hours(window, utc(10, 13, 0), "UTC")
    assert in_quiet_hours(window, utc(10, 14, 59), "UTC")
    assert not in_quiet_hours(window, utc(10, 15, 0), "UTC")
    assert not in_quiet_hours(window, utc(10, 12, 59), "UTC")
    for start, end in [("09:00", "09:00"), (None, "07:00"), ("23:00", None), (None, None), ("", "")]:
        assert not in_quiet_hours(chat(start, end, "UTC"), utc(10, 9, 0), "UTC")


def hhmm(dt: datetime) -> str:
    return dt.strftime("%H:%M")


async def test_quiet_hours_hold_the_alert_and_deliver_held_sends_it_later(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    now = datetime.now(UTC)
    # quiet from an hour ago to an hour from now (across midnight when it must be), in the chat's zone
    await subscribed(storage, 701, timezone="UTC", quiet_start=hhmm(now - timedelta(hours=1)),
                     quiet_end=hhmm(now + timedelta(hours=1)))
    await subscribed(storage, 702)
    pid = await appeal(storage)
    await dispatcher.dispatch([pid])
    assert sender.attempts == [702]
    assert await storage.alerts_for_chat(701) == [(pid, "held")]
    assert dispatcher.stats.held == 1
    assert await dispatcher.deliver_held() == 0  # still quiet
    assert sender.attempts == [702]
    # the quiet hours are over (now they start an hour from now)
    await storage.update_chat(701, quiet_start=hhmm(now + timedelta(hours=2)), quiet_end=hhmm(now + timedelta(hours=3)))
    assert await dispatcher.deliver_held() == 1
    assert sender.sent_to() == [701, 702]
    assert await storage.alerts_for_chat(701) == [(pid, "sent")]
    assert await dispatcher.deliver_held() == 0  # delivered once
    await dispatcher.dispatch([pid])
    assert sorted(sender.attempts) == [701, 702]


async def test_held_alerts_of_a_deactivated_chat_are_not_delivered(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    now = datetime.now(UTC)
    await subscribed(storage, 711, timezone="UTC", quiet_start=hhmm(now - timedelta(hours=1)),
                     quiet_end=hhmm(now + timedelta(hours=1)))
    pid = await appeal(storage)
    await dispatcher.dispatch([pid])
    await storage.update_chat(711, quiet_start=None, quiet_end=None)
    await storage.deactivate_chat(711, "left")
    assert await dispatcher.deliver_held() == 0
    assert sender.attempts == []
    assert await storage.alerts_for_chat(711) == [(pid, "held")]


# -- failures ---------------------------------------------------------------------------------


async def test_a_chat_that_blocked_the_bot_is_deactivated_and_never_stops_the_others(storage: Storage) -> None:
    sender = RecordingSender({802: "blocked", 803: "failed", 804: "raise"})
    dispatcher = AlertDispatcher(storage, sender, min_score=0.6, story_window=timedelta(hours=48), default_tz="UTC")
    for chat_id in (801, 802, 803, 804, 805):
        await subscribed(storage, chat_id)
    first = await appeal(storage, mid=1)
    await dispatcher.dispatch([first])
    assert sorted(sender.attempts) == [801, 802, 803, 804, 805]
    assert sender.sent_to() == [801, 805]
    assert (dispatcher.stats.sent, dispatcher.stats.blocked, dispatcher.stats.failed) == (2, 1, 2)
    blocked = await storage.chat_settings(802)
    assert blocked is not None and not blocked.active
    reason = list(await storage.db.execute_fetchall("SELECT deactivated_reason FROM chats WHERE chat_id=802"))
    assert "blocked" in str(reason[0][0])
    for chat_id in (801, 803, 804, 805):  # a failure that is not a block keeps the chat
        settings = await storage.chat_settings(chat_id)
        assert settings is not None and settings.active
    for chat_id in (802, 803, 804):
        assert await storage.alerts_for_chat(chat_id) == [(first, "failed")]
    # the next alert skips the blocked chat, and a failed one is not retried
    second = await appeal(storage, mid=2)
    await dispatcher.dispatch([second, first])
    assert sorted(sender.attempts[5:]) == [801, 803, 804, 805]
    # subscribing again reactivates the chat
    await storage.subscribe(802, Filters())
    sender.behaviour.pop(802)
    third = await appeal(storage, mid=3)
    await dispatcher.dispatch([third])
    assert (third, "sent") in await storage.alerts_for_chat(802)


# -- stories ----------------------------------------------------------------------------------


async def test_a_repost_in_the_same_story_updates_the_first_alert(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    await subscribed(storage, 901)
    await subscribed(storage, 902, Filters(channels=("chan_one",)))  # the repost's channel doesn't match
    first = await appeal(storage, "chan_one", 1, story="new")
    sid = (await storage.story_and_hash(first) or (None, ""))[0]
    assert sid is not None
    await dispatcher.dispatch([first])
    assert sender.sent_to() == [901, 902]
    alert_901 = sender.message_id_for(901)
    await subscribed(storage, 903)  # subscribed after the first alert: it never saw the story

    repost = await appeal(storage, "chan_two", 9, APPEAL + "\n\n👉 Подписывайтесь: @chan_two", story=sid)
    await dispatcher.dispatch([repost])
    assert sender.sent_to() == [901, 902, 903]  # only the new subscriber gets a message
    assert [(chat, mid) for chat, mid, _ in sender.edits] == [(901, alert_901)]
    edited = sender.edits[0][2].html
    assert 'also in <a href="https://t.me/chan_two">@chan_two</a> (1 repost)' in edited
    assert "https://t.me/chan_one/1" in edited  # still the first post's alert
    assert await storage.alerts_for_chat(901) == [(first, "sent"), (repost, "skipped")]
    assert await storage.alerts_for_chat(902) == [(first, "sent")]
    assert dispatcher.stats.grouped == 1

    third = await appeal(storage, "chan_three", 4, APPEAL, story=sid)
    await dispatcher.dispatch([third])
    assert len(sender.sent) == 3
    last = [msg.html for chat, _, msg in sender.edits if chat == 901][-1]
    assert "@chan_two" in last and "@chan_three" in last and "(2 reposts)" in last
    assert (third, "skipped") in await storage.alerts_for_chat(903)  # 903's alert was the repost


async def test_a_different_story_is_a_new_alert(
        storage: Storage, sender: RecordingSender, dispatcher: AlertDispatcher) -> None:
    await subscribed(storage, 951)
    first = await appeal(storage, "chan_one", 1, story="new")
    other = await appeal(storage, "chan_two", 1, "Другое обращение к семьям", labels=("family",), story="new")
    await dispatcher.dispatch([first])
    await dispatcher.dispatch([other])
    assert len(sender.sent) == 2 and sender.edits == []
