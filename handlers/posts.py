"""Channel posts, their edits, and posts users forward to the bot."""

from __future__ import annotations

from telegram import Update

from bot.channels import channel_link
from bot.messages import html_text
from bot.shell.adapter import post_from_channel_message, post_from_forward
from bot.shell.context import BotContext
from handlers.common import reply
from models.taxonomy import ADDRESSEE_NAMES, LANG_NAMES, labels_text


async def channel_post(update: Update, context: BotContext) -> None:
    message = update.channel_post or update.edited_channel_post
    if message is None:
        return
    await context.pipeline.ingest([post_from_channel_message(message)])


async def forwarded(update: Update, context: BotContext) -> None:
    message = update.effective_message
    if message is None:
        return
    post = post_from_forward(message)
    if post is None:
        await reply(update, "I can check posts forwarded from <b>channels</b>; this one came from a person or a group.")
        return
    if not post.text.strip():
        pid = await context.pipeline.ingest_and_wait(post)
        await reply(update, f"Stored (post #{pid}), but it has no text or caption to classify.")
        return
    chat_id = update.effective_chat.id if update.effective_chat else None
    pid = await context.pipeline.ingest_and_wait(post, answered_chat=chat_id)
    stored = await context.storage.get_post(pid)
    if stored is None or stored.appeal is None:
        await reply(update, "Stored; the classifier is busy — it will be classified shortly.")
        return
    where = f"{channel_link(stored.channel)} · stored as post #{pid}"
    lang = LANG_NAMES.get(stored.lang or "other", "?")
    if stored.appeal:
        because = " · ".join(f"«{html_text(r)}»" for r in stored.reasons[:3])
        to = ADDRESSEE_NAMES.get(stored.addressee or "", stored.addressee or "?")
        await reply(update, f"🚨 <b>appeal: {html_text(labels_text(stored.labels))}</b> · {stored.score:.2f}\n"
                            f"to {html_text(to)} · {lang}\n<i>because</i> {because}\n{where}")
    else:
        await reply(update, f"Not an appeal · {(stored.score or 0):.2f} · {lang}\n{where}")
