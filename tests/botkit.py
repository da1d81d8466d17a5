"""Helpers for the bot's end-to-end tests: a running bot against LocalBotAPI, commands, waits.

Everything goes over real HTTP: python-telegram-bot polls :class:`bot.local_botapi.LocalBotAPI`,
the bot stores into a real SQLite file under ``tmp_path`` and classifies with the real model
(the session ``classifier`` fixture from ``tests/conftest.py``).

Typical use::

    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        reply = await command(api, USER, "/start")
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.app import AnyApp, build_application, services_of, start_bot, stop_bot
from bot.config import Config
from bot.domain import StoredPost
from bot.local_botapi import Call, LocalBotAPI
from bot.storage import Storage
from models.classifier import AppealClassifier

BOT_TOKEN = "123:TEST"
ALERT_PREFIX = "🚨 Appeal:"

# -- configuration and the running bot -------------------------------------------------------------


def make_config(tmp_path: Path, api: LocalBotAPI, **overrides: Any) -> Config:
    """A default Config pointed at ``api`` and at a database in ``tmp_path``.

    ``overrides`` are field names of any section (``admins=(1,)``, ``send_retries=0``,
    ``min_score=0.5``, ``max_messages_per_second=30``, ``timezone="UTC"``, ``path=...``).
    """
    base = Config()
    sections: dict[str, Any] = {
        f.name: getattr(base, f.name) for f in dataclasses.fields(base) if dataclasses.is_dataclass(getattr(base, f.name))
    }
    values: dict[str, Any] = {
        "token": BOT_TOKEN,
        "api_base_url": api.base_url,
        "api_file_url": api.base_file_url,
        "max_messages_per_second": 0.0,
        "path": tmp_path / "appealwatch.sqlite3",
    }
    values.update(overrides)
    for key, value in values.items():
        owners = [name for name, sec in sections.items() if key in {f.name for f in dataclasses.fields(sec)}]
        if len(owners) != 1:
            raise TypeError(f"config override {key!r} matches sections {owners}; expected exactly one")
        sections[owners[0]] = dataclasses.replace(sections[owners[0]], **{key: value})
    return Config(**sections)


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path, api: LocalBotAPI, classifier: AppealClassifier, **config_overrides: Any
) -> AsyncIterator[AnyApp]:
    """The real application, polling ``api``; always stopped (pipeline, storage, polling) on exit."""
    cfg = make_config(tmp_path, api, **config_overrides)
    app = build_application(cfg, classifier=classifier, start_sources=False)
    try:
        await start_bot(app)
        yield app
    finally:
        await stop_bot(app)


def quiet_hours_around_now(config: Config, chat_timezone: str | None = None) -> str:
    """``HH:MM-HH:MM`` quiet hours that cover now (from 30 min ago to 90 min ahead) in the chat's zone."""
    now = datetime.now(ZoneInfo(chat_timezone or config.digest.timezone))
    return f"{(now - timedelta(minutes=30)):%H:%M}-{(now + timedelta(minutes=90)):%H:%M}"


def storage_of(app: AnyApp) -> Storage:
    return services_of(app).storage


# -- what the bot sent ----------------------------------------------------------------------------


def is_alert(call: Call) -> bool:
    return call.method == "sendMessage" and call.ok and (call.shown_text or "").startswith(ALERT_PREFIX)


def alerts_to(api: LocalBotAPI, chat_id: int, since: int = 0) -> list[Call]:
    """Alert messages successfully delivered to ``chat_id`` (from call index ``since``)."""
    return [c for c in api.calls[since:] if is_alert(c) and c.chat_id == chat_id]


def callback_data(call: Call) -> list[str]:
    return [str(b.get("callback_data")) for row in call.buttons for b in row]


def button(call: Call, text_prefix: str) -> str:
    """The callback data of the button whose label starts with ``text_prefix``."""
    for row in call.buttons:
        for b in row:
            if str(b.get("text", "")).startswith(text_prefix):
                return str(b["callback_data"])
    raise AssertionError(f"no button starting with {text_prefix!r} in {call.describe()}")


def alert_post_id(call: Call) -> int:
    """The stored post id an alert is about (from its ✅ button, ``fb:ok:<id>``)."""
    data = [d for d in callback_data(call) if d.startswith("fb:ok:")]
    assert len(data) == 1, f"alert without exactly one fb:ok button: {call.describe()}"
    return int(data[0].split(":")[2])


def permalink(channel: str, message_id: int) -> str:
    return f"https://t.me/{channel}/{message_id}"


def alerts_for_link(api: LocalBotAPI, chat_id: int, link: str, since: int = 0) -> list[Call]:
    return [c for c in alerts_to(api, chat_id, since) if f'href="{link}"' in (c.text or "")]


# -- talking to the bot --------------------------------------------------------------------------


