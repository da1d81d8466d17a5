"""/subscribe, /unsubscribe, /settings and their inline keyboards."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from telegram import Update

from bot.arguments import UsageError, parse_filters
from bot.callbacks import SettingsChoice, SubscriptionChoice
from bot.channels import normalise_channel
from bot.domain import Filters
from bot.messages import Button, Rendered, html_text
from bot.shell.adapter import keyboard
from bot.shell.context import BotContext
from bot.storage import ChatSettings
from handlers.common import command_args, edit_message, refused_unless_manager, reply, reply_error
from models.taxonomy import LABELS, LANG_NAMES, labels_text

LANG_CHOICES = ("ru", "uk", "en")
SCORE_CHOICES = (0.5, 0.7, 0.9)


def describe_filters(f: Filters, default_min: float) -> str:
    labels = labels_text(f.labels) if f.labels else "all labels"
    langs = ", ".join(LANG_NAMES[x] for x in f.languages) if f.languages else "all languages"
    chans = ", ".join("@" + c for c in f.channels) if f.channels else "all channels"
    score = max(f.min_score or 0.0, default_min)  # below the model's threshold nothing is an appeal
    return f"{html_text(labels)} · {langs} · {html_text(chans)} · score ≥ {score:.2f}"


def filters_keyboard(f: Filters) -> Rendered:
    def mark(on: bool) -> str:
        return "✅ " if on else ""

    label_rows = [
        tuple(Button(mark(lbl in f.labels) + labels_text([lbl]), data=SubscriptionChoice("l", lbl).encode())
              for lbl in LABELS[i : i + 3])
        for i in range(0, len(LABELS), 3)
    ]
    lang_row = tuple(Button(mark(g in f.languages) + LANG_NAMES[g], data=SubscriptionChoice("g", g).encode()) for g in LANG_CHOICES)
    score_row = tuple(Button(mark(f.min_score == s) + f"≥ {s}", data=SubscriptionChoice("m", str(s)).encode())
                      for s in SCORE_CHOICES)
    return Rendered("", (*label_rows, lang_row, score_row, (Button("Done", data=SubscriptionChoice("done").encode()),)))


def _chat_ids(update: Update) -> tuple[int, str, str | None]:
    chat = update.effective_chat
    assert chat is not None
    return chat.id, chat.type, chat.title or chat.full_name


async def subscribe(update: Update, context: BotContext) -> None:
    if await refused_unless_manager(update, context):
        return
    chat_id, type_, title = _chat_ids(update)
    args = command_args(update).split()
    try:
        filters = parse_filters(args)
    except UsageError as exc:
        await reply_error(update, exc)
        return
    await context.storage.ensure_chat(chat_id, type_=type_, title=title,
                                      forward_original=context.config.alerts.forward_original)
    await context.storage.subscribe(chat_id, filters)
    default_min = context.services.alert_floor
    await reply(
        update,
        f"🔔 Subscribed: {describe_filters(filters, default_min)}.\n"
        "Alerts arrive within seconds of a post. Tap to narrow (nothing ticked = everything):",
        filters_keyboard(filters),
    )


async def unsubscribe(update: Update, context: BotContext) -> None:
    if await refused_unless_manager(update, context):
        return
    chat_id, _, _ = _chat_ids(update)
    removed = await context.storage.unsubscribe(chat_id)
    await reply(update, "🔕 Unsubscribed. /subscribe to start again." if removed else "This chat wasn't subscribed.")


async def subscription_button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None
    if await refused_unless_manager(update, context):
        return
    chat_id, _, _ = _chat_ids(update)
    settings = await context.storage.chat_settings(chat_id)
    if settings is None or settings.filters is None:
        await query.answer("Not subscribed any more — /subscribe first.", show_alert=True)
        return
    f = settings.filters
    choice = SubscriptionChoice.decode(query.data)
    kind, value = choice.kind, choice.value
    if kind == "done":
        await query.answer("Saved")
        await edit_message(query, f"🔔 Subscribed: {describe_filters(f, context.services.alert_floor)}.")
        return
    if kind == "l" and value in LABELS:
        labels = tuple(x for x in f.labels if x != value) if value in f.labels else (*f.labels, value)
        f = Filters(labels, f.languages, f.channels, f.min_score)
    elif kind == "g" and value in LANG_CHOICES:
        langs = tuple(x for x in f.languages if x != value) if value in f.languages else (*f.languages, value)
        f = Filters(f.labels, langs, f.channels, f.min_score)
    elif kind == "m" and value in {str(s) for s in SCORE_CHOICES}:
        score = float(value)
        f = Filters(f.labels, f.languages, f.channels, None if f.min_score == score else score)
    else:
        await query.answer()
        return
    await context.storage.subscribe(chat_id, f)
    await query.answer("Updated")
    kb = filters_keyboard(f)

    await edit_message(query, f"🔔 Subscribed: {describe_filters(f, context.services.alert_floor)}.\nTap to narrow:",
                       keyboard(kb))


# -- /settings ------------------------------------------------------------------------------------

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def settings_text(s: ChatSettings, default_tz: str, default_min: float) -> str:
    sub = describe_filters(s.filters, default_min) if s.filters else "not subscribed (/subscribe)"
    quiet = f"{s.quiet_start}–{s.quiet_end}" if s.quiet_start and s.quiet_end else "off"
    digest = s.digest_mode if s.digest_mode == "off" else f"{s.digest_mode} at {s.digest_time or '08:00'}"
    muted = ", ".join("@" + m for m in s.muted) or "none"
    return (
        "⚙️ <b>Settings</b>\n"
        f"Alerts: {sub}\n"
        f"Quiet hours: {quiet}\n"
        f"Digest: {digest}\n"
        f"Time zone: {html_text(s.timezone or default_tz)}\n"
        f"Forward original posts with alerts: {'on' if s.forward_original else 'off'}\n"
        f"Muted channels: {html_text(muted)}\n\n"
        "Change with buttons, or type e.g. <code>/settings quiet 23:00-07:00</code>, "
        "<code>/settings digest daily 08:00</code>, <code>/settings timezone Europe/Kyiv</code>, "
        "<code>/settings forward on</code>, <code>/settings unmute @channel</code>."
    )


def settings_keyboard(s: ChatSettings) -> Rendered:
    def mark(on: bool) -> str:
        return "✅ " if on else ""

    return Rendered("", (
        tuple(Button(mark(s.digest_mode == m) + f"Digest {m}", data=SettingsChoice("d", m).encode())
              for m in ("off", "daily", "weekly")),
        (Button(mark(bool(s.quiet_start)) + "Quiet 23:00–07:00", data=SettingsChoice("q", "23:00-07:00").encode()),
         Button(mark(not s.quiet_start) + "No quiet hours", data=SettingsChoice("q", "off").encode())),
        (Button(mark(s.forward_original) + "Forward originals", data=SettingsChoice("f", "toggle").encode()),),
    ))


async def _apply_setting(context: BotContext, chat_id: int, key: str, value: str) -> str | None:
    """Apply one setting; returns an error message for the user, or None."""
    storage = context.storage
    if key in ("quiet", "q"):
        if value in ("off", "none", ""):
            await storage.update_chat(chat_id, quiet_start=None, quiet_end=None)
            return None
        m = re.fullmatch(r"(\S+)\s*[-–]\s*(\S+)", value)
        if not m or not _HHMM.match(m.group(1)) or not _HHMM.match(m.group(2)):
            return "Quiet hours look like 23:00-07:00 (or off)."
        await storage.update_chat(chat_id, quiet_start=m.group(1).zfill(5), quiet_end=m.group(2).zfill(5))
        return None
    if key in ("digest", "d"):
        parts = value.split()
        mode = parts[0] if parts else ""
        if mode not in ("off", "daily", "weekly"):
            return "Digest is off, daily or weekly, optionally with a time: /settings digest daily 08:00"
        at = parts[1] if len(parts) > 1 else None
        if at and not _HHMM.match(at):
            return f"“{html_text(at)}” is not a time like 08:00."
        fields: dict[str, object] = {"digest_mode": mode}
        if at:
            fields["digest_time"] = at.zfill(5)
        await storage.update_chat(chat_id, **fields)
        from bot.shell.jobs import schedule_chat_digest

        settings = await storage.chat_settings(chat_id)
        if settings is not None:
            schedule_chat_digest(context.application, settings, context.config)
        return None
    if key in ("timezone", "tz"):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a folder of the tz database
            return f"Unknown time zone “{html_text(value)}”. Examples: Europe/Kyiv, Europe/Berlin, UTC."
        await storage.update_chat(chat_id, timezone=value)
        return None
    if key in ("forward", "f"):
        current = await storage.chat_settings(chat_id)
        if value == "toggle":
            on = not (current.forward_original if current else False)
        elif value in ("on", "off"):
            on = value == "on"
        else:
            return "Use /settings forward on or /settings forward off."
        await storage.update_chat(chat_id, forward_original=int(on))
        return None
    if key == "unmute":
        try:
            await storage.unmute_channel(chat_id, normalise_channel(value))
        except ValueError:
            return f"“{html_text(value)}” is not a channel name."
        return None
    return f"Unknown setting “{html_text(key)}”. Try quiet, digest, timezone, forward or unmute."


async def settings(update: Update, context: BotContext) -> None:
    chat_id, type_, title = _chat_ids(update)
    await context.storage.ensure_chat(chat_id, type_=type_, title=title,
                                      forward_original=context.config.alerts.forward_original)
    args = command_args(update).strip()
    if args:
        if await refused_unless_manager(update, context):
            return
        key, _, value = args.partition(" ")
        error = await _apply_setting(context, chat_id, key.lower(), value.strip())
        if error:
            await reply(update, error)
            return
    s = await context.storage.chat_settings(chat_id)
    assert s is not None
    await reply(update, settings_text(s, context.config.digest.timezone, context.services.alert_floor),
                settings_keyboard(s))


async def settings_button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None
    if await refused_unless_manager(update, context):
        return
    chat_id, _, _ = _chat_ids(update)
    choice = SettingsChoice.decode(query.data)
    error = await _apply_setting(context, chat_id, choice.key, choice.value)
    await query.answer(error or "Saved")
    s = await context.storage.chat_settings(chat_id)
    if s is not None:
        await edit_message(query, settings_text(s, context.config.digest.timezone, context.services.alert_floor),
                           keyboard(settings_keyboard(s)))
