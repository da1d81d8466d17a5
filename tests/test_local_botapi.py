"""LocalBotAPI driven by real python-telegram-bot objects over real HTTP.

These tests pin the fake server's wire behaviour against PTB 22.8 itself: if PTB can
parse every reply into its own types and its polling / retry logic behaves as the
notes say, the bot's end-to-end tests can trust the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
    MessageId,
    MessageOriginChannel,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
)

from bot.local_botapi import Call, LocalBotAPI

TOKEN = "7000000001:TEST-token"
USER = 1001
CHANNEL = -1001234567890


@pytest.fixture
async def api() -> AsyncIterator[LocalBotAPI]:
    async with LocalBotAPI() as server:
        yield server


def make_bot(api: LocalBotAPI) -> Bot:
    return Bot(TOKEN, base_url=api.base_url, base_file_url=api.base_file_url)


@contextlib.asynccontextmanager
async def running_app(
    api: LocalBotAPI,
    *handlers: BaseHandler,
    poll_interval: float = 0.0,
) -> AsyncIterator[Application]:
    """An Application started by hand (as the bot's end-to-end tests do) and always shut down."""
    app = ApplicationBuilder().token(TOKEN).base_url(api.base_url).base_file_url(api.base_file_url).build()
    for handler in handlers:
        app.add_handler(handler)
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=poll_interval, timeout=1)
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


def is_send_to(chat_id: int, method: str = "sendMessage") -> Callable[[Call], bool]:
    def predicate(call: Call) -> bool:
        return call.method == method and call.chat_id == chat_id and call.ok

    return predicate


async def reply_welcome(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text("Welcome to AppealWatch")


# -- basics ---------------------------------------------------------------------------------


async def test_initialize_calls_get_me(api: LocalBotAPI) -> None:
    async with make_bot(api) as bot:
        assert bot.username == "appealwatch_bot"
        assert bot.id == 7000000001
        assert bot.bot.can_join_groups is True
    assert [c.method for c in api.calls][:1] == ["getMe"]
    assert api.tokens_seen == {TOKEN}
    assert api.base_url == f"http://127.0.0.1:{api.port}/bot"
    assert api.base_file_url == f"http://127.0.0.1:{api.port}/file/bot"


async def test_send_message_with_inline_keyboard_round_trips(api: LocalBotAPI) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="yes")]])
    async with make_bot(api) as bot:
        message = await bot.send_message(42, "Subscribe?", reply_markup=markup)
        second = await bot.send_message(42, "again")
    assert isinstance(message, Message)
    assert message.chat.id == 42 and message.chat.type == "private"
    assert message.from_user is not None and message.from_user.is_bot
    assert message.reply_markup == markup
    call = api.sent_messages(42)[0]
    assert call.params["chat_id"] == 42
    assert call.params["reply_markup"] == {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}
    assert call.result["message_id"] == message.message_id
    assert second.message_id == message.message_id + 1


async def test_html_is_parsed_like_telegram_and_bad_html_is_refused(api: LocalBotAPI) -> None:
    async with make_bot(api) as bot:
        message = await bot.send_message(1, "🇺🇦 <b>bold</b> &amp; <a href='https://t.me/x'>link</a>", parse_mode="HTML")
        assert message.text == "🇺🇦 bold & link"
        bold, link = message.entities
        assert (bold.type, bold.offset, bold.length) == ("bold", 5, 4)  # the flag is 4 UTF-16 units
        assert (link.type, link.url) == ("text_link", "https://t.me/x")
        with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
            await bot.send_message(1, "line<br/>line", parse_mode="HTML")
        with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
            await bot.send_message(1, "1 < 2", parse_mode="HTML")
        with pytest.raises(BadRequest, match=r"(?i)reserved"):
            await bot.send_message(1, "Done.", parse_mode=ParseMode.MARKDOWN_V2)
        escaped = await bot.send_message(1, r"*Done*\.", parse_mode=ParseMode.MARKDOWN_V2)
        assert escaped.text == "Done." and escaped.entities[0].type == "bold"
        with pytest.raises(BadRequest, match=r"(?i)too long"):
            await bot.send_message(1, "x" * 4097)
        with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="d" * 65)]])
            await bot.send_message(1, "x", reply_markup=keyboard)
    assert len(api.sent_messages(1)) == 2


