"""An embedded, local stand-in for the Telegram Bot API, spoken to over real HTTP.

Telegram is unreachable from the machines this project is built and tested on, yet the
bot has to be exercised end to end: python-telegram-bot (PTB) serialising requests,
parsing replies into ``Message`` objects, its polling loop, its retry and rate-limit
logic. Mocking ``Bot`` methods would skip all of that, so instead this package runs a
small aiohttp server on ``127.0.0.1`` (a free port) that answers the Bot API methods the
bot uses, in the wire formats PTB 22.8 expects (see ``shared/notes/telegram-formats.md``).

It serves two masters:

* the test suite, which injects updates (a user typing ``/start``, a channel post, a
  button press), waits for the bot's reaction with :meth:`LocalBotAPI.wait_for`, injects
  faults (429 flood waits, 403 blocked users, 502 gateway errors) and inspects every call;
* ``appealwatch demo``, which runs the real bot against it and prints, through the
  ``on_call`` hook, what a user would have seen.

Where it is cheap, the server is as strict as Telegram, because the point is to catch
the bot's bugs before Telegram does: HTML / MarkdownV2 that Telegram would refuse, texts
over 4096 characters, ``callback_data`` over 64 bytes, edits that change nothing, unknown
file ids, answers to unknown callback queries. Everything else is lenient: any token is
accepted (unless one is pinned), unknown chats are made up on first use, unknown methods
answer ``True``.

It imports nothing from the project and nothing from ``telegram``; only aiohttp and the
standard library, so it can run in any process and test PTB as a black box.

Typical use::

    async with LocalBotAPI() as api:
        app = ApplicationBuilder().token("1:T").base_url(api.base_url).base_file_url(api.base_file_url).build()
        ...
        api.send_user_message(42, "/start")
        reply = await api.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == 42)

The package is split by job: :mod:`.records` (calls, files, faults), :mod:`.entities`
(HTML / Markdown parsing into entities), :mod:`.requests` (decoding of requests) and
:mod:`.server` (the aiohttp server and the Bot API methods). Import from the package.
"""

from __future__ import annotations

from .records import Call, Fault, StoredFile, UploadedFile
from .records import JSONDict as JSONDict
from .server import SEND_METHODS, LocalBotAPI
from .server import CallHook as CallHook

__all__ = [
    "SEND_METHODS",
    "Call",
    "Fault",
    "LocalBotAPI",
    "StoredFile",
    "UploadedFile",
]
