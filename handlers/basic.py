"""/start, /help, unknown commands and the error handler."""

from __future__ import annotations

import html
import logging

from telegram import BotCommand, Update

from bot.context import BotContext
from handlers.common import reply

log = logging.getLogger(__name__)

COMMANDS: list[tuple[str, str, str]] = [
    ("start", "what AppealWatch does", "/start"),
    ("help", "every command with examples", "/help"),
    ("subscribe", "get alerts (filters optional)", "/subscribe · /subscribe surrender,family lang:ru,uk min:0.8"),
    ("unsubscribe", "stop alerts", "/unsubscribe"),
    ("settings", "filters, quiet hours, digests, time zone", "/settings · /settings quiet 23:00-07:00 · "
     "/settings digest daily 08:00 · /settings timezone Europe/Kyiv · /settings forward on"),
    ("search", "search the archive", "/search амністія lang:uk · /search сдавайся label:surrender since:2026-01-01"),
    ("digest", "summary of a period", "/digest · /digest 7d · /digest 2026-03-01..2026-03-31"),
    ("similar", "appeals like a given post, in any language", "/similar https://t.me/channel/123"),
    ("trend", "chart of appeals per day", "/trend · /trend surrender 90d"),
    ("export", "CSV and JSON of posts (same filters as /search)", "/export label:pow since:2026-01-01"),
    ("channels", "watched channels and their health", "/channels"),
    ("status", "bot and source health", "/status"),
    ("watch", "watch a public channel (admins)", "/watch @channel_name"),
    ("unwatch", "stop watching a channel (admins)", "/unwatch @channel_name"),
    ("publish", "publish the digest to a channel or group (admins)", "/publish @channel_name 24h"),
    ("relabel", "correct a post's labels for training (admins)", "/relabel 123 surrender,family · /relabel 123 none"),
]

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
    for name, what, example in COMMANDS:
        lines.append(f"/{name} — {html.escape(what)}\n   <code>{html.escape(example)}</code>")
    lines.append(
        "\n<b>Search filters</b>: <code>lang:ru|uk|en</code> <code>label:surrender|desertion|family|pow|civilians|threat"
        "</code> <code>channel:@name</code> <code>since:YYYY-MM-DD</code> <code>until:YYYY-MM-DD</code>\n"
        "Words are matched as words; quotes and operators are treated as plain text."
    )
    return "\n".join(lines)


def bot_commands() -> list[BotCommand]:
    return [BotCommand(name, what) for name, what, _ in COMMANDS]


async def start(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    if chat:
        await context.storage.ensure_chat(chat.id, type_=chat.type, title=chat.title or chat.full_name,
                                          forward_original=context.config.alerts.forward_original)
    await reply(update, START_TEXT)


async def help_command(update: Update, context: BotContext) -> None:
    await reply(update, help_text())


async def unknown_command(update: Update, context: BotContext) -> None:
    text = update.effective_message.text if update.effective_message else ""
    cmd = html.escape((text or "").split()[0][:40]) if text else "that"
    await reply(update, f"I don't know {cmd}. /help lists what I can do.")


async def plain_text(update: Update, context: BotContext) -> None:
    await reply(update, "Send a command (/help), or forward me a post from a channel to check it.")


async def on_error(update: object, context: BotContext) -> None:
    log.error("update %s caused an error", getattr(update, "update_id", "?"), exc_info=context.error)
    if isinstance(update, Update) and update.effective_message and update.effective_chat \
            and update.effective_chat.type != "channel":
        try:
            await update.effective_message.reply_text("Something went wrong on my side; it has been logged. "
                                                       "Please try again in a minute.")
        except Exception:
            log.debug("could not report the error to the user", exc_info=True)
