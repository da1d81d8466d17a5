"""/digest on demand, /publish for admins, and forwarding a digest's original posts."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from telegram import Update
from telegram.error import TelegramError

from bot.arguments import UsageError
from bot.callbacks import DigestOriginals
from bot.channels import chat_reference
from bot.digest import send_digest
from bot.messages import html_text
from bot.shell.adapter import TelegramSender
from bot.shell.context import BotContext
from handlers.common import command_args, is_admin, reply, reply_error

log = logging.getLogger(__name__)


async def digest(update: Update, context: BotContext) -> None:
    arg = command_args(update).strip() or None
    chat = update.effective_chat
    assert chat is not None
    try:
        await send_digest(TelegramSender(context.bot), context.storage, chat.id, arg, top=context.config.digest.top)
    except UsageError as exc:
        await reply_error(update, exc)


async def publish(update: Update, context: BotContext) -> None:
    if not is_admin(update, context):
        await reply(update, "Only admins can publish digests ([access] admins in the config).")
        return
    args = command_args(update).split()
    target = args[0] if args else context.config.digest.publish_to
    if target is None:
        await reply(update, "Usage: /publish @channel_name [24h|7d] — or set [digest] publish_to.")
        return
    try:
        await send_digest(TelegramSender(context.bot), context.storage, chat_reference(target),
                          args[1] if len(args) > 1 else None, top=context.config.digest.top)
    except UsageError as exc:
        await reply_error(update, exc)
        return
    except TelegramError as exc:
        await reply(update, f"Could not publish to {html_text(str(target)[:80])}: {html_text(str(exc)[:300])}. "
                            "Is the bot an admin there?")
        return
    await reply(update, f"📣 Digest published to {html_text(str(target)[:80])}.")


async def forward_originals(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    button = DigestOriginals.decode(query.data)
    try:
        since, until = datetime.fromtimestamp(button.since, UTC), datetime.fromtimestamp(button.until, UTC)
    except (OverflowError, OSError, ValueError):
        since = until = datetime.fromtimestamp(0, UTC)
    if since >= until:  # not a period a digest of ours covered
        await query.answer("This button has expired.", show_alert=True)
        return
    posts = await context.storage.top_appeals(since, until, context.config.digest.top)
    await query.answer("Forwarding…")
    links = []
    for p in posts:
        if p.chat_id is not None:
            try:
                await context.bot.forward_message(update.effective_chat.id, p.chat_id, p.message_id)
                continue
            except TelegramError as exc:
                log.info("cannot forward %s: %s", p.permalink, exc)
        links.append(f'<a href="{html_text(p.permalink)}">{html_text(p.permalink)}</a>')
    if links:
        await context.bot.send_message(update.effective_chat.id,
                                       "These can't be forwarded (the bot isn't in those channels):\n" + "\n".join(links))
