"""Channels that add the bot wait for an admin: the question every admin gets, and its Approve / Reject buttons."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError

from bot.callbacks import ChannelApproval
from bot.channels import channel_link
from bot.messages import Button, Rendered, html_text
from bot.shell.adapter import NO_PREVIEW, keyboard
from bot.shell.context import BotContext
from bot.storage import ChannelAccess
from handlers.common import edit_message, is_admin

log = logging.getLogger(__name__)


def _describe(channel: ChannelAccess) -> str:
    title = f" «{html_text(channel.title[:128])}»" if channel.title else ""
    return f"{channel_link(channel.key)}{title}"


def approval_request(channel: ChannelAccess, added_by: int | None) -> Rendered:
    by = f" by user <code>{added_by}</code>" if added_by is not None else ""
    return Rendered(
        f"📡 <b>A channel added the bot</b>: {_describe(channel)}{by}.\n"
        "Its posts are stored but not alerted, and not in digests, until an admin approves it.",
        ((Button("✅ Approve", data=ChannelApproval("ok", channel.id).encode()),
          Button("⛔ Reject", data=ChannelApproval("no", channel.id).encode())),),
    )


async def ask_admins(context: BotContext, channel: ChannelAccess, added_by: int | None) -> None:
    """Every admin gets the question in their private chat (one who never started the bot can't be reached)."""
    message = approval_request(channel, added_by)
    for admin in context.config.access.admins:
        try:
            await context.bot.send_message(admin, message.html, reply_markup=keyboard(message),
                                           link_preview_options=NO_PREVIEW)
        except TelegramError as exc:
            log.info("could not ask admin %s about channel %s: %s", admin, channel.key, exc)


async def approval_button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None
    if not is_admin(update, context):
        await query.answer("Only admins can approve channels.", show_alert=True)
        return
    button = ChannelApproval.decode(query.data)
    channel = await context.storage.channel_access(channel_id=button.channel_id)
    if channel is None:
        await query.answer("I don't know that channel.", show_alert=True)
        return
    user = update.effective_user
    approved = button.verdict == "ok"
    await context.storage.set_channel_approval(channel.id, "approved" if approved else "rejected",
                                               by=user.id if user else None)
    log.info("admin %s %s channel %s", user.id if user else "?", "approved" if approved else "rejected", channel.key)
    if approved:
        await query.answer("Approved")
        text = (f"✅ {_describe(channel)} approved: its new posts are alerted from now on "
                "(those stored while it waited stay searchable, never alerted).")
        undo = Button("⛔ Reject", data=ChannelApproval("no", channel.id).encode())
    else:
        await query.answer("Rejected")
        text = f"⛔ {_describe(channel)} rejected: its posts are stored, never alerted or shown in digests."
        undo = Button("✅ Approve", data=ChannelApproval("ok", channel.id).encode())
    await edit_message(query, text, keyboard(Rendered("", ((undo,),))))
