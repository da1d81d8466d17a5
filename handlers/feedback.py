"""✅ / ❌ / 🔕 buttons on alerts, and /relabel for admins."""

from __future__ import annotations

import re

from telegram import Update

from bot.arguments import UsageError, parse_label
from bot.callbacks import Feedback, Mute
from bot.channels import channel_link, parse_post_link
from bot.messages import html_text
from bot.shell.context import BotContext
from handlers.common import NOT_YOURS, command_args, is_admin, refused_unless_manager, reply, reply_error


async def feedback_button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    button = Feedback.decode(query.data)
    verdict, post_id = button.verdict, button.post_id
    if await context.storage.get_post(post_id) is None:
        await query.answer("That post is no longer stored.", show_alert=True)
        return
    if not await context.storage.was_alerted(update.effective_chat.id, post_id):
        await query.answer(NOT_YOURS, show_alert=True)  # no alert about this post was sent here
        return
    user = update.effective_user
    await context.storage.add_feedback(update.effective_chat.id, user.id if user else None, post_id,
                                       "correct" if verdict == "ok" else "not_appeal",
                                       by_admin=is_admin(update, context))
    await query.answer("Thanks — noted for the next training run." if verdict == "ok"
                       else "Thanks — marked as not an appeal; it will be used to retrain.")


async def mute_button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    post = await context.storage.get_post(Mute.decode(query.data).post_id)
    if post is None:
        await query.answer("Unknown post.", show_alert=True)
        return
    if not await context.storage.was_alerted(update.effective_chat.id, post.id):
        await query.answer(NOT_YOURS, show_alert=True)
        return
    if await refused_unless_manager(update, context):  # in a group: its admins only
        return
    await context.storage.mute_channel(update.effective_chat.id, post.channel)
    await query.answer(f"Muted @{post.channel}. /settings unmute @{post.channel} to undo.")
    await context.bot.send_message(update.effective_chat.id,
                                   f"🔕 Muted {channel_link(post.channel)} for this chat. "
                                   f"<code>/settings unmute @{html_text(post.channel)}</code> undoes it.")


async def relabel(update: Update, context: BotContext) -> None:
    """/relabel <post id or t.me link> <labels|none> — an admin's correction, stored for training."""
    if not is_admin(update, context):
        await reply(update, "Only admins can relabel posts.")
        return
    args = command_args(update).split()
    if len(args) != 2:
        await reply(update, "Usage: /relabel 123 surrender,family — or /relabel https://t.me/channel/45 none")
        return
    ref, labels_arg = args
    post = None
    if re.fullmatch(r"[0-9]{1,18}", ref):
        post = await context.storage.get_post(int(ref))
    elif (link := parse_post_link(ref)) is not None:
        post = await context.storage.find_post(*link)
    if post is None:
        await reply(update, f"No stored post {html_text(ref[:80])}.")
        return
    try:
        labels = [] if labels_arg.lower() in ("none", "-") else [parse_label(x) for x in labels_arg.split(",") if x]
    except UsageError as exc:
        await reply_error(update, exc)
        return
    chat = update.effective_chat
    user = update.effective_user
    # an admin's verdict: it wins over users' ✅/❌ on the same post, earlier or later (storage.feedback_rows)
    await context.storage.add_feedback(chat.id if chat else 0, user.id if user else None, post.id,
                                       "relabel" if labels else "not_appeal", labels, by_admin=True)
    await reply(update, f"Recorded: post #{post.id} → {', '.join(labels) or 'not an appeal'}.")
