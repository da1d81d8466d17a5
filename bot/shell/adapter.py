"""The boundary with python-telegram-bot: updates → IncomingPost, Rendered → Bot API calls."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, Message, MessageOriginChannel
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.alerts import SendOutcome
from bot.channels import channel_key
from bot.domain import IncomingPost, SourceKind
from bot.messages import Rendered

log = logging.getLogger(__name__)

NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def keyboard(rendered: Rendered) -> InlineKeyboardMarkup | None:
    if not rendered.buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.text, url=b.url) if b.url else InlineKeyboardButton(b.text, callback_data=b.data)
          for b in row] for row in rendered.buttons]
    )


def message_text(message: Message) -> str:
    """Text or caption (a photo post's words are in its caption)."""
    return message.text or message.caption or ""


def has_media(message: Message) -> bool:
    return bool(message.effective_attachment) and not isinstance(message.effective_attachment, str)


def post_from_channel_message(message: Message, source: SourceKind = "bot") -> IncomingPost:
    chat = message.chat
    return IncomingPost(
        channel=channel_key(chat.id, chat.username),
        message_id=message.message_id,
        text=message_text(message),
        date=message.date.astimezone(UTC),
        source=source,
        chat_id=chat.id,
        channel_title=chat.title,
        edit_date=message.edit_date.astimezone(UTC) if message.edit_date else None,
        has_media=has_media(message),
        reply_to=message.reply_to_message.message_id if message.reply_to_message else None,
    )


def post_from_forward(message: Message) -> IncomingPost | None:
    """A post a user forwarded from a channel, stored under its origin channel and id."""
    origin = message.forward_origin
    if not isinstance(origin, MessageOriginChannel):
        return None
    chat = origin.chat
    return IncomingPost(
        channel=channel_key(chat.id, chat.username),
        message_id=origin.message_id,
        text=message_text(message),
        date=origin.date.astimezone(UTC) if origin.date else datetime.now(UTC),
        source="forward",
        chat_id=chat.id,
        channel_title=chat.title,
        has_media=has_media(message),
    )


class TelegramSender:
    """``AlertSender`` over PTB; retries of 429s are the rate limiter's job (AIORateLimiter)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send(self, chat_id: int, message: Rendered) -> SendOutcome:
        try:
            if message.forward_from is not None:
                src_chat, src_msg = message.forward_from
                try:
                    await self.bot.forward_message(chat_id, src_chat, src_msg)
                except BadRequest as exc:  # the bot can't see the original: the alert alone still goes
                    log.info("could not forward original %s/%s: %s", src_chat, src_msg, exc)
            sent = await self.bot.send_message(chat_id, message.html, parse_mode=ParseMode.HTML,
                                               reply_markup=keyboard(message), link_preview_options=NO_PREVIEW)
            return SendOutcome("sent", sent.message_id)
        except Forbidden as exc:
            return SendOutcome("blocked", error=str(exc))
        except TelegramError as exc:
            return SendOutcome("failed", error=f"{type(exc).__name__}: {exc}")

    async def edit(self, chat_id: int, message_id: int, message: Rendered) -> None:
        await self.bot.edit_message_text(message.html, chat_id=chat_id, message_id=message_id,
                                         parse_mode=ParseMode.HTML, reply_markup=keyboard(message),
                                         link_preview_options=NO_PREVIEW)

    async def post(self, chat: int | str, message: Rendered) -> None:
        """``DigestSender``: like ``send`` but raising, for messages whose sender wants the error."""
        await self.bot.send_message(chat, message.html, parse_mode=ParseMode.HTML, reply_markup=keyboard(message),
                                    link_preview_options=NO_PREVIEW)

    async def post_photo(self, chat: int | str, png: bytes, caption: str) -> None:
        await self.bot.send_photo(chat, png, caption=caption, parse_mode=ParseMode.HTML)
