"""The command menu: one table of commands, from which handlers, /help and setMyCommands are built.

Adding a command is one row here: ``handlers.register`` wires it, ``/help`` shows its example,
and Telegram's command menu lists it, in this order.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from telegram import BotCommand, Update

from bot.shell.context import BotContext
from handlers import channels, digests, feedback, research, search, subscriptions
from handlers.common import reply

Callback = Callable[[Update, BotContext], Coroutine[object, object, None]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    callback: Callback
    what: str  # the menu's one-line description
    example: str  # what /help shows


async def start(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    if chat:
        await context.storage.ensure_chat(chat.id, type_=chat.type, title=chat.title or chat.full_name,
                                          forward_original=context.config.alerts.forward_original)
    await reply(update, START_TEXT)


async def help_command(update: Update, context: BotContext) -> None:
    await reply(update, help_text())


COMMANDS: tuple[Command, ...] = (
    Command("start", start, "what AppealWatch does", "/start"),
    Command("help", help_command, "every command with examples", "/help"),
    Command("subscribe", subscriptions.subscribe, "get alerts (filters optional)",
            "/subscribe · /subscribe surrender,family lang:ru,uk min:0.8"),
    Command("unsubscribe", subscriptions.unsubscribe, "stop alerts", "/unsubscribe"),
    Command("settings", subscriptions.settings, "filters, quiet hours, digests, time zone",
            "/settings · /settings quiet 23:00-07:00 · /settings digest daily 08:00 · "
            "/settings timezone Europe/Kyiv · /settings forward on"),
    Command("search", search.search, "search the archive",
            "/search амністія lang:uk · /search сдавайся label:surrender since:2026-01-01"),
    Command("digest", digests.digest, "summary of a period", "/digest · /digest 7d · /digest 2026-03-01..2026-03-31"),
    Command("similar", search.similar, "appeals like a given post, in any language", "/similar https://t.me/channel/123"),
    Command("trend", research.trend, "chart of appeals per day", "/trend · /trend surrender 90d"),
    Command("export", research.export, "CSV and JSON of posts, same filters as /search (admins)",
            "/export label:pow since:2026-01-01"),
    Command("channels", channels.channels, "watched channels and their health", "/channels"),
    Command("status", channels.status, "bot and source health", "/status"),
    Command("watch", channels.watch, "watch a public channel (admins)", "/watch @channel_name"),
    Command("unwatch", channels.unwatch, "stop watching a channel (admins)", "/unwatch @channel_name"),
    Command("publish", digests.publish, "publish the digest to a channel or group (admins)", "/publish @channel_name 24h"),
    Command("relabel", feedback.relabel, "correct a post's labels for training (admins)",
            "/relabel 123 surrender,family · /relabel 123 none"),
)

START_TEXT = (
    "👋 <b>AppealWatch</b> finds <i>appeals across the front line</i> in Telegram channels — "
    "officials, soldiers and volunteer projects speaking directly to the other side: surrender hotlines, "
    "calls to desert, appeals to soldiers' families, prisoners calling home, addresses to the other "
    "side's public, threats — in Russian, Ukrainian and English.\n\n"
    "• /subscribe — alerts within seconds of a post (narrow them with filters)\n"
    "• /search — the archive, e.g. <code>/search амністія lang:uk</code>\n"
    "• /digest — a period at a glance, with a chart\n"
    "• Forward me any channel post and I'll tell you whether it is an appeal and why.\n\n"
    "/help lists every command with examples."
)


def help_text() -> str:
    lines = ["<b>Commands</b>"]
    for c in COMMANDS:
        lines.append(f"/{c.name} — {html.escape(c.what)}\n   <code>{html.escape(c.example)}</code>")
    lines.append(
        "\n<b>Search filters</b>: <code>lang:ru|uk|en</code> <code>label:surrender|desertion|family|pow|civilians|threat"
        "</code> <code>channel:@name</code> <code>since:YYYY-MM-DD</code> <code>until:YYYY-MM-DD</code>\n"
        "Words are matched as words; quotes and operators are treated as plain text."
    )
    return "\n".join(lines)



def bot_commands() -> list[BotCommand]:
    """What setMyCommands gets: Telegram's menu, in the table's order."""
    return [BotCommand(c.name, c.what) for c in COMMANDS]