async def test_edit_delete_and_not_modified(api: LocalBotAPI) -> None:
    async with make_bot(api) as bot:
        sent = await bot.send_message(5, "first")
        edited = await bot.edit_message_text("second", chat_id=5, message_id=sent.message_id)
        assert isinstance(edited, Message) and edited.text == "second" and edited.edit_date is not None
        with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
            await bot.edit_message_text("second", chat_id=5, message_id=sent.message_id)
        assert await bot.delete_message(5, sent.message_id) is True
        with pytest.raises(BadRequest, match=r"(?i)not found"):
            await bot.delete_message(5, sent.message_id)
    assert api.get_message(5, sent.message_id) is None


# -- a running Application --------------------------------------------------------------------


async def test_command_handler_replies_to_injected_start(api: LocalBotAPI) -> None:
    async with running_app(api, CommandHandler("start", reply_welcome)):
        update = api.send_user_message(USER, "/start", first_name="Olena", username="olena")
        assert update["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
        reply = await api.wait_for(is_send_to(USER), timeout=5)
    assert reply.text == "Welcome to AppealWatch"
    assert reply.result["chat"] == {"id": USER, "type": "private", "first_name": "Olena", "username": "olena"}
    assert api.calls_of("deleteWebhook")


async def test_command_with_bot_username_in_group(api: LocalBotAPI) -> None:
    async with running_app(api, CommandHandler("start", reply_welcome)):
        api.send_user_message(USER, "/start@appealwatch_bot now", chat_id=-555, chat_type="group")
        reply = await api.wait_for(is_send_to(-555), timeout=5)
    assert reply.result["chat"]["type"] == "group"


async def test_button_press_reaches_callback_query_handler(api: LocalBotAPI) -> None:
    async def ask(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="sub:yes")]])
        await update.effective_message.reply_text("Subscribe?", reply_markup=keyboard)

    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("Subscribed")
        await query.edit_message_text(f"You chose {query.data}")

    async with running_app(api, CommandHandler("start", ask), CallbackQueryHandler(on_button)):
        api.send_user_message(USER, "/start")
        question = await api.wait_for(is_send_to(USER), timeout=5)
        with pytest.raises(ValueError, match="no button"):
            api.press_button(USER, question, "sub:no")
        api.press_button(USER, question.result, "sub:yes")
        edit = await api.wait_for(lambda c: c.method == "editMessageText" and c.ok, timeout=5)
    (answer,) = api.calls_of("answerCallbackQuery")
    assert answer.params["text"] == "Subscribed"
    assert edit.result["text"] == "You chose sub:yes"
    current = api.get_message(USER, question.result["message_id"])
    assert current is not None and "reply_markup" not in current  # edited without a keyboard


async def test_get_updates_recovers_after_three_502s(api: LocalBotAPI) -> None:
    api.fail("getUpdates", 502, "Bad Gateway", times=3)
    started = time.monotonic()
    # PTB backs off 1.5x per error from poll_interval (from 1 s when it is 0): keep it small.
    async with running_app(api, CommandHandler("start", reply_welcome), poll_interval=0.05):
        api.send_user_message(USER, "/start")
        await api.wait_for(is_send_to(USER), timeout=5)
    failed = [c for c in api.calls_of("getUpdates") if not c.ok]
    assert [c.error_code for c in failed] == [502, 502, 502]
    assert time.monotonic() - started < 5


