"""The boundary with python-telegram-bot: updates → IncomingPost, Rendered → Bot API calls."""

from __future__ import annotations

import logging
import warnings
from datetime import UTC, datetime, timedelta

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, Message, MessageOriginChannel
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

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


def send_outcome(exc: TelegramError, *, forwarded: bool = False) -> SendOutcome:
    """Sort a send error: 'blocked' (403: blocked, kicked, deactivated), 'retry' for what passes
    (network errors, timeouts, Telegram's 5xx, a 429 the rate limiter gave up on), and 'failed'
    for the rest — a 400 (chat not found, a group that moved) will be refused again."""
    error = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Forbidden):
        return SendOutcome("blocked", error=str(exc))
    if isinstance(exc, RetryAfter):
        with warnings.catch_warnings():  # int today, timedelta in PTB 23: both are read below
            warnings.simplefilter("ignore", PTBDeprecationWarning)
            wait = exc.retry_after
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
        return SendOutcome("retry", error=error, retry_after=seconds, forwarded=forwarded)
    if isinstance(exc, NetworkError) and not isinstance(exc, BadRequest):  # TimedOut is a NetworkError
        return SendOutcome("retry", error=error, forwarded=forwarded)
    return SendOutcome("failed", error=error)


class TelegramSender:
    """``AlertSender`` over PTB. 429s are first retried by the rate limiter (AIORateLimiter,
    ``[telegram] send_retries``); what still fails is sorted by :func:`send_outcome` and the
    dispatcher retries the transient part with backoff."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send(self, chat_id: int, message: Rendered) -> SendOutcome:
        forwarded = False
        try:
            if message.forward_from is not None:
                forwarded = await self._forward_original(chat_id, message.forward_from)
            sent = await self.bot.send_message(chat_id, message.html, parse_mode=ParseMode.HTML,
                                               reply_markup=keyboard(message), link_preview_options=NO_PREVIEW)
            return SendOutcome("sent", sent.message_id)
        except TelegramError as exc:
            return send_outcome(exc, forwarded=forwarded)

    async def _forward_original(self, chat_id: int, original: tuple[int, int]) -> bool:
        """Forward the original post first; True when it went (a retry must not forward it again)."""
        src_chat, src_msg = original
        try:
            await self.bot.forward_message(chat_id, src_chat, src_msg)
            return True
        except BadRequest as exc:  # the bot can't see the original: the alert alone still goes
            log.info("could not forward original %s/%s: %s", src_chat, src_msg, exc)
            return False

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
