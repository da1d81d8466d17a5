"""/export (CSV and JSON documents) and /trend (the chart alone)."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

from telegram import Update

from bot.arguments import UsageError, parse_label, parse_period, parse_search
from bot.charts import appeals_chart
from bot.export import write_csv, write_json
from bot.shell.context import BotContext
from bot.storage import SearchQuery
from handlers.common import command_args, reply

MAX_UPLOAD = 45 * 2**20  # bots may upload up to 50 MB


async def export(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    assert chat is not None
    raw = command_args(update).strip()
    try:
        q = parse_search(raw) if raw else SearchQuery()
    except UsageError as exc:
        await reply(update, html.escape(str(exc)))
        return
    with tempfile.TemporaryDirectory(prefix="appealwatch-export-") as tmp:
        csv_path, json_path = Path(tmp) / "appealwatch-export.csv", Path(tmp) / "appealwatch-export.json"
        with csv_path.open("w", encoding="utf-8", newline="") as f:
            n = await write_csv(context.storage.export_rows(q), f)
        if n == 0:
            await reply(update, "Nothing to export for that query.")
            return
        with json_path.open("w", encoding="utf-8") as f:
            await write_json(context.storage.export_rows(q), f)
        if max(csv_path.stat().st_size, json_path.stat().st_size) > MAX_UPLOAD:
            await reply(update, f"{n} posts is more than Telegram lets a bot upload; narrow the query, "
                                "or run <code>appealwatch export … --out file.csv</code> on the server.")
            return
        for path in (csv_path, json_path):
            with path.open("rb") as f:
                await context.bot.send_document(chat.id, f, filename=path.name,
                                                caption=f"{n} posts · {html.escape(raw or 'everything')}")


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
                await reply(update, html.escape(str(exc)))
                return
    try:
        period = parse_period(period_arg or "30d")
    except UsageError as exc:
        await reply(update, html.escape(str(exc)))
        return
    counts = await context.storage.digest_counts(period.since, period.until)
    per_day = [row for row in counts["per_day"] if label is None or row[1] == label]
    if not per_day:
        await reply(update, f"No {html.escape(label or '')} appeals in the {html.escape(period.label)}.".replace("  ", " "))
        return
    title = f"{label or 'All'} appeals · {period.label}"
    png = appeals_chart(per_day, counts["by_channel"], title, since=period.since.date(), until=period.until.date())
    await context.bot.send_photo(chat.id, png, caption=html.escape(title))