async def test_updates_are_redelivered_until_confirmed(api: LocalBotAPI) -> None:
    first = api.send_user_message(USER, "one")
    second = api.send_user_message(USER, "two")
    third = api.send_user_message(USER, "three")
    assert [u["update_id"] for u in (first, second, third)] == [1, 2, 3]
    async with make_bot(api) as bot:
        assert [u.update_id for u in await bot.get_updates()] == [1, 2, 3]
        assert [u.update_id for u in await bot.get_updates()] == [1, 2, 3]  # nothing confirmed yet
        assert [u.update_id for u in await bot.get_updates(offset=2)] == [2, 3]
        assert [u.update_id for u in await bot.get_updates(limit=1)] == [2]
        assert await bot.get_updates(offset=4) == ()
    assert api.pending_updates() == []


async def test_long_poll_wakes_on_inject_and_stop_releases_it() -> None:
    async with LocalBotAPI(max_poll_wait=30) as api, make_bot(api) as bot:
        poll = asyncio.create_task(bot.get_updates(timeout=20, read_timeout=25))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        api.send_user_message(USER, "hello")
        updates = await asyncio.wait_for(poll, 2)
        assert [u.message.text for u in updates if u.message] == ["hello"]
        assert time.monotonic() - started < 1

        held = asyncio.create_task(bot.get_updates(offset=2, timeout=20, read_timeout=25))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await api.stop()
        assert await asyncio.wait_for(held, 2) == ()
        assert time.monotonic() - started < 2


# -- faults -----------------------------------------------------------------------------------


async def test_429_without_rate_limiter_raises_retry_after(api: LocalBotAPI) -> None:
    api.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    async with make_bot(api) as bot:
        with pytest.raises(RetryAfter):
            await bot.send_message(42, "lost")
        await bot.send_message(42, "delivered")
    assert [c.error_code for c in api.calls_of("sendMessage")] == [429, None]
    assert api.calls_of("sendMessage")[0].retry_after == 1
    assert api.sent_texts(42) == ["delivered"]


async def test_429_with_rate_limiter_retries_and_delivers(api: LocalBotAPI) -> None:
    api.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    bot = ExtBot(
        TOKEN, base_url=api.base_url, base_file_url=api.base_file_url, rate_limiter=AIORateLimiter(max_retries=2)
    )
    async with bot:
        message = await bot.send_message(42, "eventually")
    assert message.text == "eventually"
    assert [c.error_code for c in api.calls_of("sendMessage")] == [429, None]
    assert [c.text for c in api.sent_messages(42)] == ["eventually"]


async def test_blocked_user_gives_forbidden_only_for_that_user(api: LocalBotAPI) -> None:
    api.block_user(42)
    async with make_bot(api) as bot:
        with pytest.raises(Forbidden, match=r"(?i)blocked"):
            await bot.send_message(42, "hi")
        with pytest.raises(Forbidden):
            await bot.send_photo(42, photo=b"\xff\xd8fake-jpeg")
        await bot.send_message(43, "hi")
        api.unblock_user(42)
        await bot.send_message(42, "welcome back")
    assert [c.chat_id for c in api.sent_messages()] == [43, 42]
    assert all(c.error_code == 403 for c in api.calls if not c.ok)


async def test_wait_for_timeout_lists_recent_calls(api: LocalBotAPI) -> None:
    async with make_bot(api) as bot:
        await bot.send_message(7, "something else")
    with pytest.raises(TimeoutError, match=r"sendMessage chat=7 'something else'"):
        await api.wait_for(lambda c: c.method == "sendPhoto", timeout=0.2)
    with pytest.raises(TimeoutError, match=r"expected 2 sendMessage"):
        await api.wait_for_count("sendMessage", 2, timeout=0.2)
    assert len(await api.wait_for_count("sendMessage", 1, timeout=0.2, chat_id=7)) == 1


async def test_latency_and_on_call_hook() -> None:
    seen: list[str] = []
    async with LocalBotAPI(latency={"sendMessage": 0.2}, on_call=lambda c: seen.append(c.describe())) as api:
        async with make_bot(api) as bot:
            started = time.monotonic()
            await bot.send_message(9, "slow")
            assert time.monotonic() - started >= 0.2
    assert seen == ["getMe", "sendMessage chat=9 'slow'"]


