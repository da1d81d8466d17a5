"""/export (CSV and JSON documents) and /trend (the chart alone)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from telegram import Update

from bot.arguments import UsageError, parse_label, parse_period, parse_search
from bot.charts import appeals_chart
from bot.export import write_both
from bot.messages import html_text
from bot.shell.context import BotContext
from bot.storage import SearchQuery, Storage
from handlers.common import command_args, reply, reply_error

MAX_UPLOAD = 45 * 2**20  # bots may upload up to 50 MB
NARROW = ("Narrow it with words or filters, e.g. <code>/export label:pow since:2026-03-01</code> "
          "(lang:, label:, channel:@name, since:, until:), or run <code>appealwatch export … --out file.csv</code> "
          "on the server.")


def _write_files(storage: Storage, q: SearchQuery, limit: int, csv_path: Path, json_path: Path) -> int:
    """Runs on a worker thread: reads through its own connection and writes CSV and JSON in one pass."""
    rows = storage.export_rows_blocking(q, limit=limit)
    try:
        with csv_path.open("w", encoding="utf-8", newline="") as c, json_path.open("w", encoding="utf-8") as j:
            return write_both(rows, c, j)
    finally:
        rows.close()


async def export(update: Update, context: BotContext) -> None:
    """/export [words and filters] — CSV and JSON documents. Admins by default ([access] export), one export a
    minute per user ([access] export_interval), at most [access] export_max_rows posts: counted before
    anything is written, and written by a worker thread."""
    chat, user = update.effective_chat, update.effective_user
    assert chat is not None
    access = context.config.access
    if user is None or not access.may_export(user.id, chat.id):
        await reply(update, "Only admins can export the archive ([access] export in the config). "
                            "/search and /digest are open to you.")
        return
    raw = command_args(update).strip()
    try:
        q = parse_search(raw) if raw else SearchQuery()
    except UsageError as exc:
        await reply_error(update, exc)
        return
    limits = context.services.exports
    wait = limits.wait(user.id, access.export_interval)
    if wait > 0:
        await reply(update, f"One export at a time: try again in {max(1, round(wait))} s.")
        return
    cap = access.export_max_rows
    n = await context.storage.count_export_rows(q, limit=cap + 1)
    if n == 0:
        await reply(update, "Nothing to export for that query.")
        return
    if n > cap:
        await reply(update, f"That matches more than {cap:,} posts, the most one /export sends. {NARROW}")
        return
    limits.take(user.id)
    with tempfile.TemporaryDirectory(prefix="appealwatch-export-") as tmp:
        csv_path, json_path = Path(tmp) / "appealwatch-export.csv", Path(tmp) / "appealwatch-export.json"
        n = await asyncio.to_thread(_write_files, context.storage, q, cap, csv_path, json_path)
        if n == 0:
            await reply(update, "Nothing to export for that query.")
            return
        if max(csv_path.stat().st_size, json_path.stat().st_size) > MAX_UPLOAD:
            await reply(update, f"{n:,} posts is more than Telegram lets a bot upload. {NARROW}")
            return
        shown = raw if len(raw) <= 200 else raw[:199] + "…"
        for path in (csv_path, json_path):
            with path.open("rb") as f:
                await context.bot.send_document(chat.id, f, filename=path.name,
                                                caption=f"{n} posts · {html_text(shown or 'everything')}")


async def trend(update: Update, context: BotContext) -> None:
    """/trend [label] [30d] — appeals per day as a chart."""
    chat = update.effective_chat
    assert chat is not None
    label = None
    period_arg = None
    for token in command_args(update).split():
        if token[0].isdigit():
            period_arg = token
        else:
            try:
                label = parse_label(token)
            except UsageError as exc:
                await reply_error(update, exc)
                return
    try:
        period = parse_period(period_arg or "30d")
    except UsageError as exc:
        await reply_error(update, exc)
        return
    counts = await context.storage.digest_counts(period.since, period.until)
    per_day = [row for row in counts["per_day"] if label is None or row[1] == label]
    if not per_day:
        await reply(update, f"No {html_text(label or '')} appeals in the {html_text(period.label)}.".replace("  ", " "))
        return
    title = f"{label or 'All'} appeals · {period.label}"
    png = await asyncio.to_thread(appeals_chart, per_day, counts["by_channel"], title,  # ~250 ms, off the event loop
                                  since=period.since.date(), until=period.until.date())
    await context.bot.send_photo(chat.id, png, caption=html_text(title))