async def command(
    api: LocalBotAPI,
    user_id: int,
    text: str,
    *,
    chat_id: int | None = None,
    chat_type: str = "private",
    timeout: float = 15.0,
    ok: bool = True,
) -> Call:
    """Send ``text`` as ``user_id`` (in private, or in group ``chat_id``) and return the bot's reply.

    The reply is the first ``sendMessage`` to that chat after the message that is not an alert;
    with ``ok`` (the default) it must have been accepted by the server.
    """
    target = chat_id if chat_id is not None else user_id
    since = api.mark()
    api.send_user_message(user_id, text, chat_id=chat_id, chat_type=chat_type)
    reply = await api.wait_for(
        lambda c: c.method == "sendMessage" and c.chat_id == target
        and not (c.shown_text or "").startswith(ALERT_PREFIX),
        timeout,
        since=since,
    )
    if ok:
        assert reply.ok, f"the server refused the bot's reply to {text[:60]!r}: {reply.describe()}"
    return reply


async def subscribe(api: LocalBotAPI, user_id: int, args: str = "", **kw: Any) -> Call:
    reply = await command(api, user_id, f"/subscribe {args}".strip(), **kw)
    assert "Subscribed" in (reply.shown_text or ""), reply.describe()
    return reply


async def press(api: LocalBotAPI, user_id: int, message: Call | dict[str, Any], data: str, timeout: float = 10.0,
                *, check: bool = True) -> Call:
    """Press an inline button and wait until the bot answered the callback query.

    ``check=False`` presses ``data`` even when the message has no such button (forged or foreign data).
    """
    since = api.mark()
    update = api.press_button(user_id, message, data, check=check)
    query_id = update["callback_query"]["id"]
    return await api.wait_for(
        lambda c: c.method == "answerCallbackQuery" and c.params.get("callback_query_id") == query_id,
        timeout, since=since,
    )


# -- channels ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """A public test channel: ``post`` / ``edit`` inject updates as the Bot API would."""

    id: int
    username: str
    title: str

    def link(self, message_id: int) -> str:
        return permalink(self.username, message_id)

    def add_bot(self, api: LocalBotAPI, by_user_id: int) -> None:
        api.add_bot_to_channel(self.id, self.username, self.title, by_user_id=by_user_id)

    def post(self, api: LocalBotAPI, message_id: int, text: str | None = None, **kw: Any) -> dict[str, Any]:
        return api.post_to_channel(self.id, self.username, self.title, message_id, text, **kw)

    def edit(self, api: LocalBotAPI, message_id: int, text: str, **kw: Any) -> dict[str, Any]:
        return api.edit_channel_post(self.id, self.username, self.title, message_id, text, **kw)


# -- waiting for the bot -----------------------------------------------------------------------------


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool], timeout: float = 30.0, message: str | Callable[[], str] = ""
) -> None:
    """Poll ``condition`` (sync or async) every 50 ms until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"condition not met within {timeout}s: {text}")
        await asyncio.sleep(0.05)


async def quiet(api: LocalBotAPI, seconds: float = 0.5, timeout: float = 15.0) -> None:
    """Until the bot has made no call other than getUpdates for ``seconds`` (its handlers are done)."""
    deadline = time.monotonic() + timeout

    def last_activity() -> int:
        return max((i for i, c in enumerate(api.calls) if c.method != "getUpdates"), default=-1)

    seen, since = last_activity(), time.monotonic()
    while time.monotonic() - since < seconds:
        if time.monotonic() > deadline:
            pytest.fail(f"the bot kept making calls for {timeout}s")
        await asyncio.sleep(0.05)
        now = last_activity()
        if now != seen:
            seen, since = now, time.monotonic()


async def settle(app: AnyApp, *, posts: int | None = None, timeout: float = 60.0) -> None:
    """Until ``posts`` posts are stored (if given) and every stored post is fully processed
    (classified and its alerts sent: no post left in state 'new' or 'classified')."""
    storage = storage_of(app)

    async def done() -> bool:
        if posts is not None and await storage.count_posts() < posts:
            return False
        return not await storage.unfinished_posts()

    async def why() -> str:
        return f"{await storage.count_posts()} posts stored (want {posts}), unfinished {await storage.unfinished_posts()}"

    deadline = time.monotonic() + timeout
    while not await done():
        if time.monotonic() > deadline:
            pytest.fail(f"the pipeline did not settle within {timeout}s: {await why()}")
        await asyncio.sleep(0.05)
    await services_of(app).pipeline.wait_idle(timeout)


async def post_and_settle(api: LocalBotAPI, app: AnyApp, channel: Channel, message_id: int, text: str | None = None,
                          timeout: float = 60.0, **kw: Any) -> StoredPost:
    """Post to ``channel``, wait until the post is stored and processed; return it as stored."""
    storage = storage_of(app)
    channel.post(api, message_id, text, **kw)
    await eventually(lambda: _found(storage, channel.username, message_id), timeout,
                     f"post {channel.link(message_id)} was never stored")
    await settle(app, timeout=timeout)
    post = await storage.find_post(channel.username, message_id)
    assert post is not None
    return post


async def _found(storage: Storage, channel: str, message_id: int) -> bool:
    return await storage.find_post(channel, message_id) is not None


async def rows(app: AnyApp, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Read the bot's database file as an outsider would: a separate read-only connection (WAL lets it)."""
    path = storage_of(app).path
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, args).fetchall()