# -- files, media, forwards -------------------------------------------------------------------


async def test_send_document_bytes_are_stored_and_downloadable(api: LocalBotAPI) -> None:
    payload = b"%PDF-1.4 appeal"
    async with make_bot(api) as bot:
        message = await bot.send_document(42, payload, filename="appeal.pdf", caption="<b>Doc</b>", parse_mode="HTML")
        assert message.document is not None
        assert message.document.file_name == "appeal.pdf" and message.document.file_size == len(payload)
        assert message.caption == "Doc" and message.caption_entities[0].type == "bold"
        (call,) = api.calls_of("sendDocument")
        assert call.files["document"].data == payload
        assert call.files["document"].filename == "appeal.pdf"
        file = await bot.get_file(message.document.file_id)
        assert bytes(await file.download_as_bytearray()) == payload
        again = await bot.send_document(43, message.document.file_id)
        assert again.document is not None and again.document.file_id == message.document.file_id


async def test_photo_media_group_forward_and_copy(api: LocalBotAPI) -> None:
    post = api.post_to_channel(CHANNEL, "news", "News", 55, "Appeal text")
    async with make_bot(api) as bot:
        photo = await bot.send_photo(42, b"\xff\xd8jpeg", caption="pic")
        assert photo.photo and photo.photo[-1].file_size == 6
        reused = await bot.send_photo(43, photo.photo[-1].file_id)
        assert reused.photo[-1].file_id == photo.photo[-1].file_id
        with pytest.raises(BadRequest, match=r"(?i)wrong file identifier"):
            await bot.send_photo(42, "no-such-file-id")
        album = await bot.send_media_group(42, [InputMediaPhoto(b"a" * 10), InputMediaPhoto(b"b" * 20, caption="2")])
        assert len(album) == 2 and album[0].media_group_id == album[1].media_group_id
        forwarded = await bot.forward_message(42, CHANNEL, post["channel_post"]["message_id"])
        assert forwarded.forward_origin is not None and forwarded.forward_origin.type == "channel"
        assert forwarded.text == "Appeal text"
        copied = await bot.copy_message(42, "@news", 55)
        assert isinstance(copied, MessageId)
        with pytest.raises(BadRequest, match=r"(?i)not found"):
            await bot.forward_message(42, CHANNEL, 999)
    assert len(api.sent_messages(42)) == 4


# -- injected update shapes parse as PTB objects ----------------------------------------------


async def test_builders_produce_updates_ptb_can_parse(api: LocalBotAPI) -> None:
    api.add_bot_to_channel(CHANNEL, "news", "News", by_user_id=USER)
    api.post_to_channel(CHANNEL, "news", "News", 55, "Appeal", date=1795753718)
    api.post_to_channel(CHANNEL, "news", "News", 56, caption="Photo appeal", photo=True)
    api.edit_channel_post(CHANNEL, "news", "News", 55, "Appeal (edited)")
    api.forward_from_channel(USER, CHANNEL, "news", "News", 55, "Appeal")
    api.send_user_message(USER, "look", photo=True, caption="a photo")
    async with make_bot(api) as bot:
        member, post, photo_post, edited, forward, user_photo = await bot.get_updates()
        assert member.my_chat_member is not None
        assert member.my_chat_member.old_chat_member.status == "left"
        assert member.my_chat_member.new_chat_member.status == "administrator"
        assert post.channel_post is not None and post.channel_post.sender_chat is not None
        assert post.channel_post.chat.username == "news"
        assert photo_post.channel_post is not None and photo_post.channel_post.caption == "Photo appeal"
        assert edited.edited_channel_post is not None and edited.edited_channel_post.edit_date is not None
        assert edited.edited_channel_post.date == post.channel_post.date
        assert forward.message is not None and isinstance(forward.message.forward_origin, MessageOriginChannel)
        assert forward.message.forward_origin.chat.id == CHANNEL
        assert user_photo.message is not None and user_photo.message.photo

        chat = await bot.get_chat("@news")
        assert chat.id == CHANNEL and chat.type == "channel"
        me = await bot.get_chat_member(CHANNEL, bot.id)
        assert me.status == "administrator"
        admins = await bot.get_chat_administrators(CHANNEL)
        assert {a.status for a in admins} == {"administrator", "creator"}
        assert await bot.get_chat_member_count(CHANNEL) == 2
        assert await bot.send_chat_action(USER, "typing") is True


