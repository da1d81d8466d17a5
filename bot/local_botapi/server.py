"""The server: :class:`LocalBotAPI`, an aiohttp app that answers the Bot API methods the bot uses.

Besides the HTTP side it holds the test-facing API: injecting updates (user messages,
channel posts, button presses), waiting for calls, faults and latency, and the state
Telegram keeps (chats, members, messages, files, commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import mimetypes
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from .entities import format_text, utf16_len
from .records import ApiError, Call, Fault, JSONDict, StoredFile, bad_request
from .requests import coerce_chat_id, read_request

# The package's name, as before the split into modules, so log lines read the same.
_LOGGER = logging.getLogger("bot.local_botapi")

#: Methods that put content into a chat; :meth:`LocalBotAPI.sent_messages` and
#: :meth:`LocalBotAPI.block_user` work over these.
SEND_METHODS: Final[frozenset[str]] = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendVideo",
        "sendAudio",
        "sendVoice",
        "sendAnimation",
        "sendMediaGroup",
        "forwardMessage",
        "forwardMessages",
        "copyMessage",
        "copyMessages",
    }
)

# A blocked user also makes these fail with 403, as on Telegram.
_BLOCKABLE_METHODS: Final[frozenset[str]] = SEND_METHODS | {
    "sendChatAction",
    "editMessageText",
    "editMessageCaption",
    "editMessageReplyMarkup",
}

# Telegram leaves these out when getUpdates is called without allowed_updates.
_NOT_DELIVERED_BY_DEFAULT: Final[frozenset[str]] = frozenset(
    {"chat_member", "message_reaction", "message_reaction_count"}
)
# Keys whose value is a Message; used to keep the message store and chat registry current.
_MESSAGE_UPDATE_KEYS: Final[tuple[str, ...]] = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
)
_CONTENT_KEYS: Final[tuple[str, ...]] = (
    "text",
    "entities",
    "caption",
    "caption_entities",
    "photo",
    "document",
    "video",
    "audio",
    "voice",
    "animation",
)
_MAX_TEXT: Final = 4096
_MAX_CAPTION: Final = 1024
_COMMAND_RE: Final = re.compile(r"[a-z0-9_]{1,32}")
_ADMIN_RIGHTS: Final[tuple[str, ...]] = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_messages",
    "can_edit_messages",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)


def _validate_inline_keyboard(markup: Any) -> None:
    """Refuse what Telegram refuses in inline keyboards (a frequent source of 400s)."""
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request('can\'t parse inline keyboard button: field "inline_keyboard" must be an Array')
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise bad_request('can\'t parse inline keyboard button: Field "text" must be of type String')
            data = button.get("callback_data")
            if data is not None and not (isinstance(data, str) and 1 <= len(data.encode("utf-8")) <= 64):
                raise bad_request("BUTTON_DATA_INVALID")
            url = button.get("url")
            if url is not None and not (isinstance(url, str) and re.match(r"(https?|tg)://\S+", url)):
                raise bad_request(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
            actions = set(button) - {"text", "style", "icon_custom_emoji_id"}
            if not actions:
                raise bad_request(
                    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
                )


_Handler = Callable[[Call], Awaitable[Any]]
CallHook = Callable[[Call], None]


class LocalBotAPI:
    """A fake Telegram Bot API server on ``127.0.0.1:<free port>`` for PTB to talk to.

    Run it in the same event loop as the bot (``async with LocalBotAPI() as api``) and
    build the application with ``.base_url(api.base_url).base_file_url(api.base_file_url)``.
    All public methods are meant to be called from that loop's thread.

    Args:
        bot_username: what getMe answers; CommandHandler needs it for ``/cmd@name``.
        bot_id: the bot's user id (also the part of a token before ``:``, by convention).
        bot_first_name: the bot's display name.
        token: when given, requests with another token get 401 (as Telegram does);
            by default any token is accepted and recorded on each :class:`Call`.
        max_poll_wait: upper bound on how long a long-polling getUpdates is held, whatever
            its ``timeout``: short, so that stopping the bot never waits on a poll.
        latency: seconds to delay each method's answer, by method name (``"*"`` for all).
        on_call: called with every :class:`Call` once it is answered (the demo's transcript).
        require_admin_for_channel_posts: when true, posts injected into a channel where the
            bot is known not to be an administrator are not delivered, as on Telegram.
        clock: the time source for message dates (a test may pin it).
        seed: seeds the random generator that decides which calls a partial fault hits.
    """

    def __init__(
        self,
        *,
        bot_username: str = "appealwatch_bot",
        bot_id: int = 7000000001,
        bot_first_name: str = "AppealWatch",
        token: str | None = None,
        max_poll_wait: float = 1.0,
        latency: Mapping[str, float] | None = None,
        on_call: CallHook | None = None,
        require_admin_for_channel_posts: bool = False,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self.bot_username = bot_username
        self.bot_id = bot_id
        self.bot_first_name = bot_first_name
        self.token = token
        self.max_poll_wait = max_poll_wait
        self.latency: dict[str, float] = dict(latency or {})
        self.on_call = on_call
        self.require_admin_for_channel_posts = require_admin_for_channel_posts
        self.clock = clock
        self._rng = random.Random(seed)

        #: Every request, in the order they were answered.
        self.calls: list[Call] = []
        #: Pending faults, consulted in order.
        self.faults: list[Fault] = []
        #: Tokens seen in request paths.
        self.tokens_seen: set[str] = set()
        #: Files known by file_id (uploads and files of injected updates).
        self.files: dict[str, StoredFile] = {}
        #: Answers given to callback queries, by query id.
        self.callback_answers: dict[str, JSONDict] = {}
        #: Updates injected but not delivered because of ``require_admin_for_channel_posts``.
        self.dropped_updates: list[JSONDict] = []

        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self._port: int | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()

        self._updates: list[JSONDict] = []
        self._next_update_id = 1
        self._updates_changed = asyncio.Event()
        self._allowed_updates: list[str] | None = None
        self._calls_cond = asyncio.Condition()

        self._chats: dict[int, JSONDict] = {}
        self._usernames: dict[str, int] = {}
        self._users: dict[int, JSONDict] = {}
        self._members: dict[tuple[int, int], JSONDict] = {}
        self._messages: dict[tuple[int, int], JSONDict] = {}
        self._bot_messages: set[tuple[int, int]] = set()
        self._last_message_id: dict[int, int] = {}
        self._commands: dict[tuple[str, str], list[JSONDict]] = {}
        self._last_commands: list[JSONDict] = []
        self._menu_buttons: dict[int | None, JSONDict] = {}
        self._callback_ids: set[str] = set()
        self._counter = 0

        self._handlers: dict[str, _Handler] = {}
        self._canonical: dict[str, str] = {}
        for name, handler in self._method_table().items():
            self._handlers[name] = handler
            self._canonical[name.lower()] = name

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and start answering."""
        if self._runner is not None:
            raise RuntimeError("LocalBotAPI is already running")
        self._stopping = False
        self._stop_event.clear()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner, self._socket = runner, sock
        self._port = int(sock.getsockname()[1])
        _LOGGER.debug("LocalBotAPI listening on %s", self.base_url)

    async def stop(self) -> None:
        """Release long polls and delays, then close the server. Safe to call twice."""
        if self._runner is None:
            return
        self._stopping = True
        self._stop_event.set()
        self._wake_pollers()
        runner, self._runner = self._runner, None
        await runner.cleanup()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def __aenter__(self) -> LocalBotAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (only while running)."""
        if self._port is None:
            raise RuntimeError("LocalBotAPI is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """For ``ApplicationBuilder().base_url(...)``: PTB appends ``{token}/{method}``."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """For ``ApplicationBuilder().base_file_url(...)``: downloads of ``getFile`` paths."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    # -- inspection -----------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        """All calls of ``method`` (faulted ones included)."""
        return [c for c in self.calls if c.method == method]

    def sent_messages(self, chat_id: int | str | None = None) -> list[Call]:
        """Successful calls that put content into a chat (optionally one chat)."""
        target = self._peek_chat_id(chat_id)
        return [c for c in self.calls if c.method in SEND_METHODS and c.ok and (target is None or c.chat_id == target)]

    def sent_texts(self, chat_id: int | str | None = None) -> list[str]:
        """What users saw of :meth:`sent_messages`: texts or captions after formatting."""
        return [text for c in self.sent_messages(chat_id) if (text := c.shown_text) is not None]

    def commands(self, scope: Mapping[str, Any] | None = None, language_code: str | None = None) -> list[JSONDict]:
        """The command list of the last setMyCommands, or of one scope / language if given."""
        if scope is None and language_code is None:
            return copy.deepcopy(self._last_commands)
        return copy.deepcopy(self._commands.get(self._commands_key(scope, language_code), []))

    def get_message(self, chat_id: int, message_id: int) -> JSONDict | None:
        """The current state of a message (after edits), or ``None`` if unknown or deleted."""
        message = self._messages.get((chat_id, message_id))
        return copy.deepcopy(message) if message is not None else None

    def pending_updates(self) -> list[JSONDict]:
        """Updates not yet confirmed by a getUpdates ``offset``."""
        return copy.deepcopy(self._updates)

    def mark(self) -> int:
        """The current number of calls: pass as ``since=`` to wait only for later calls."""
        return len(self.calls)

    # A plain ``timeout`` argument (not ``asyncio.timeout`` around the call) keeps test code short and
    # lets the TimeoutError carry the list of recent calls.
    async def wait_for(
        self,
        predicate: Callable[[Call], bool],
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Call:
        """Return the first call at index ``since`` or later that satisfies ``predicate``.

        Calls already recorded count, so waiting after the bot has answered is not a race;
        pass ``since=api.mark()`` (taken before the action) to ignore older calls.
        Raises ``TimeoutError`` listing the recent calls when none arrives in time.
        """
        checked = since
        found: list[Call] = []

        def scan() -> bool:
            nonlocal checked
            while checked < len(self.calls):
                call = self.calls[checked]
                checked += 1
                if predicate(call):
                    found.append(call)
                    return True
            return False

        try:
            async with asyncio.timeout(timeout), self._calls_cond:
                await self._calls_cond.wait_for(scan)
        except TimeoutError:
            raise TimeoutError(self._timeout_message(f"no matching call within {timeout}s", since)) from None
        return found[0]

    async def wait_for_count(
        self,
        method: str,
        n: int,
        timeout: float = 10.0,
        chat_id: int | str | None = None,
        *,
        ok_only: bool = False,
        since: int = 0,
    ) -> list[Call]:
        """Wait until at least ``n`` calls of ``method`` (to ``chat_id``; successful ones
        only with ``ok_only``) exist from index ``since`` on, and return them."""
        target = self._peek_chat_id(chat_id)

        def matching() -> list[Call]:
            return [
                c
                for c in self.calls[since:]
                if c.method == method and (target is None or c.chat_id == target) and (c.ok or not ok_only)
            ]

        try:
            async with asyncio.timeout(timeout), self._calls_cond:
                await self._calls_cond.wait_for(lambda: len(matching()) >= n)
        except TimeoutError:
            got = len(matching())
            raise TimeoutError(
                self._timeout_message(f"expected {n} {method} call(s) within {timeout}s, got {got}", since)
            ) from None
        return matching()

    def _timeout_message(self, headline: str, since: int, last: int = 15) -> str:
        recent = [(i, c) for i, c in enumerate(self.calls) if i >= since and c.method != "getUpdates"]
        polls = sum(1 for c in self.calls[since:] if c.method == "getUpdates")
        lines = [f"{headline}; {len(recent)} call(s) since #{since} ({polls} getUpdates polls not shown)"]
        lines += [f"  #{i} {c.describe()}" for i, c in recent[-last:]]
        return "\n".join(lines)

    # -- faults and latency ---------------------------------------------------------------

    def fail(
        self,
        method: str,
        error_code: int,
        description: str,
        *,
        times: int | None = 1,
        retry_after: int | None = None,
        chat_id: int | str | None = None,
        share: float = 1.0,
        stall: float = 0.0,
    ) -> Fault:
        """Answer the next ``times`` calls of ``method`` (``"*"``: any; ``times=None``:
        forever), optionally only those aimed at ``chat_id``, with this error.

        With ``share`` below 1 only that share of the matching calls is faulted (chosen by the
        seeded generator): ``fail("sendMessage", 502, "Bad Gateway", times=None, share=0.2)``
        is a flaky gateway. ``stall`` holds the answer first, so a client with a shorter read
        timeout times out (the error then reaches nobody). An ``@username`` chat_id is resolved
        now, so register the chat first. Faulted calls are recorded with ``error_code`` set and
        never count as delivered.
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for forever")
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be in (0, 1]")
        fault = Fault(method, error_code, description, times, retry_after, self._peek_chat_id(chat_id), share, stall)
        self.faults.append(fault)
        return fault

    def block_user(self, chat_id: int) -> list[Fault]:
        """Make every send to ``chat_id`` fail as it does after the user blocked the bot."""
        return [
            self.fail(method, 403, "Forbidden: bot was blocked by the user", times=None, chat_id=chat_id)
            for method in sorted(_BLOCKABLE_METHODS)
        ]

    def unblock_user(self, chat_id: int) -> None:
        """Undo :meth:`block_user` (the user pressed Restart)."""
        self.faults = [f for f in self.faults if not (f.chat_id == chat_id and f.error_code == 403)]

    def clear_faults(self) -> None:
        """Forget all pending faults."""
        self.faults.clear()

    def set_latency(self, method: str, seconds: float) -> None:
        """Delay answers to ``method`` (``"*"``: every method) by ``seconds``."""
        self.latency[method] = seconds

    def _take_fault(self, method: str, chat_id: int | str | None) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, chat_id):
                if fault.share < 1.0 and self._rng.random() >= fault.share:
                    continue  # this call is spared
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    # -- chats, users, messages -----------------------------------------------------------

    def register_chat(self, chat: Mapping[str, Any]) -> JSONDict:
        """Make a chat known (``id`` and ``type`` required) so getChat and sends use it."""
        if not isinstance(chat.get("id"), int) or not isinstance(chat.get("type"), str):
            raise ValueError("a chat needs an int 'id' and a str 'type'")
        stored = self._chats.setdefault(chat["id"], {})
        stored.clear()
        stored.update(copy.deepcopy(dict(chat)))
        username = stored.get("username")
        if isinstance(username, str) and username:
            self._usernames[username.lower()] = stored["id"]
        return copy.deepcopy(stored)

    def set_member(self, chat_id: int, user_id: int, status: str, **fields: Any) -> JSONDict:
        """Record a chat member's status (creator, administrator, member, left, kicked)."""
        user = self.bot_user if user_id == self.bot_id else self._user(user_id)
        member = self._member_dict(user, status, fields)
        self._members[(chat_id, user_id)] = member
        return copy.deepcopy(member)

    @property
    def bot_user(self) -> JSONDict:
        """The bot as a User object."""
        return {"id": self.bot_id, "is_bot": True, "first_name": self.bot_first_name, "username": self.bot_username}

    def _member_dict(self, user: JSONDict, status: str, fields: Mapping[str, Any]) -> JSONDict:
        member: JSONDict = {"user": copy.deepcopy(user), "status": status}
        if status == "administrator":
            member.update({"can_be_edited": False, "is_anonymous": False})
            member.update(dict.fromkeys(_ADMIN_RIGHTS, True))
        elif status == "creator":
            member["is_anonymous"] = False
        elif status == "kicked":
            member["until_date"] = 0
        elif status not in ("member", "left"):
            raise ValueError(f"unsupported member status {status!r}")
        member.update(fields)
        return member

    def _user(self, user_id: int, first_name: str | None = None, username: str | None = None) -> JSONDict:
        user = self._users.get(user_id)
        if user is None:
            user = {"id": user_id, "is_bot": False, "first_name": first_name or "User"}
            self._users[user_id] = user
        if first_name:
            user["first_name"] = first_name
        if username:
            user["username"] = username
        return copy.deepcopy(user)

    def _chat(self, chat_id: int) -> JSONDict:
        """A known chat, or one made up from the id's shape (and then remembered)."""
        chat = self._chats.get(chat_id)
        if chat is None:
            if chat_id > 0:
                user = self._users.get(chat_id, {})
                chat = {"id": chat_id, "type": "private", "first_name": user.get("first_name", "User")}
                if "username" in user:
                    chat["username"] = user["username"]
            elif str(chat_id).startswith("-100"):
                chat = {"id": chat_id, "type": "channel", "title": f"Channel {chat_id}"}
            else:
                chat = {"id": chat_id, "type": "group", "title": f"Group {chat_id}"}
            self._chats[chat_id] = chat
        return copy.deepcopy(chat)

    def _resolve_chat(self, value: Any, key: str = "chat_id") -> JSONDict:
        chat_id = coerce_chat_id(value)
        if chat_id is None:
            raise bad_request(f"{key} is empty")
        if isinstance(chat_id, str):
            known = self._usernames.get(chat_id.removeprefix("@").lower())
            if known is None:
                raise bad_request("chat not found")
            chat_id = known
        return self._chat(chat_id)

    def _peek_chat_id(self, value: Any) -> int | str | None:
        chat_id = coerce_chat_id(value)
        if isinstance(chat_id, str):
            return self._usernames.get(chat_id.removeprefix("@").lower(), chat_id)
        return chat_id

    def _next_id(self) -> int:
        self._counter += 1
        return self._counter

    def _next_message_id(self, chat_id: int, wanted: int | None = None) -> int:
        message_id = wanted if wanted is not None else self._last_message_id.get(chat_id, 0) + 1
        self._last_message_id[chat_id] = max(self._last_message_id.get(chat_id, 0), message_id)
        return message_id

    def _now(self) -> int:
        return int(self.clock())

    def _bot_message(self, chat: JSONDict, content: Mapping[str, Any]) -> JSONDict:
        """A message from the bot into ``chat``, stored so it can be edited or forwarded."""
        message: JSONDict = {"message_id": self._next_message_id(chat["id"]), "date": self._now(), "chat": chat}
        if chat["type"] == "channel":
            message["sender_chat"] = copy.deepcopy(chat)
        else:
            message["from"] = self.bot_user
        message.update({k: v for k, v in content.items() if v is not None and v != []})
        key = (chat["id"], message["message_id"])
        self._messages[key] = message
        self._bot_messages.add(key)
        return copy.deepcopy(message)

    def _remember_message(self, message: Mapping[str, Any]) -> None:
        chat = message.get("chat")
        if not isinstance(chat, dict) or not isinstance(chat.get("id"), int):
            return
        if chat["id"] not in self._chats:
            self.register_chat(chat)
        sender = message.get("from")
        if isinstance(sender, dict) and isinstance(sender.get("id"), int) and not sender.get("is_bot"):
            self._users.setdefault(sender["id"], copy.deepcopy(sender))
        message_id = message.get("message_id")
        if isinstance(message_id, int):
            self._next_message_id(chat["id"], message_id)
            self._messages[(chat["id"], message_id)] = copy.deepcopy(dict(message))

    # -- files ----------------------------------------------------------------------------

    def _new_file(self, kind: str, data: bytes | None, filename: str | None, content_type: str | None) -> StoredFile:
        n = self._next_id()
        if filename is None and kind != "photo":
            filename = f"file_{n}{mimetypes.guess_extension(content_type or '') or ''}"
        extension = "." + filename.rsplit(".", 1)[-1] if filename and "." in filename else ".jpg"
        stored = StoredFile(
            file_id=f"{kind[:3].upper()}-file-{n:06d}",
            file_unique_id=f"uniq{n:06d}",
            kind=kind,
            data=data,
            filename=filename,
            content_type=content_type,
            size=len(data) if data is not None else 2048,
            file_path=f"{kind}s/file_{n}{extension}",
        )
        stored.media = self._media_object(stored)
        self.files[stored.file_id] = stored
        return stored

    def _media_object(self, stored: StoredFile) -> Any:
        base: JSONDict = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
        }
        if stored.kind == "photo":
            thumb_id = f"{stored.file_id}-s"
            thumb: JSONDict = {
                "file_id": thumb_id,
                "file_unique_id": f"{stored.file_unique_id}s",
                "file_size": max(1, stored.size // 10),
                "width": 90,
                "height": 51,
            }
            sizes = [thumb, {**base, "width": 1280, "height": 720}]
            self.files[thumb_id] = StoredFile(
                thumb_id,
                thumb["file_unique_id"],
                "photo",
                None,
                None,
                "image/jpeg",
                thumb["file_size"],
                stored.file_path.replace(".", "_s.", 1),
                sizes,
            )
            return sizes
        if stored.filename:
            base["file_name"] = stored.filename
        if stored.content_type:
            base["mime_type"] = stored.content_type
        if stored.kind in ("video", "animation"):
            base.update({"width": 1280, "height": 720, "duration": 1})
        elif stored.kind in ("audio", "voice"):
            base["duration"] = 1
            if stored.kind == "voice":
                base.pop("file_name", None)
        return base

    def _input_file(self, call: Call, field_name: str, kind: str, reference: Any = None) -> StoredFile:
        """The file of a send: a multipart upload, an ``attach://`` part, a known file_id or a URL."""
        if reference is None:
            reference = call.params.get(field_name)
        upload = call.files.get(field_name)
        if isinstance(reference, str) and reference.startswith("attach://"):
            upload = call.files.get(reference.removeprefix("attach://"))
            if upload is None:
                raise bad_request(f"file of field {reference.removeprefix('attach://')} not found")
        if upload is not None:
            return self._new_file(kind, upload.data, upload.filename, upload.content_type)
        if isinstance(reference, str) and reference:
            known = self.files.get(reference)
            if known is not None:
                return known
            if reference.startswith(("http://", "https://")):
                name = reference.rsplit("/", 1)[-1] or None
                return self._new_file(kind, None, name, mimetypes.guess_type(reference)[0])
            raise bad_request("wrong file identifier/HTTP URL specified")
        raise bad_request(f"there is no {field_name} in the request")

    def _media_content(self, stored: StoredFile, kind: str) -> JSONDict:
        if stored.kind != kind:
            raise bad_request(f"can't use file of type {stored.kind.title()} as {kind.title()}")
        return {kind: copy.deepcopy(stored.media)}

    # -- updates --------------------------------------------------------------------------

    def inject(self, update: Mapping[str, Any]) -> JSONDict:
        """Queue an update for getUpdates and wake long polls.

        The ``update_id`` is assigned here (increasing); chats, users and messages it
        carries are remembered so that later getChat / forwardMessage / edits know them.
        Returns the update as queued.
        """
        stored: JSONDict = {k: copy.deepcopy(v) for k, v in update.items() if k != "update_id"}
        stored = {"update_id": self._next_update_id, **stored}
        self._next_update_id += 1
        for key in _MESSAGE_UPDATE_KEYS:
            message = stored.get(key)
            if isinstance(message, dict):
                self._remember_message(message)
        for key in ("my_chat_member", "chat_member"):
            event = stored.get(key)
            if isinstance(event, dict) and isinstance(event.get("chat"), dict):
                if event["chat"].get("id") not in self._chats:
                    self.register_chat(event["chat"])
        self._updates.append(stored)
        self._wake_pollers()
        return copy.deepcopy(stored)

    def _wake_pollers(self) -> None:
        event, self._updates_changed = self._updates_changed, asyncio.Event()
        event.set()

    def _deliverable(self, limit: int) -> list[JSONDict]:
        allowed = self._allowed_updates
        batch = []
        for update in self._updates:
            kind = next((k for k in update if k != "update_id"), "")
            if (kind not in allowed) if allowed else (kind in _NOT_DELIVERED_BY_DEFAULT):
                continue
            batch.append(copy.deepcopy(update))
            if len(batch) >= limit:
                break
        return batch

    def send_user_message(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        first_name: str | None = None,
        username: str | None = None,
        photo: bool = False,
        caption: str | None = None,
        forward_origin: Mapping[str, Any] | None = None,
        message_id: int | None = None,
        entities: list[JSONDict] | None = None,
    ) -> JSONDict:
        """Inject a ``message`` a user wrote (in private by default, or in a group).

        A text starting with ``/`` gets the ``bot_command`` entity Telegram adds, so
        CommandHandler fires. With ``photo=True`` the message carries photo sizes and
        ``caption`` (or ``text`` when no caption is given) instead of a text.
        """
        user = self._user(user_id, first_name, username)
        if chat_type == "private":
            if chat_id not in (None, user_id):
                raise ValueError("a private chat's id is the user's id")
            chat: JSONDict = {"id": user_id, "type": "private", "first_name": user["first_name"]}
            if "username" in user:
                chat["username"] = user["username"]
            self.register_chat(chat)
        elif chat_type in ("group", "supergroup"):
            if chat_id is None:
                raise ValueError("a group message needs chat_id")
            chat = self._chats.get(chat_id) or self.register_chat(
                {"id": chat_id, "type": chat_type, "title": f"Group {chat_id}"}
            )
        else:
            raise ValueError("users write in private, group or supergroup chats (channels post via post_to_channel)")
        message: JSONDict = {
            "message_id": self._next_message_id(chat["id"], message_id),
            "date": self._now(),
            "from": user,
            "chat": copy.deepcopy(chat),
        }
        all_entities = list(entities or [])
        if text.startswith("/") and forward_origin is None:
            command = text.split(maxsplit=1)[0]
            all_entities.insert(0, {"type": "bot_command", "offset": 0, "length": utf16_len(command)})
        if photo:
            message["photo"] = self._new_file("photo", None, None, "image/jpeg").media
            shown = caption if caption is not None else text
            if shown:
                message["caption"] = shown
                if all_entities:
                    message["caption_entities"] = all_entities
        else:
            message["text"] = text
            if all_entities:
                message["entities"] = all_entities
        if forward_origin is not None:
            message["forward_origin"] = copy.deepcopy(dict(forward_origin))
        return self.inject({"message": message})

    def _channel_chat(self, channel_id: int, username: str | None, title: str) -> JSONDict:
        chat: JSONDict = {"id": channel_id, "type": "channel", "title": title}
        if username:
            chat["username"] = username.removeprefix("@")
        return self.register_chat(chat)

    def _channel_message(
        self,
        chat: JSONDict,
        message_id: int,
        text: str | None,
        caption: str | None,
        photo: bool,
        date: int,
        entities: list[JSONDict] | None,
    ) -> JSONDict:
        message: JSONDict = {
            "message_id": message_id,
            "date": date,
            "chat": copy.deepcopy(chat),
            "sender_chat": copy.deepcopy(chat),
        }
        if photo:
            message["photo"] = self._new_file("photo", None, None, "image/jpeg").media
            shown = caption if caption is not None else text
            if shown:
                message["caption"] = shown
                if entities:
                    message["caption_entities"] = entities
        elif text is not None:
            message["text"] = text
            if entities:
                message["entities"] = entities
        else:
            raise ValueError("a channel post needs text, or photo=True")
        return message

    def post_to_channel(
        self,
        channel_id: int,
        username: str | None,
        title: str,
        message_id: int,
        text: str | None = None,
        *,
        caption: str | None = None,
        photo: bool = False,
        date: int | None = None,
        entities: list[JSONDict] | None = None,
    ) -> JSONDict:
        """Inject a ``channel_post`` (the bot sees these only where it is an admin)."""
        chat = self._channel_chat(channel_id, username, title)
        message = self._channel_message(
            chat, message_id, text, caption, photo, date if date is not None else self._now(), entities
        )
        return self._inject_channel_update("channel_post", message)

    def edit_channel_post(
        self,
        channel_id: int,
        username: str | None,
        title: str,
        message_id: int,
        text: str | None = None,
        *,
        caption: str | None = None,
        photo: bool = False,
        date: int | None = None,
        edit_date: int | None = None,
        entities: list[JSONDict] | None = None,
    ) -> JSONDict:
        """Inject an ``edited_channel_post``; ``date`` defaults to the original post's."""
        chat = self._channel_chat(channel_id, username, title)
        original = self._messages.get((channel_id, message_id), {})
        if date is None:
            original_date = original.get("date")
            date = original_date if isinstance(original_date, int) else self._now()
        message = self._channel_message(chat, message_id, text, caption, photo, date, entities)
        message["edit_date"] = edit_date if edit_date is not None else max(self._now(), date)
        return self._inject_channel_update("edited_channel_post", message)

    def _inject_channel_update(self, kind: str, message: JSONDict) -> JSONDict:
        channel_id = message["chat"]["id"]
        bot_member = self._members.get((channel_id, self.bot_id))
        if self.require_admin_for_channel_posts and (bot_member is None or bot_member["status"] != "administrator"):
            self._remember_message(message)
            update = {"update_id": None, kind: message}
            self.dropped_updates.append(update)
            return update
        return self.inject({kind: message})

    def press_button(
        self,
        user_id: int,
        message: Mapping[str, Any] | Call,
        data: str,
        *,
        first_name: str | None = None,
        username: str | None = None,
        check: bool = True,
    ) -> JSONDict:
        """Inject a ``callback_query``: ``user_id`` pressed the button ``data`` on a bot message.

        ``message`` is a message the bot sent (a Call's ``result``, or the Call itself); the
        query carries its current state (after edits), as Telegram's does. With ``check``
        (the default), pressing a button the message does not have raises ``ValueError``:
        a test would otherwise pass for the wrong reason.
        """
        sent = message.result if isinstance(message, Call) else message
        if isinstance(sent, list) and sent:
            sent = sent[0]
        if not isinstance(sent, Mapping) or not isinstance(sent.get("chat"), Mapping):
            raise ValueError("press_button needs a message dict (a Call's result)")
        current = self._messages.get((sent["chat"]["id"], sent["message_id"]), dict(sent))
        if check:
            markup = current.get("reply_markup")
            keyboard = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
            available = [b.get("callback_data") for row in keyboard for b in row if isinstance(b, dict)]
            if data not in available:
                raise ValueError(f"message has no button with callback_data {data!r}; it has {available}")
        query_id = str(4_000_000_000 + self._next_id())
        self._callback_ids.add(query_id)
        return self.inject(
            {
                "callback_query": {
                    "id": query_id,
                    "from": self._user(user_id, first_name, username),
                    "chat_instance": str(abs(current["chat"]["id"]) * 7 + 1),
                    "message": copy.deepcopy(current),
                    "data": data,
                }
            }
        )

    def add_bot_to_channel(
        self,
        channel_id: int,
        username: str | None,
        title: str,
        by_user_id: int,
        status: str = "administrator",
        *,
        date: int | None = None,
    ) -> JSONDict:
        """Inject ``my_chat_member``: ``by_user_id`` made the bot ``status`` in a channel.

        ``old_chat_member`` is the bot's previous status there (``left`` at first), so the
        same call with ``status="left"`` or ``"kicked"`` models removing the bot.
        """
        chat = self._channel_chat(channel_id, username, title)
        previous = self._members.get((channel_id, self.bot_id)) or self._member_dict(self.bot_user, "left", {})
        new = self.set_member(channel_id, self.bot_id, status)
        if not any(k[0] == channel_id and m["status"] == "creator" for k, m in self._members.items()):
            self.set_member(channel_id, by_user_id, "creator")
        return self.inject(
            {
                "my_chat_member": {
                    "chat": chat,
                    "from": self._user(by_user_id),
                    "date": date if date is not None else self._now(),
                    "old_chat_member": copy.deepcopy(previous),
                    "new_chat_member": new,
                }
            }
        )

    def forward_from_channel(
        self,
        user_id: int,
        channel_id: int,
        username: str | None,
        title: str,
        channel_message_id: int,
        text: str,
        date: int | None = None,
        *,
        first_name: str | None = None,
    ) -> JSONDict:
        """Inject a private message in which the user forwards a channel's post to the bot."""
        chat = self._channel_chat(channel_id, username, title)
        origin = {
            "type": "channel",
            "chat": chat,
            "message_id": channel_message_id,
            "date": date if date is not None else self._now(),
        }
        return self.send_user_message(user_id, text, first_name=first_name, forward_origin=origin)

    # -- HTTP -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = self.clock()
        token = request.match_info["token"]
        raw_method = request.match_info["method"]
        method = self._canonical.get(raw_method.lower(), raw_method)
        self.tokens_seen.add(token)
        try:
            params, files = await read_request(request)
        except (ValueError, UnicodeDecodeError) as exc:
            params, files = {}, {}
            call = Call(method, params, files, time=arrived, token=token)
            return await self._answer(call, bad_request(f"can't parse request: {exc}"))
        call = Call(method, params, files, time=arrived, token=token)
        target = self._peek_chat_id(params.get("chat_id"))
        if isinstance(target, int):
            call.resolved_chat_id = target
        if self.token is not None and token != self.token:
            return await self._answer(call, ApiError(401, "Unauthorized"))
        delay = self.latency.get(method, self.latency.get("*", 0.0))
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)
        fault = self._take_fault(method, target)
        if fault is not None:
            if fault.stall > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), fault.stall)
            return await self._answer(call, ApiError(fault.error_code, fault.description, fault.retry_after))
        handler = self._handlers.get(method)
        try:
            if handler is None:
                _LOGGER.debug("LocalBotAPI: unmodelled method %s answered True", method)
                result: Any = True
            else:
                result = await handler(call)
        except ApiError as exc:
            return await self._answer(call, exc)
        call.result = copy.deepcopy(result)
        return await self._answer(call, None)

    async def _answer(self, call: Call, error: ApiError | None) -> web.Response:
        payload: JSONDict
        if error is None:
            payload = {"ok": True, "result": call.result}
        else:
            call.error_code, call.description, call.retry_after = error.error_code, error.description, error.retry_after
            payload = {"ok": False, "error_code": error.error_code, "description": error.description}
            if error.retry_after is not None:
                payload["parameters"] = {"retry_after": error.retry_after}
        async with self._calls_cond:
            self.calls.append(call)
            self._calls_cond.notify_all()
        if self.on_call is not None:
            try:
                self.on_call(call)
            except Exception:  # a broken transcript printer must not break the bot under test
                _LOGGER.exception("LocalBotAPI on_call hook failed")
        # PTB maps errors by the HTTP status, not by the body's error_code: send both, as Telegram does.
        return web.json_response(payload, status=200 if error is None else error.error_code)

    async def _handle_file(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        for stored in self.files.values():
            if stored.file_path == path and stored.data is not None:
                return web.Response(body=stored.data, content_type=stored.content_type or "application/octet-stream")
        return web.Response(status=404, text="Not Found")

    # -- methods --------------------------------------------------------------------------

    def _method_table(self) -> dict[str, _Handler]:
        return {
            "getMe": self._get_me,
            "deleteWebhook": self._true,
            "setWebhook": self._true,
            "getWebhookInfo": self._get_webhook_info,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "deleteMessages": self._delete_messages,
            "answerCallbackQuery": self._answer_callback_query,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setChatMenuButton": self._set_chat_menu_button,
            "getChatMenuButton": self._get_chat_menu_button,
            "forwardMessage": self._forward_message,
            "forwardMessages": self._forward_messages,
            "copyMessage": self._copy_message,
            "copyMessages": self._copy_messages,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendVideo": self._send_video,
            "sendAudio": self._send_audio,
            "sendVoice": self._send_voice,
            "sendAnimation": self._send_animation,
            "sendMediaGroup": self._send_media_group,
            "sendChatAction": self._true,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getChatAdministrators": self._get_chat_administrators,
            "getChatMemberCount": self._get_chat_member_count,
            "getFile": self._get_file,
            "close": self._true,
            "logOut": self._true,
        }

    async def _true(self, call: Call) -> bool:
        return True

    async def _get_me(self, call: Call) -> JSONDict:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_webhook_info(self, call: Call) -> JSONDict:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    async def _get_updates(self, call: Call) -> list[JSONDict]:
        """Long polling: confirm below ``offset``, then hold up to ``min(timeout, max_poll_wait)``."""
        params = call.params
        offset = params.get("offset")
        if isinstance(offset, int) and offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif isinstance(offset, int) and offset < 0:
            self._updates = self._updates[offset:]
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(a) for a in allowed]
        limit = params.get("limit")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = params.get("timeout")
        if isinstance(timeout, str):
            with contextlib.suppress(ValueError):
                timeout = float(timeout)
        wait = min(float(timeout), self.max_poll_wait) if isinstance(timeout, int | float) and timeout > 0 else 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            batch = self._deliverable(limit)
            remaining = deadline - loop.time()
            if batch or self._stopping or remaining <= 0:
                return batch
            changed = self._updates_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _message_key(self, call: Call) -> tuple[int, int] | None:
        """(chat id, message id) of an edit, or None for inline-message edits."""
        if "inline_message_id" in call.params:
            return None
        chat = self._resolve_chat(call.params.get("chat_id"))
        message_id = call.params.get("message_id")
        if not isinstance(message_id, int):
            raise bad_request("message identifier is not specified")
        return chat["id"], message_id

    def _editable(self, key: tuple[int, int]) -> JSONDict:
        message = self._messages.get(key)
        if message is None:
            raise bad_request("message to edit not found")
        if key not in self._bot_messages:
            raise bad_request("message can't be edited")
        return message

    def _checked_markup(self, call: Call) -> JSONDict | None:
        """The inline keyboard to show on the message, validated; other keyboards aren't shown."""
        markup = call.params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            _validate_inline_keyboard(markup)
            return markup
        return None

    def _apply_edit(self, key: tuple[int, int], changes: JSONDict) -> JSONDict:
        message = self._editable(key)
        updated = {k: v for k, v in message.items() if k not in changes}
        updated.update({k: v for k, v in changes.items() if v is not None and v != []})
        comparable = ("text", "entities", "caption", "caption_entities", "reply_markup")
        if all(message.get(k) == updated.get(k) for k in comparable):
            raise bad_request(
                "message is not modified: specified new message content and reply markup are exactly the same "
                "as a current content and reply markup of the message"
            )
        updated["edit_date"] = self._now()
        self._messages[key] = updated
        return copy.deepcopy(updated)

    async def _edit_message_text(self, call: Call) -> JSONDict | bool:
        text, entities = self._checked_text(call, "text", _MAX_TEXT)
        markup = self._checked_markup(call)
        key = self._message_key(call)
        if key is None:
            return True
        message = self._editable(key)
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        return self._apply_edit(key, {"text": text, "entities": entities, "reply_markup": markup})

    async def _edit_message_caption(self, call: Call) -> JSONDict | bool:
        caption, entities = self._checked_caption(call)
        markup = self._checked_markup(call)
        key = self._message_key(call)
        if key is None:
            return True
        return self._apply_edit(key, {"caption": caption, "caption_entities": entities, "reply_markup": markup})

    async def _edit_message_reply_markup(self, call: Call) -> JSONDict | bool:
        markup = self._checked_markup(call)
        key = self._message_key(call)
        if key is None:
            return True
        return self._apply_edit(key, {"reply_markup": markup})

    async def _delete_message(self, call: Call) -> bool:
        chat = self._resolve_chat(call.params.get("chat_id"))
        message_id = call.params.get("message_id")
        if not isinstance(message_id, int) or (chat["id"], message_id) not in self._messages:
            raise bad_request("message to delete not found")
        del self._messages[(chat["id"], message_id)]
        return True

    async def _delete_messages(self, call: Call) -> bool:
        chat = self._resolve_chat(call.params.get("chat_id"))
        ids = call.params.get("message_ids")
        for message_id in ids if isinstance(ids, list) else []:
            self._messages.pop((chat["id"], message_id), None)
        return True

    async def _answer_callback_query(self, call: Call) -> bool:
        query_id = call.params.get("callback_query_id")
        if not isinstance(query_id, str) or query_id not in self._callback_ids:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        self.callback_answers[query_id] = dict(call.params)
        return True

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope_dict = scope if isinstance(scope, Mapping) else {"type": "default"}
        return json.dumps(dict(scope_dict), sort_keys=True), language_code if isinstance(language_code, str) else ""

    async def _set_my_commands(self, call: Call) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad_request("commands must be a list of at most 100 BotCommand")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_RE.fullmatch(str(command.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            description = command.get("description")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(call.params.get("scope"), call.params.get("language_code"))
        self._commands[key] = copy.deepcopy(commands)
        self._last_commands = copy.deepcopy(commands)
        return True

    async def _get_my_commands(self, call: Call) -> list[JSONDict]:
        key = self._commands_key(call.params.get("scope"), call.params.get("language_code"))
        return copy.deepcopy(self._commands.get(key, []))

    async def _delete_my_commands(self, call: Call) -> bool:
        key = self._commands_key(call.params.get("scope"), call.params.get("language_code"))
        removed = self._commands.pop(key, None)
        if removed is not None and removed == self._last_commands:
            self._last_commands = []
        return True

    async def _set_chat_menu_button(self, call: Call) -> bool:
        chat_id = coerce_chat_id(call.params.get("chat_id"))
        button = call.params.get("menu_button")
        self._menu_buttons[chat_id if isinstance(chat_id, int) else None] = (
            button if isinstance(button, dict) else {"type": "default"}
        )
        return True

    async def _get_chat_menu_button(self, call: Call) -> JSONDict:
        chat_id = coerce_chat_id(call.params.get("chat_id"))
        key = chat_id if isinstance(chat_id, int) else None
        return copy.deepcopy(self._menu_buttons.get(key, self._menu_buttons.get(None, {"type": "default"})))

    def _checked_text(self, call: Call, key: str, limit: int) -> tuple[str, list[JSONDict]]:
        raw = call.params.get(key)
        if not isinstance(raw, str) or not raw.strip():
            raise bad_request("message text is empty")
        text, entities = format_text(raw, call.params.get("parse_mode"), call.params.get("entities"))
        if not text.strip():
            raise bad_request("message text is empty")
        if utf16_len(text) > limit:
            raise bad_request("message is too long")
        return text, entities

    def _checked_caption(
        self, call: Call, params: Mapping[str, Any] | None = None
    ) -> tuple[str | None, list[JSONDict]]:
        source = call.params if params is None else params
        raw = source.get("caption")
        if not isinstance(raw, str) or not raw:
            return None, []
        caption, entities = format_text(raw, source.get("parse_mode"), source.get("caption_entities"))
        if utf16_len(caption) > _MAX_CAPTION:
            raise bad_request("message caption is too long")
        return caption, entities

    def _reply_to(self, call: Call, chat: JSONDict) -> JSONDict | None:
        reply = call.params.get("reply_parameters")
        message_id = reply.get("message_id") if isinstance(reply, dict) else call.params.get("reply_to_message_id")
        if not isinstance(message_id, int):
            return None
        target_chat = reply.get("chat_id", chat["id"]) if isinstance(reply, dict) else chat["id"]
        original = self._messages.get((self._resolve_chat(target_chat)["id"], message_id))
        if original is None:
            allow = isinstance(reply, dict) and reply.get("allow_sending_without_reply")
            if not allow and not call.params.get("allow_sending_without_reply"):
                raise bad_request("message to be replied not found")
            return None
        return {k: v for k, v in copy.deepcopy(original).items() if k != "reply_to_message"}

    async def _send_message(self, call: Call) -> JSONDict:
        chat = self._resolve_chat(call.params.get("chat_id"))
        text, entities = self._checked_text(call, "text", _MAX_TEXT)
        return self._bot_message(
            chat,
            {
                "text": text,
                "entities": entities,
                "reply_markup": self._checked_markup(call),
                "link_preview_options": call.params.get("link_preview_options"),
                "reply_to_message": self._reply_to(call, chat),
            },
        )

    async def _send_file(self, call: Call, kind: str) -> JSONDict:
        chat = self._resolve_chat(call.params.get("chat_id"))
        caption, entities = self._checked_caption(call)
        markup = self._checked_markup(call)
        content = self._media_content(self._input_file(call, kind, kind), kind)
        content.update({"caption": caption, "caption_entities": entities, "reply_markup": markup})
        content["reply_to_message"] = self._reply_to(call, chat)
        return self._bot_message(chat, content)

    async def _send_photo(self, call: Call) -> JSONDict:
        return await self._send_file(call, "photo")

    async def _send_document(self, call: Call) -> JSONDict:
        return await self._send_file(call, "document")

    async def _send_video(self, call: Call) -> JSONDict:
        return await self._send_file(call, "video")

    async def _send_audio(self, call: Call) -> JSONDict:
        return await self._send_file(call, "audio")

    async def _send_voice(self, call: Call) -> JSONDict:
        return await self._send_file(call, "voice")

    async def _send_animation(self, call: Call) -> JSONDict:
        return await self._send_file(call, "animation")

    async def _send_media_group(self, call: Call) -> list[JSONDict]:
        chat = self._resolve_chat(call.params.get("chat_id"))
        media = call.params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise bad_request("media group must include 2-10 items")
        group_id = str(10_000_000 + self._next_id())
        contents = []
        for item in media:
            if not isinstance(item, dict) or item.get("type") not in ("photo", "document", "video", "audio"):
                raise bad_request("wrong type of the media in the media group")
            kind = str(item["type"])
            stored = self._input_file(call, "media", kind, reference=item.get("media"))
            caption, entities = self._checked_caption(call, item)
            content = self._media_content(stored, kind)
            content.update({"caption": caption, "caption_entities": entities, "media_group_id": group_id})
            contents.append(content)
        return [self._bot_message(chat, content) for content in contents]

    def _source_message(self, call: Call, message_id: Any) -> tuple[JSONDict, JSONDict]:
        source_chat = self._resolve_chat(call.params.get("from_chat_id"), "from_chat_id")
        original = self._messages.get((source_chat["id"], message_id)) if isinstance(message_id, int) else None
        if original is None:
            raise bad_request(
                "message to forward not found" if "forward" in call.method else "message to copy not found"
            )
        return source_chat, original

    def _forward_one(self, chat: JSONDict, source_chat: JSONDict, original: JSONDict) -> JSONDict:
        content = {k: copy.deepcopy(original[k]) for k in _CONTENT_KEYS if k in original}
        origin = original.get("forward_origin")
        if origin is None:
            if source_chat["type"] == "channel":
                origin = {
                    "type": "channel",
                    "chat": copy.deepcopy(source_chat),
                    "message_id": original["message_id"],
                    "date": original["date"],
                }
            elif isinstance(original.get("sender_chat"), dict):
                origin = {"type": "chat", "sender_chat": original["sender_chat"], "date": original["date"]}
            else:
                origin = {"type": "user", "sender_user": original.get("from", self.bot_user), "date": original["date"]}
        content["forward_origin"] = copy.deepcopy(origin)
        return self._bot_message(chat, content)

    async def _forward_message(self, call: Call) -> JSONDict:
        chat = self._resolve_chat(call.params.get("chat_id"))
        source_chat, original = self._source_message(call, call.params.get("message_id"))
        return self._forward_one(chat, source_chat, original)

    def _many(self, call: Call) -> list[tuple[JSONDict, JSONDict]]:
        ids = call.params.get("message_ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise bad_request("message_ids must be a list of 1-100 message identifiers")
        found = []
        for message_id in sorted(i for i in ids if isinstance(i, int)):
            with contextlib.suppress(ApiError):
                found.append(self._source_message(call, message_id))
        if not found:
            raise bad_request(
                "there are no messages to forward" if "forward" in call.method else "no messages to copy"
            )
        return found

    async def _forward_messages(self, call: Call) -> list[JSONDict]:
        chat = self._resolve_chat(call.params.get("chat_id"))
        return [
            {"message_id": self._forward_one(chat, source_chat, original)["message_id"]}
            for source_chat, original in self._many(call)
        ]

    def _copy_one(self, call: Call, chat: JSONDict, original: JSONDict, override: bool) -> JSONDict:
        content = {k: copy.deepcopy(original[k]) for k in _CONTENT_KEYS if k in original}
        if override and "text" not in original:
            if call.params.get("remove_caption"):
                content.pop("caption", None)
                content.pop("caption_entities", None)
            elif "caption" in call.params:
                caption, entities = self._checked_caption(call)
                content["caption"], content["caption_entities"] = caption, entities
        content["reply_markup"] = self._checked_markup(call) if override else None
        return self._bot_message(chat, content)

    async def _copy_message(self, call: Call) -> JSONDict:
        chat = self._resolve_chat(call.params.get("chat_id"))
        _, original = self._source_message(call, call.params.get("message_id"))
        return {"message_id": self._copy_one(call, chat, original, override=True)["message_id"]}

    async def _copy_messages(self, call: Call) -> list[JSONDict]:
        chat = self._resolve_chat(call.params.get("chat_id"))
        return [
            {"message_id": self._copy_one(call, chat, original, override=False)["message_id"]}
            for _, original in self._many(call)
        ]

    async def _get_chat(self, call: Call) -> JSONDict:
        chat = self._resolve_chat(call.params.get("chat_id"))
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    async def _get_chat_member(self, call: Call) -> JSONDict:
        chat = self._resolve_chat(call.params.get("chat_id"))
        user_id = call.params.get("user_id")
        if not isinstance(user_id, int):
            raise bad_request("invalid user_id specified")
        member = self._members.get((chat["id"], user_id))
        if member is not None:
            return copy.deepcopy(member)
        if chat["type"] == "private":
            if user_id not in (chat["id"], self.bot_id):
                raise bad_request("user not found")
            status = "member"
        else:
            status = "left" if user_id == self.bot_id and chat["type"] == "channel" else "member"
        user = self.bot_user if user_id == self.bot_id else self._user(user_id)
        return self._member_dict(user, status, {})

    async def _get_chat_administrators(self, call: Call) -> list[JSONDict]:
        chat = self._resolve_chat(call.params.get("chat_id"))
        if chat["type"] == "private":
            raise bad_request("there are no administrators in the private chat")
        return [
            copy.deepcopy(m)
            for (chat_id, _), m in self._members.items()
            if chat_id == chat["id"] and m["status"] in ("creator", "administrator")
        ]

    async def _get_chat_member_count(self, call: Call) -> int:
        chat = self._resolve_chat(call.params.get("chat_id"))
        if isinstance(chat.get("member_count"), int):
            return int(chat["member_count"])
        if chat["type"] == "private":
            return 2
        present = [m for (chat_id, _), m in self._members.items() if chat_id == chat["id"]]
        return max(1, sum(1 for m in present if m["status"] not in ("left", "kicked")))

    async def _get_file(self, call: Call) -> JSONDict:
        file_id = call.params.get("file_id")
        stored = self.files.get(file_id) if isinstance(file_id, str) else None
        if stored is None:
            raise bad_request("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.file_path,
        }