# -- logs ----------------------------------------------------------------------------------------------


def shown(call: Call) -> str:
    """The text a user sees in a sent message (caption included)."""
    return call.shown_text or ""


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """ERROR records from the bot's own code (the error handler is ``handlers.basic.on_error``)."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("handlers", "bot")]


def format_records(records: list[logging.LogRecord]) -> str:
    fmt = logging.Formatter()
    return "\n".join(
        f"{r.name}: {r.getMessage()}" + (("\n" + fmt.formatException(r.exc_info)) if r.exc_info else "") for r in records
    )


# -- texts ------------------------------------------------------------------------------------------------

#: Clear appeals across the front line: (language, a label the model must give, text).
APPEALS: list[tuple[str, str, str]] = [
    ("ru", "surrender", "Солдаты России! Сдавайтесь в плен — вам гарантируют жизнь, еду и лечение по Женевской "
                        "конвенции. Звоните на горячую линию «Хочу жить» или пишите в чат-бот."),
    ("uk", "desertion", "Російські військові! Кидайте зброю і повертайтесь додому, поки живі. Не підписуйте контракт — "
                        "Україна вас не кликала, а командири кинуть вас помирати."),
    ("en", "civilians", "To the people of Belgorod and Kursk: we are not at war with you. Your government is lying about "
                        "why your sons die in Ukraine. Go out and demand the truth, and bring them home."),
    ("ru", "family", "Матери российских солдат! Если ваш сын пропал под Авдеевкой, напишите в бот «Ищи своих» — мы "
                     "проверим списки пленных и погибших. Не ждите ответа от военкомата."),
    ("uk", "pow", "Полонений російський солдат Ігор із Тюмені: «Мамо, я живий, мене годують і лікують. Звернися до "
                  "проекту \"Хочу знайти\", щоб мене обміняли»."),
    ("ru", "surrender", "Военные РФ, не стреляйте в своих соседей! Каждый, кто сложит оружие на нашем участке, получит "
                        "шанс вернуться домой к семье. Частота для связи 148.500."),
    ("ru", "threat", "Оккупанты, вы слышите? Здесь вас ждёт только смерть. Уходите с нашей земли, пока можете."),
    ("en", "desertion", "Russian conscripts near Kupiansk: you do not have to die here. Leave your positions at night, "
                        "walk toward the forest road with a white cloth, and our soldiers will not shoot."),
    ("uk", "civilians", "Мешканці Бєлгорода! Ваша влада вам бреше про цю війну. Вимагайте, щоб ваших синів повернули "
                        "додому живими."),
]

#: Clear non-appeals: (language, text). News *about* a surrender hotline, an air-raid alert, a
#: call to one's own side, the weather, shelling reports.
NOT_APPEALS: list[tuple[str, str]] = [
    ("ru", "Горячая линия «Хочу жить» за месяц получила более 3000 обращений от российских военных, сообщили в "
           "координационном штабе по обращению с военнопленными."),
    ("uk", "Повітряна тривога в Харківській області! Негайно прямуйте до укриття."),
    ("uk", "Сьогодні у Львові сонячно, до +18, вітер слабкий. Увечері можливий дощ."),
    ("uk", "Збираємо кошти на тепловізор для нашого батальйону, кожна гривня важлива."),
    ("en", "Ukraine's defence ministry said on Tuesday that the \"I Want to Live\" project had received a record "
           "number of calls from Russian servicemen."),
]

#: Seven distinct non-appeal reports that all contain the word «обстріл» (for search pages).
SHELLING_REPORTS: list[str] = [
    "Нічний обстріл Херсона: пошкоджено два житлові будинки, загиблих немає.",
    "Ранковий обстріл Нікополя: без світла залишилися три тисячі родин.",
    "Обстріл Харкова: рятувальники розбирають завали на Салтівці.",
    "Ворог продовжує обстріл прикордонних сіл Сумщини, евакуація триває.",
    "Масований обстріл енергетики: графіки відключень у Києві на завтра.",
    "Вечірній обстріл Краматорська: поранено двох людей, триває збір інформації.",
    "Артилерійський обстріл Білопілля тривав понад годину, повідомила ОВА.",
]
