"""Digests: counts by label, language and channel, the top appeals, and a chart."""

from __future__ import annotations

import html
from dataclasses import dataclass

from bot.alerts import LANG_NAMES, channel_link, labels_text, trim_at_word
from bot.charts import appeals_chart
from bot.queries import Period
from bot.storage import Storage


@dataclass(frozen=True, slots=True)
class Digest:
    html: str
    chart_png: bytes | None
    originals: tuple[tuple[int, int], ...]  # (channel chat id, message id) of top appeals the bot can forward
    appeals: int


async def build_digest(storage: Storage, period: Period, *, top: int = 5, chart: bool = True) -> Digest:
    counts = await storage.digest_counts(period.since, period.until)
    best = await storage.top_appeals(period.since, period.until, top)
    lines = [f"📊 <b>AppealWatch digest</b> · {html.escape(period.label)}",
             f"{counts['appeals']} appeals ({counts['stories']} distinct stories) in {counts['posts']} posts"]
    if counts["appeals"]:
        lines.append("\n<b>By label</b>: " + ", ".join(f"{html.escape(labels_text([k]))} {n}" for k, n in counts["by_label"]))
        lines.append("<b>By language</b>: " + ", ".join(f"{LANG_NAMES.get(k, k)} {n}" for k, n in counts["by_lang"]))
        lines.append("<b>By channel</b>: " + ", ".join(f"{channel_link(k)} {n}" for k, n in counts["by_channel"][:5]))
        lines.append("\n<b>Top appeals</b>")
        for i, p in enumerate(best, 1):
            reposts = f" · 🔁 {p.repost_count}" if p.repost_count else ""
            lines.append(
                f"{i}. <a href=\"{html.escape(p.permalink)}\">{html.escape(labels_text(p.labels))}</a> · "
                f"{(p.score or 0):.2f} · {channel_link(p.channel)}{reposts}\n"
                f"   {html.escape(trim_at_word(p.text.replace(chr(10), ' '), 160))}"
            )
    else:
        lines.append("\nNo appeals in this period.")
    png = None
    if chart and counts["appeals"]:
        png = appeals_chart(counts["per_day"], counts["by_channel"], f"Appeals · {period.label}",
                            since=period.since.date(), until=period.until.date())
    originals = tuple((p.chat_id, p.message_id) for p in best if p.chat_id is not None)
    return Digest("\n".join(lines), png, originals, int(counts["appeals"]))
