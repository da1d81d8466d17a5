"""Small helpers every handler uses: HTML replies, the access gate, the admin checks."""

from __future__ import annotations

import logging

from telegram import CallbackQuery, InlineKeyboardMarkup, Update
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import ApplicationHandlerStop

from bot.messages import Rendered, html_text
from bot.shell.adapter import NO_PREVIEW, keyboard
from bot.shell.context import BotContext

log = logging.getLogger(__name__)

PRIVATE_REFUSAL = "This AppealWatch instance is private. Ask its admin to add your user id to [access] allowed_users."
NOT_YOURS = "This button belongs to another chat or person."
GROUP_ADMINS_ONLY = "Only this group's admins can change its alerts and settings."


async def reply(update: Update, text: str, rendered: Rendered | None = None) -> None:
    message = update.effective_message
    if message is None:
        return
    markup = keyboard(rendered) if rendered else None
    await message.reply_text(text, parse_mode=ParseMode.HTML, reply_markup=markup, link_preview_options=NO_PREVIEW)


async def reply_error(update: Update, error: Exception, limit: int = 600) -> None:
    """A usage error, worded for the user; what they typed may be echoed in it, so it is cut and escaped."""
    text = str(error)
    await reply(update, html_text(text if len(text) <= limit else text[: limit - 1] + "…"))


async def access_gate(update: Update, context: BotContext) -> None:
    """Group -1, every update but channel posts and the bot's own membership (those have their own rules).

    A private instance (``[access] allowed_users`` set) answers a stranger once with one clear
    refusal, then ignores them; their button presses get the refusal as a pop-up only. Every
    callback query is then checked against the chat it came from: a button on a message the bot
    can no longer see, or pressed in a private chat by someone else, goes no further.
    """
    if update.channel_post or update.edited_channel_post or update.my_chat_member:
        return
    user = update.effective_user
    chat = update.effective_chat
    query = update.callback_query
    if not context.config.access.is_allowed(user.id if user else None, chat.id if chat else None):
        if query is not None:
            await query.answer("This AppealWatch instance is private.", show_alert=True)
        elif update.effective_message is not None:
            who = user.id if user else (chat.id if chat else 0)
            if context.services.refused.first_time(who):
                await update.effective_message.reply_text(PRIVATE_REFUSAL)
        raise ApplicationHandlerStop
    if query is not None:
        # (no data at all would match every pattern handler: PTB lets empty data through)
        if chat is None or query.message is None or not query.data:
            await query.answer("This button has expired.", show_alert=True)
            raise ApplicationHandlerStop
        if chat.type == ChatType.PRIVATE and (user is None or user.id != chat.id):
            await query.answer(NOT_YOURS, show_alert=True)
            raise ApplicationHandlerStop


async def can_manage_chat(update: Update, context: BotContext) -> bool:
    """May this user change the chat's subscription and settings? A private chat: its user. A group:
    the group's admins (``getChatMember``), or an anonymous admin writing as the group."""
    chat = update.effective_chat
    user = update.effective_user
    if chat is None:
        return False
    if chat.type == ChatType.PRIVATE:
        return user is not None and user.id == chat.id
    if chat.type not in (ChatType.GROUP, ChatType.SUPERGROUP):
        return False
    message = update.message
    if message is not None and message.sender_chat is not None and message.sender_chat.id == chat.id:
        return True  # an anonymous group admin
    if user is None:
        return False
    try:
        member = await context.bot.get_chat_member(chat.id, user.id)
    except TelegramError as exc:
        log.info("could not check %s's rights in chat %s: %s", user.id, chat.id, exc)
        return False
    return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


async def refused_unless_manager(update: Update, context: BotContext) -> bool:
    """True (and the user told why) when ``can_manage_chat`` says no."""
    if await can_manage_chat(update, context):
        return False
    if update.callback_query is not None:
        await update.callback_query.answer(GROUP_ADMINS_ONLY, show_alert=True)
    else:
        await reply(update, GROUP_ADMINS_ONLY)
    return True


def is_admin(update: Update, context: BotContext) -> bool:
    user = update.effective_user
    return context.config.access.is_admin(user.id if user else None)


def command_args(update: Update) -> str:
    """Everything after the command, raw (context.args loses newlines and quoting)."""
    message = update.effective_message
    text = (message.text or message.caption or "") if message else ""
    parts = text.split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


async def edit_message(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Edit the message a button belongs to; pressing a button that changes nothing is not an error."""
    try:
        await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=markup,
                                      link_preview_options=NO_PREVIEW)
    except BadRequest as exc:
        if "not modified" not in str(exc).lower():
            raise
