"""Digests: counts by label, language and channel, the top appeals, and a chart; built and sent here.

``/digest``, ``/publish`` and the scheduled jobs all call ``send_digest``; sending goes
through ``DigestSender`` (implemented over PTB in ``bot.shell.adapter``).
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass
from typing import Protocol

from bot.arguments import Period, parse_period
from bot.callbacks import DigestOriginals
from bot.channels import channel_link
from bot.charts import appeals_chart
from bot.messages import Button, Rendered, html_text, trim_at_word
from bot.storage import Storage
from models.taxonomy import LANG_NAMES, labels_text


@dataclass(frozen=True, slots=True)
class Digest:
    html: str
    chart_png: bytes | None
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
                f"   {html_text(trim_at_word(p.text.replace(chr(10), ' ').replace(chr(13), ' '), 160))}"
            )
    else:
        lines.append("\nNo appeals in this period.")
    png = None
    if chart and counts["appeals"]:
        # ~250 ms of matplotlib: on a worker thread, so the bot keeps answering meanwhile
        png = await asyncio.to_thread(appeals_chart, counts["per_day"], counts["by_channel"], f"Appeals · {period.label}",
                                      since=period.since.date(), until=period.until.date())
    return Digest("\n".join(lines), png, int(counts["appeals"]))


class DigestSender(Protocol):
    """Posts a digest; raises when the chat cannot be reached (so ``/publish`` can say why)."""

    async def post(self, chat: int | str, message: Rendered) -> None: ...

    async def post_photo(self, chat: int | str, png: bytes, caption: str) -> None: ...


def render_digest(digest: Digest, period: Period) -> Rendered:
    """The digest message; a button forwards the period's original posts when there are any."""
    if not digest.appeals:
        return Rendered(digest.html)
    button = Button("📨 Forward the original posts",
                    data=DigestOriginals(int(period.since.timestamp()), int(period.until.timestamp())).encode())
    return Rendered(digest.html, ((button,),))


async def send_digest(sender: DigestSender, storage: Storage, chat: int | str, period_arg: str | None, *,
                      top: int = 5) -> None:
    """Build and send one digest: the text with its button, then the chart. UsageError on a bad period."""
    period = parse_period(period_arg)
    digest = await build_digest(storage, period, top=top)
    await sender.post(chat, render_digest(digest, period))
    if digest.chart_png:
        await sender.post_photo(chat, digest.chart_png, f"Appeals · {html.escape(period.label)}")
