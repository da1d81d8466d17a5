"""/channels, /status, /watch, /unwatch, and channels that add the bot as admin."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from telegram import ChatMemberAdministrator, Update
from telegram.constants import ChatType

from bot.channels import channel_key, channel_link, normalise_channel
from bot.health import delivery_status
from bot.shell.context import BotContext
from handlers import approval
from handlers.common import command_args, is_admin, reply


def _ago(dt: datetime | None) -> str:
    if dt is None:
        return "never"
    s = int((datetime.now(UTC) - dt).total_seconds())
    if s < 90:
        return f"{max(s, 0)}s ago"
    if s < 5400:
        return f"{s // 60}m ago"
    if s < 172800:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


async def channels(update: Update, context: BotContext) -> None:
    health = await context.storage.channel_health()
    if not health:
        await reply(update, "No channels yet. Add the bot as an admin to a channel, or /watch @public_channel (admins).")
        return
    lines = ["📡 <b>Watched channels</b>"]
    length = 0
    health = [h for h in health if h.approval != "rejected"]
    for shown, h in enumerate(health):
        if length > 3500:  # Telegram's limit is 4096 characters per message
            lines.append(f"… and {len(health) - shown} more")
            break
        kind = {"bot": "bot admin", "web": "web preview", "export": "import", "forward": "forwards"}.get(h.source, h.source)
        fetched = f" · fetched {_ago(h.last_fetch_ok)}" if h.source == "web" else ""
        errors = f" · ⚠️ {h.errors_24h} errors/24h" if h.errors_24h else ""
        problem = f"\n   ⛔ {html.escape(h.last_error)}" if h.last_error and h.errors_24h else ""
        pending = " · ⏳ awaiting an admin's approval (no alerts)" if h.approval == "pending" else ""
        line = (f"• {channel_link(h.channel)} ({kind}) · {h.posts} posts · last post {_ago(h.last_post_date)}"
                f"{fetched}{errors}{pending}{problem}")
        lines.append(line)
        length += len(line) + 1
    await reply(update, "\n".join(lines))


async def status(update: Update, context: BotContext) -> None:
    st = context.pipeline.stats
    al = context.alerts.stats
    total = await context.storage.count_posts()
    await reply(update, f"🩺 <b>Status</b>\nposts stored: {total}\nthis run: {st.stored} new, {st.edits} edits, "
                        f"{st.duplicates} repeats ignored, {st.classified} classified, {st.appeals} appeals\n"
                        f"alerts: {al.sent} sent, {al.grouped} grouped as reposts, {al.held} held (quiet hours), "
                        f"{al.blocked} blocked, {al.failed} failed\n"
                        f"{await delivery_status(context.storage, al, st)}")
    await channels(update, context)


async def watch(update: Update, context: BotContext) -> None:
    if not is_admin(update, context):
        await reply(update, "Only admins can add channels ([access] admins in the config).")
        return
    arg = command_args(update).strip()
    try:
        name = normalise_channel(arg)
    except ValueError:
        await reply(update, "Usage: /watch @channel_name (a public channel's username)")
        return
    user = update.effective_user
    await context.storage.ensure_channel(name, source="web", watched=True, added_by=user.id if user else None,
                                         approval="approved")  # an admin chose it
    web = context.services.web_source
    note = " I'll read its public web preview (t.me/s/…)." if web is not None else \
        " (The web preview source is off in this run; posts arrive when the bot is an admin there.)"
    await reply(update, f"👀 Watching {channel_link(name)}.{note}")


async def unwatch(update: Update, context: BotContext) -> None:
    if not is_admin(update, context):
        await reply(update, "Only admins can remove channels.")
        return
    try:
        name = normalise_channel(command_args(update).strip())
    except ValueError:
        await reply(update, "Usage: /unwatch @channel_name")
        return
    found = await context.storage.set_watched(name, False)
    await reply(update, f"Stopped watching {channel_link(name)}." if found else f"{channel_link(name)} wasn't watched.")


async def bot_membership(update: Update, context: BotContext) -> None:
    """A channel that makes the bot an admin registers itself (its posts then arrive as updates).

    Added by one of [access] admins (or with no admins configured): approved at once. Added by
    anyone else: 'pending' — its posts are stored but neither alerted nor in digests until an
    admin presses Approve on the message every admin gets (handlers.approval).
    """
    member = update.my_chat_member
    if member is None or member.chat.type != ChatType.CHANNEL:
        return
    key = channel_key(member.chat.id, member.chat.username)
    is_admin_now = isinstance(member.new_chat_member, ChatMemberAdministrator)
    adder = member.from_user.id if member.from_user else None
    before = await context.storage.channel_access(key=key)
    trusted = is_admin_now and (not context.config.access.admins or context.config.access.is_admin(adder))
    await context.storage.ensure_channel(key, chat_id=member.chat.id, title=member.chat.title, source="bot",
                                         watched=is_admin_now, added_by=adder, approval="approved" if trusted else None,
                                         approved_from=member.date)  # posts racing this update still alert
    after = await context.storage.channel_access(key=key)
    newly_pending = before is None or before.approval != "pending" or not before.watched
    if is_admin_now and after is not None and after.approval == "pending" and newly_pending:
        await approval.ask_admins(context, after, adder)
