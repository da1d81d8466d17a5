"""The one place that wires handlers, in the order PTB tries them."""

from __future__ import annotations

from typing import Any

from telegram import Update
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.callbacks import (
    ChannelApproval,
    DigestOriginals,
    Feedback,
    Mute,
    SearchPage,
    SettingsChoice,
    SubscriptionChoice,
)
from handlers import approval, basic, channels, digests, feedback, menu, posts, search, subscriptions
from handlers.common import access_gate

PRIVATE_OR_GROUP = filters.ChatType.PRIVATE | filters.ChatType.GROUPS


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    # Group -1 runs first for every update: the access gate (allowed_users, whose chat a button is in) may stop it here.
    app.add_handler(TypeHandler(Update, access_gate), group=-1)

    # Channel posts and edits (CommandHandler ignores channel posts, so order is not critical).
    app.add_handler(MessageHandler(filters.UpdateType.CHANNEL_POSTS, posts.channel_post))
    app.add_handler(ChatMemberHandler(channels.bot_membership, ChatMemberHandler.MY_CHAT_MEMBER))

    # Commands, in private chats and groups: one row each in handlers.menu.COMMANDS.
    for command in menu.COMMANDS:
        app.add_handler(CommandHandler(command.name, command.callback, filters=PRIVATE_OR_GROUP))

    # Inline buttons, by callback-data prefix.
    app.add_handler(CallbackQueryHandler(feedback.feedback_button, pattern=Feedback.PATTERN))
    app.add_handler(CallbackQueryHandler(feedback.mute_button, pattern=Mute.PATTERN))
    app.add_handler(CallbackQueryHandler(search.search_page, pattern=SearchPage.PATTERN))
    app.add_handler(CallbackQueryHandler(subscriptions.subscription_button, pattern=SubscriptionChoice.PATTERN))
    app.add_handler(CallbackQueryHandler(subscriptions.settings_button, pattern=SettingsChoice.PATTERN))
    app.add_handler(CallbackQueryHandler(digests.forward_originals, pattern=DigestOriginals.PATTERN))
    app.add_handler(CallbackQueryHandler(approval.approval_button, pattern=ChannelApproval.PATTERN))
    app.add_handler(CallbackQueryHandler(basic.unknown_button))  # any other data: answered, never left spinning

    # Forwarded channel posts: classify and answer. Then anything else.
    app.add_handler(MessageHandler(filters.FORWARDED & filters.ChatType.PRIVATE, posts.forwarded))
    app.add_handler(MessageHandler(filters.COMMAND & PRIVATE_OR_GROUP, basic.unknown_command))
    app.add_handler(MessageHandler(filters.ChatType.PRIVATE & ~filters.COMMAND, basic.plain_text))

    app.add_error_handler(basic.on_error)
