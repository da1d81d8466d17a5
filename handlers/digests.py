"""/digest on demand, /publish for admins, and forwarding a digest's original posts."""

from __future__ import annotations

import html
import logging

from telegram import Update
from telegram.error import TelegramError

from bot.alerts import Button, Rendered
from bot.context import BotContext
from bot.digest import build_digest
from bot.queries import UsageError, parse_period
from bot.telegram_adapter import keyboard
from handlers.common import command_args, is_admin, reply

log = logging.getLogger(__name__)


async def send_digest(context: BotContext, chat_id: int, period_arg: str | None) -> None:
    """Build and send a digest (used by /digest, scheduled jobs and /publish)."""
    period = parse_period(period_arg)
    d = await build_digest(context.storage, period, top=context.config.digest.top)
    markup = None
    if d.appeals:
        since, until = int(period.since.timestamp()), int(period.until.timestamp())
        markup = keyboard(Rendered("", ((Button("📨 Forward the original posts", data=f"dg:{since}:{until}"),),)))
    await context.bot.send_message(chat_id, d.html, reply_markup=markup)
    if d.chart_png:
        await context.bot.send_photo(chat_id, d.chart_png, caption=f"Appeals · {html.escape(period.label)}")


async def digest(update: Update, context: BotContext) -> None:
    arg = command_args(update).strip() or None
    chat = update.effective_chat
    assert chat is not None
    try:
        await send_digest(context, chat.id, arg)
    except UsageError as exc:
        await reply(update, html.escape(str(exc)))


async def publish(update: Update, context: BotContext) -> None:
    if not is_admin(update, context):
        await reply(update, "Only admins can publish digests ([access] admins in the config).")
        return
    args = command_args(update).split()
    target = args[0] if args else context.config.digest.publish_to
    if target is None:
        await reply(update, "Usage: /publish @channel_name [24h|7d] — or set [digest] publish_to.")
        return
    chat_ref: int | str = target if isinstance(target, int) else (
        int(target) if str(target).lstrip("-").isdigit() else "@" + str(target).lstrip("@"))
    try:
        await send_digest(context, chat_ref, args[1] if len(args) > 1 else None)  # type: ignore[arg-type]
    except UsageError as exc:
        await reply(update, html.escape(str(exc)))
        return
    except TelegramError as exc:
        await reply(update, f"Could not publish to {html.escape(str(target))}: {html.escape(str(exc))}. "
                            "Is the bot an admin there?")
        return
    await reply(update, f"📣 Digest published to {html.escape(str(target))}.")


async def forward_originals(update: Update, context: BotContext) -> None:
    from datetime import UTC, datetime

    query = update.callback_query
    assert query is not None and query.data is not None and update.effective_chat is not None
    _, since_s, until_s = query.data.split(":")
    since, until = datetime.fromtimestamp(int(since_s), UTC), datetime.fromtimestamp(int(until_s), UTC)
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
        links.append(f'<a href="{html.escape(p.permalink)}">{html.escape(p.permalink)}</a>')
    if links:
        await context.bot.send_message(update.effective_chat.id,
                                       "These can't be forwarded (the bot isn't in those channels):\n" + "\n".join(links))
