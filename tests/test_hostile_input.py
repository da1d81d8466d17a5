"""A hostile-input corpus against every command, every button and every way a text comes in.

Each input goes through the local Bot API over HTTP; the bot must answer every one (a message,
a photo or a document for a command, an answered callback query for a button) and log no
error. The number of inputs is printed in the terminal summary ("figures").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.local_botapi import Call, LocalBotAPI
from handlers.menu import COMMANDS
from models.classifier import AppealClassifier
from tests.botkit import (
    APPEALS,
    SHELLING_REPORTS,
    Channel,
    alert_post_id,
    alerts_to,
    button,
    command,
    post_and_settle,
    press,
    quiet,
    running_bot,
    shown,
    storage_of,
    subscribe,
)

ADMIN = 5001
USER = 5002
OTHER = 5003
CHANNEL = Channel(-1005000000001, "hostile_input_test", "Hostile Input")
STRANGER = Channel(-1005000000002, "hostile_stranger_test", "Hostile Stranger")

#: What people (and scripts) type: every payload goes after every command, as plain text, as a
#: forwarded post and as a channel post.
HOSTILE: dict[str, str] = {
    "empty": "",
    "blanks": "   \t  ",
    "long": "а" * 4000,
    "many words": "слово " * 650,
    "emoji only": "🔥🇺🇦💪🏻👨‍👩‍👧",
    "control characters": "\x00\x01\x02\x03\x07\x08\x1b[31m\x7f\x85 x\x02",
    "bidi and zero-width": "\u202eevil\u202c \u200b\u200d\ufeff",
    "non-characters": "\ufffe\uffff\U0010ffff",
    "HTML injection": '<b>bold</b> <a href="javascript:alert(1)">x</a> &amp; &lt; <script>alert(1)</script> </i>',
    "Markdown injection": "*bold* _it_ `code` ```pre``` [link](http://x.example) ||spoiler|| \\ ~~s~~",
    "FTS syntax": 'NEAR("a" "b", 2) OR * AND NOT "unbalanced ^ - + : ( ) { } col:x',
    "huge number": "99999999999999999999999999999999",
    "odd numbers": "-1 0 -0 1e309 nan inf 0x10 ١٢٣ ² 9223372036854775808",
    "SQL": "'; DROP TABLE posts; -- \" OR 1=1",
    "format strings and paths": "../../../etc/passwd %00 %s %n {0} ${HOME}",
    "odd filters": "lang: label: channel:@@ since:9999-12-31 until:0001-01-01 min:nan from:2026-02-30 to:x",
    "links": "@a https://t.me/c/99999999999999999999/99999999999999999999 t.me/x/1 tg://resolve?domain=x",
    "line breaks": "line1\nline2\r\nline3\u2028\n\n",
}

ADMIN_ONLY = ("watch", "unwatch", "publish", "relabel", "export")
SEVERAL_MESSAGES = ("status", "digest", "export", "publish", "trend")  # wait for all of them before the next input
REPLIES = ("sendMessage", "sendPhoto", "sendDocument")




async def answered(api: LocalBotAPI, chat_id: int, since: int, what: str, timeout: float = 30.0) -> Call:
    """The bot's first successful reply in ``chat_id`` after ``since`` (a message, photo or document)."""
    try:
        reply = await api.wait_for(lambda c: c.method in REPLIES and c.chat_id == chat_id, timeout, since=since)
    except TimeoutError:
        pytest.fail(f"no answer to {what}")
    assert reply.ok, f"the server refused the answer to {what}: {reply.describe()}"
    assert "Something went wrong" not in shown(reply), f"{what} → {shown(reply)[:200]}"
    return reply


async def press_any(api: LocalBotAPI, user_id: int, message: Call | dict[str, Any], data: str, what: str) -> Call:
    try:
        answer = await press(api, user_id, message, data, 15, check=False)
    except TimeoutError:
        pytest.fail(f"the button {what} was never answered")
    assert answer.ok, f"{what}: {answer.describe()}"
    return answer