async def test_require_admin_for_channel_posts() -> None:
    async with LocalBotAPI(require_admin_for_channel_posts=True) as api:
        api.post_to_channel(CHANNEL, "news", "News", 1, "unseen")
        api.add_bot_to_channel(CHANNEL, "news", "News", by_user_id=USER)
        api.post_to_channel(CHANNEL, "news", "News", 2, "seen")
        assert len(api.dropped_updates) == 1
        assert [next(k for k in u if k != "update_id") for u in api.pending_updates()] == [
            "my_chat_member",
            "channel_post",
        ]


async def test_commands_are_validated_and_remembered(api: LocalBotAPI) -> None:
    commands = [BotCommand("start", "Start"), BotCommand("search", "Search appeals")]
    async with make_bot(api) as bot:
        assert await bot.set_my_commands(commands) is True
        assert tuple(await bot.get_my_commands()) == tuple(commands)
        with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
            await bot.set_my_commands([BotCommand("Search", "capitalised")])
        assert await bot.delete_my_commands() is True
        assert await bot.get_my_commands() == ()
    assert api.commands() == []
    assert api.calls_of("setMyCommands")[0].params["commands"][1] == {
        "command": "search",
        "description": "Search appeals",
    }


# -- raw HTTP and other edges -------------------------------------------------------------------


async def test_json_and_query_bodies_unknown_methods_and_pinned_token() -> None:
    async with LocalBotAPI(token=TOKEN) as api, aiohttp.ClientSession() as session:
        url = f"{api.base_url}{TOKEN}"
        async with session.post(f"{url}/sendMessage", json={"chat_id": "12", "text": "json body"}) as response:
            body = await response.json()
        assert response.status == 200 and body["ok"] is True and body["result"]["chat"]["id"] == 12
        async with session.get(f"{url}/getMe") as response:
            assert (await response.json())["result"]["username"] == "appealwatch_bot"
        async with session.post(f"{url}/setMessageReaction", data={"chat_id": "12", "message_id": "1"}) as response:
            assert await response.json() == {"ok": True, "result": True}
        async with session.post(f"{api.base_url}1:wrong/getMe") as response:
            assert response.status == 401
            assert await response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
        with pytest.raises(InvalidToken):
            async with Bot("1:wrong", base_url=api.base_url, base_file_url=api.base_file_url):
                pass
    assert api.calls_of("setMessageReaction")[0].params == {"chat_id": 12, "message_id": 1}
    assert api.tokens_seen == {TOKEN, "1:wrong"}


async def test_fault_scoping_by_chat_and_count(api: LocalBotAPI) -> None:
    api.fail("sendMessage", 400, "Bad Request: chat not found", chat_id=-100500, times=2)
    api.fail("*", 500, "Internal Server Error")
    with pytest.raises(NetworkError, match="Internal Server Error"):
        async with make_bot(api):  # the "*" fault hits initialize()'s getMe
            pass
    async with make_bot(api) as bot:
        await bot.send_message(1, "fine")
        for _ in range(2):
            with pytest.raises(BadRequest):
                await bot.send_message(-100500, "x")
        await bot.send_message(-100500, "third time lucky")
    assert api.faults == []
    assert api.calls[0].error_code == 500
    assert api.sent_texts() == ["fine", "third time lucky"]
