"""/search latency over a large archive: p50/p95 of Storage.search on N stored posts.

Posts are synthesised from the labelled data's sentences (real Russian, Ukrainian and
English vocabulary), a tenth of them classified as appeals with labels, spread over a
year and 200 channels. The database is built once into --db and reused.

    .venv/bin/python bench/search.py --posts 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from archive import build_archive  # bench/archive.py: scripts run as `python bench/X.py`

from bot.storage import SearchQuery, Storage

QUERIES = [
    SearchQuery(words="сдавайтесь"),
    SearchQuery(words="амністія"),
    SearchQuery(words="хочу жить"),
    SearchQuery(words="мамы солдат"),
    SearchQuery(words="surrender hotline"),
    SearchQuery(words="російські військові", lang="uk"),
    SearchQuery(words="плен", labels=("pow",)),
    SearchQuery(words="обмін полоненими", since=None),
    SearchQuery(words="россия"),  # a very common word: the worst case for ranking
    SearchQuery(words="зброю", channel="channel_7"),
    SearchQuery(words="", labels=("surrender",)),
    SearchQuery(words='" OR NEAR( *'),
]


async def build(db: Path, n: int, seed: int = 0) -> None:
    await build_archive(db, n, start=datetime(2025, 1, 1, tzinfo=UTC), days=365, vectors=False, seed=seed)


async def measure(db: Path, repeats: int) -> None:
    storage = Storage(db)
    await storage.open()
    n = await storage.count_posts()
    size = db.stat().st_size  # noqa: ASYNC240 - one stat for the report
    print(f"posts stored: {n:,}  database: {size / 1e6:.0f} MB")
    all_times = []
    for q in QUERIES:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            _, total = await storage.search(q, limit=5)
            times.append((time.perf_counter() - t) * 1000)
        all_times += times
        print(f"{(q.words or '-')[:22]:>22} {q.lang or '':>3} {','.join(q.labels):>10} {q.channel or '':>10} "
              f"matches {total:>8,}  median {statistics.median(times):6.1f} ms")
    all_times.sort()
    p50 = statistics.median(all_times)
    p95 = all_times[int(0.95 * (len(all_times) - 1))]
    print(f"\n/search over {n:,} posts: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({len(all_times)} searches)")
    await storage.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/appealwatch-bench-search-{n}.sqlite3")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    db = Path(args.db.format(n=args.posts))
    if not db.exists():
        asyncio.run(build(db, args.posts))
    asyncio.run(measure(db, args.repeats))


if __name__ == "__main__":
    main()
