"""Import speed of a Telegram Desktop export, and its peak memory.

Two stages, measured separately because they differ by orders of magnitude:

1. read + store: a --messages export (default 100,000) streamed into SQLite through
   the pipeline's storage (posts/s, peak traced Python memory, peak RSS);
2. the full `appealwatch import` path (store + classify with the real model) on a
   --classify sample, which is bound by the encoder's messages/s.

    .venv/bin/python bench/import_export.py --messages 100000 --classify 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from bot.sources.desktop_export import import_export
from bot.storage import Storage
from models.training.dataset import load_examples


def write_export(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    texts = [e.text for e in load_examples()]
    with path.open("w", encoding="utf-8") as f:
        f.write('{"name": "Bench Channel", "type": "public_channel", "id": 1234567890, "messages": [\n')
        for i in range(1, n + 1):
            t = rng.choice(texts)
            msg: dict[str, object] = {"id": i, "type": "message", "date": "2026-01-01T10:00:00",
                                      "date_unixtime": str(1_767_261_600 + i * 60), "from": "Bench Channel",
                                      "from_id": "channel1234567890"}
            if i % 7 == 0:
                msg["text"] = [t[:40], {"type": "bold", "text": t[40:80]}, t[80:]]
            else:
                msg["text"] = t
            if i % 50 == 0:
                msg = {"id": i, "type": "service", "date_unixtime": msg["date_unixtime"], "action": "pin_message"}
            f.write(("," if i > 1 else "") + json.dumps(msg, ensure_ascii=False) + "\n")
        f.write("]}\n")


class StoreOnly:
    """The pipeline's storage step alone (what import does before classifying)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def ingest(self, posts: list) -> int:  # type: ignore[type-arg]
        results = await self.storage.store_posts(posts)
        return sum(r.is_new for r in results)


async def stage_store(path: Path, db: Path) -> None:
    size = path.stat().st_size  # noqa: ASYNC240 - before the clock starts
    storage = Storage(db)
    await storage.open()
    tracemalloc.start()
    t = time.perf_counter()
    summary = await import_export(path, StoreOnly(storage), channel="bench_channel", progress=False)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"read+store: {summary.read:,} messages ({summary.posts:,} posts, skipped {dict(summary.skipped)}) "
          f"in {seconds:.1f} s = {summary.posts / seconds:,.0f} posts/s; "
          f"export {size / 2**20:.0f} MiB, peak traced Python memory {peak / 2**20:.1f} MiB")
    t = time.perf_counter()
    again = await import_export(path, StoreOnly(storage), channel="bench_channel", progress=False)
    print(f"second import of the same file: {again.new} new posts in {time.perf_counter() - t:.1f} s")
    await storage.close()


async def stage_full(n: int, tmp: Path) -> None:
    from bot.app import load_classifier
    from bot.config import load_config
    from bot.pipeline import Pipeline

    path = tmp / "small.json"
    write_export(path, n, seed=1)
    cfg = load_config(None)
    clf = load_classifier(cfg)
    storage = Storage(tmp / "full.sqlite3")
    await storage.open()
    pipeline = Pipeline(storage, clf, alerts=None, batch_size=64, linger=0.2)
    pipeline.start()
    t = time.perf_counter()
    summary = await import_export(path, pipeline, channel="bench_small", progress=False)
    await pipeline.wait_idle()
    seconds = time.perf_counter() - t
    await pipeline.stop()
    await storage.close()
    print(f"full import (store + classify): {summary.posts:,} posts in {seconds:.1f} s = "
          f"{summary.posts / seconds:.1f} posts/s ({pipeline.stats.appeals} appeals)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--classify", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        path = tmp / "result.json"
        write_export(path, args.messages)
        asyncio.run(stage_store(path, tmp / "store.sqlite3"))
        if args.classify:
            asyncio.run(stage_full(args.classify, tmp))
    print(f"peak RSS of the whole run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
