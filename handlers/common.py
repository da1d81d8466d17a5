"""Small helpers every handler uses: HTML replies, the access gate, the admin check."""

from __future__ import annotations

from telegram import CallbackQuery, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.ext import ApplicationHandlerStop

from bot.messages import Rendered
from bot.shell.adapter import NO_PREVIEW, keyboard
from bot.shell.context import BotContext


async def reply(update: Update, text: str, rendered: Rendered | None = None) -> None:
    message = update.effective_message
    if message is None:
        return
    markup = keyboard(rendered) if rendered else None
    await message.reply_text(text, parse_mode=ParseMode.HTML, reply_markup=markup, link_preview_options=NO_PREVIEW)


async def access_gate(update: Update, context: BotContext) -> None:
    """Group -1: when ``[access] allowed_users`` is set, everyone else gets one polite refusal."""
    if update.channel_post or update.edited_channel_post or update.my_chat_member:
        return
    user = update.effective_user
    chat = update.effective_chat
    if context.config.access.is_allowed(user.id if user else None, chat.id if chat else None):
        return
    if update.callback_query:
        await update.callback_query.answer("This AppealWatch instance is private.", show_alert=True)
    elif update.effective_message:
        await update.effective_message.reply_text(
            "This AppealWatch instance is private. Ask its admin to add your user id to [access] allowed_users."
        )
    raise ApplicationHandlerStop


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