async def test_hostile_corpus_against_every_command_button_and_text(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture,
    report_figure: Callable[[str], None],
) -> None:
    counts: dict[str, int] = {}

    def count(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1

    started = time.monotonic()
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,), export_interval=0.0) as app:
        storage = storage_of(app)
        await subscribe(api, USER)
        CHANNEL.add_bot(api, by_user_id=ADMIN)
        for i, text in enumerate(SHELLING_REPORTS[:6]):
            await post_and_settle(api, app, CHANNEL, 1 + i, text)
        appeal = await post_and_settle(api, app, CHANNEL, 10, APPEALS[0][2])
        [alert] = alerts_to(api, USER)
        assert alert_post_id(alert) == appeal.id

        # hostile channel posts: stored, classified, alerted or not — never an error, never a refused message
        for i, text in enumerate(HOSTILE.values()):
            await post_and_settle(api, app, CHANNEL, 100 + i, text or None, photo=not text)
            count("channel posts")
        assert all(c.ok for c in alerts_to(api, USER))
        assert len([c for c in api.calls if c.method == "sendMessage" and not c.ok]) == 0

        # every command × every payload: the admin (every path) and a user (the admin-only refusals)
        for user in (ADMIN, USER):
            for c in COMMANDS:
                if user == USER and c.name not in ADMIN_ONLY:
                    continue
                for name, payload in HOSTILE.items():
                    text = f"/{c.name} {payload}" if payload else f"/{c.name}"
                    since = api.mark()
                    api.send_user_message(user, text[:4096])
                    await answered(api, user, since, f"{user}: /{c.name} + {name}")
                    await quiet(api, 0.3 if user == ADMIN and c.name in SEVERAL_MESSAGES else 0.05)
                    count("commands")
            for name, payload in HOSTILE.items():  # an unknown command, plain text
                for text in (f"/frobnicate {payload}", payload or "​"):
                    since = api.mark()
                    api.send_user_message(user, text[:4096])
                    await answered(api, user, since, f"{user}: {text[:30]!r} ({name})")
                    count("unknown commands and plain text")

        # posts forwarded to the bot with every payload
        for i, (name, payload) in enumerate(HOSTILE.items()):
            since = api.mark()
            api.forward_from_channel(USER, STRANGER.id, STRANGER.username, STRANGER.title, 500 + i, payload or "​")
            await answered(api, USER, since, f"a forwarded post ({name})", timeout=60)
            count("forwarded posts")

        # buttons: real ones, forged ones, and ones from other chats
        settings = await command(api, USER, "/settings")
        subscribed = await command(api, USER, "/subscribe")
        results = await command(api, USER, "/search обстріл")
        others = await command(api, OTHER, "/settings")
        token_data = button(results, "Next ▶")
        [channel_row] = [r for r in await storage.channel_health() if r.channel == CHANNEL.username]
        assert channel_row.approval == "approved"
        own_channel = await storage.channel_access(key=CHANNEL.username)
        assert own_channel is not None
        forged = [
            "", " ", "\x00", "🔥", "<b>x</b>", "a" * 64, "fb", "fb:", "fb:ok", "fb:ok:", "fb:maybe:1", f"fb:ok:{appeal.id}\n",
            "fb:ok:0", "fb:no:99999999999999999999999", "fb:ok:-1", "fb:ok:١", "mute:0", "mute:-5",
            "mute:99999999999999999999", "s:", "s::1", "s:nope:0", "s:" + "x" * 58 + ":0", f"{token_data}9999999",
            token_data.rsplit(":", 1)[0] + ":999999", "sub:", "sub:m:nan", "sub:m:1e309", "sub:m:0.123", "sub:l:<b>",
            "sub:l:pow", "sub:g:xx", "sub:done", "sub:done:extra", "set:", "set:d:<b>", "set:d:hourly",
            "set:q:25:99-77:00", "set:q:23:00-07:00", "set:f:maybe", "set:z:1", "dg:", "dg:0:0", "dg:5:1",
            "dg:-999999999999:999999999999", "dg:-62135596800:253402300799", "dg:1:2", "chn:ok:0",
            f"chn:ok:{own_channel.id}", f"chn:no:{own_channel.id}", "chn:ok:999999999999999999", "chn:maybe:1",
        ]
        targets = (settings, subscribed, results, alert)
        for data in forged:
            for message in targets:  # pressed by their owner (USER)
                await press_any(api, USER, message, data, f"{data!r} by its owner")
                count("buttons")
            await press_any(api, OTHER, alert, data, f"{data!r} by someone else on USER's alert")
            count("buttons")
        # real data from USER's chat, pressed in OTHER's chat (another chat's callback data)
        foreign = [d for m in (settings, subscribed, results, alert) for row in m.buttons for b in row
                   if (d := str(b.get("callback_data") or ""))]
        for data in foreign:
            await press_any(api, OTHER, others, data, f"{data!r} from USER's chat, in OTHER's chat")
            count("buttons")
        await quiet(api)
        # the channel approval buttons were refused to a non-admin: still approved, not rejected
        assert (await storage.channel_access(key=CHANNEL.username)).approval == "approved"  # type: ignore[union-attr]
        # everything sent to these people was accepted (the HTML parsed, the sizes fit); an edit that changes
        # nothing is refused by Telegram and is harmless. (/publish to a made-up chat fails, and says so.)
        refused = [c for c in api.calls if not c.ok and "not modified" not in (c.description or "")
                   and (c.chat_id in (ADMIN, USER, OTHER) or c.method == "answerCallbackQuery")]
        assert not refused, [c.describe() for c in refused[:5]]

    total = sum(counts.values())
    line = (f"hostile corpus: {total} inputs ({len(HOSTILE)} payloads; "
            + ", ".join(f"{n} {k}" for k, n in counts.items())
            + f") answered without an error in {time.monotonic() - started:.0f} s")
    print(line)
    report_figure(line)
    assert total >= 500
