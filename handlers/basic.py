"""Unknown commands, plain text, and the error handler."""

from __future__ import annotations

import logging

from telegram import Update

from bot.messages import html_text
from bot.shell.context import BotContext
from handlers.common import reply

log = logging.getLogger(__name__)

async def unknown_command(update: Update, context: BotContext) -> None:
    text = update.effective_message.text if update.effective_message else ""
    cmd = html_text((text or "").split()[0][:40]) if text else "that"
    await reply(update, f"I don't know {cmd}. /help lists what I can do.")


async def unknown_button(update: Update, context: BotContext) -> None:
    """Callback data no handler claims (an old keyboard, or data that was never ours)."""
    if update.callback_query is not None:
        await update.callback_query.answer("This button has expired.", show_alert=True)


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
