"""``appealwatch import``: history from Telegram Desktop's JSON export, through the same pipeline.

Imported posts are stored and classified like live ones but raise no alerts: they are
history. A second import of the same file adds nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

from bot.config import Config, normalise_channel
from bot.pipeline import Pipeline
from bot.sources.desktop_export import import_export
from bot.storage import Storage


async def run_import(cfg: Config, path: Path, *, channel: str | None = None) -> int:
    from bot.app import load_classifier

    if not path.is_file():  # noqa: ASYNC240 - one stat before anything starts
        print(f"error: no such file: {path}")
        return 2
    key = None
    if channel:
        try:
            key = normalise_channel(channel)
        except ValueError as exc:
            print(f"error: {exc}")
            return 2
    storage = Storage(cfg.storage.path)
    await storage.open()
    try:
        classifier = await asyncio.get_running_loop().run_in_executor(None, load_classifier, cfg)
        pipeline = Pipeline(storage, classifier, alerts=None, batch_size=64, linger=0.2)
        pipeline.start()
        started = time.perf_counter()
        summary = await import_export(path, pipeline, channel=key)
        print(f"stored; classifying {pipeline.pending} new posts…")
        await pipeline.wait_idle()
        await pipeline.stop()
        seconds = time.perf_counter() - started
        rows = await storage.fetch_all(
            "SELECT p.lang, cl.labels FROM posts p JOIN channels c ON c.id=p.channel_id "
            "JOIN classifications cl ON cl.post_id=p.id WHERE c.key=? AND cl.appeal=1", (summary.channel,))
        by_label: Counter[str] = Counter()
        by_lang: Counter[str] = Counter()
        for lang, labels in rows:
            by_lang[lang or "?"] += 1
            by_label.update(json.loads(labels))
        skipped = ", ".join(f"{n} {why}" for why, n in summary.skipped.items()) or "none"
        print(f"\nImported {path} as {summary.channel} in {seconds:.1f} s")
        print(f"  messages read: {summary.read}, posts: {summary.posts}, new: {summary.new}, skipped: {skipped}")
        print(f"  appeals in this channel: {len(rows)}; by label: {dict(by_label.most_common())}; "
              f"by language: {dict(by_lang.most_common())}")
    finally:
        await storage.close()
    return 0
