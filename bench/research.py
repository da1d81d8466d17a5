"""Research tools at archive scale: hybrid search, storage per post, charts, export.

Builds (once, reused) an archive of N synthetic posts from the labelled data's sentences,
every post classified with its embedding stored (float16, as the pipeline stores them;
the vectors are random unit vectors — this bench measures time and space, quality is
bench/retrieval.py's job). A tenth are appeals. Every post is in the vector index, loaded
from the database as the bot loads it (4-bit codes in memory, exact re-rank from the file).
Hybrid search is timed without filters and with the filters researchers use (language, a
label, a period), the query embedding included.

    .venv/bin/python bench/research.py --posts 100000
    .venv/bin/python bench/research.py --posts 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import resource
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from archive import DIM, build_archive  # bench/archive.py: scripts run as `python bench/X.py`

from bot.charts import appeals_chart
from bot.export import write_csv, write_json
from bot.search import hybrid_search, load_index
from bot.storage import SearchQuery, Storage
from bot.vector_index import VectorIndex, sqlite_vector_fetcher

QUERIES = ["сдавайтесь", "амністія для тих хто здасться", "prisoners calling their mothers", "хочу жить",
           "російські військові", "обмін полоненими", "your television lies", "не подписывайте контракт",
           "мамы солдат", "threat"]


async def build(db: Path, n: int, seed: int = 0) -> None:
    await build_archive(db, n, start=datetime(2026, 1, 1, tzinfo=UTC), days=300, vectors=True, seed=seed)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


async def measure(db: Path, repeats: int, export_limit: int | None) -> None:
    from models.classifier import AppealClassifier

    storage = Storage(db)
    await storage.open()
    n = await storage.count_posts()
    size = db.stat().st_size  # noqa: ASYNC240 - one stat for the report
    print(f"posts: {n:,}; database {size / 2**20:,.0f} MiB = {size / n:,.0f} bytes per post")
    parts = await storage.storage_bytes()
    groups = {"posts (text, evidence)": ("posts", "post_edits", "sqlite_autoindex_posts_1", "posts_state", "posts_date",
                                         "posts_hash", "posts_story", "post_edits_post"),
              "full-text index (lemmas, filters)": tuple(k for k in parts if k.startswith("posts_fts")),
              "classifications (incl. float16 embedding)": ("classifications", "classifications_appeal")}
    for name, keys in groups.items():
        b = sum(parts.get(k, 0) for k in keys)
        print(f"  {name:44} {b / n:7,.0f} B/post")
    from bot.config import load_config

    cfg = load_config(None)
    clf = AppealClassifier.load(cfg.model.base, cache_dir=cfg.model.cache_dir)
    space = clf.search_space  # the bot's language-neutral space (models.search_space)
    t = time.perf_counter()
    index = VectorIndex(DIM, fetch_vectors=sqlite_vector_fetcher(str(db)), centroids=space.posts if space else None)
    loaded = await load_index(index, storage)
    print(f"vector index: {loaded:,} posts loaded in {time.perf_counter() - t:.1f} s, "
          f"{index.memory_bytes() / 2**20:.0f} MiB in memory ({index.memory_bytes() / max(loaded, 1):.0f} B/post, "
          f"kernel {index.kernel})")

    def embed(text: str) -> np.ndarray:
        return clf.embed_query(text)

    filters = {
        "no filter": {},
        "lang:uk": {"lang": "uk"},
        "label:surrender": {"labels": ("surrender",)},
        "one month": {"since": datetime(2026, 3, 1, tzinfo=UTC), "until": datetime(2026, 3, 31, tzinfo=UTC)},
    }
    for mode in ("fts", "hybrid"):
        for fname, extra in filters.items():
            times = []
            for _ in range(repeats):
                for q in QUERIES:
                    t = time.perf_counter()
                    # floor -1: the synthetic vectors are random, so every query takes the feedback pass (two scans)
                    await hybrid_search(storage, index, embed, SearchQuery(words=q, **extra), limit=5, mode=mode,
                                        min_similarity=-1.0)
                    times.append((time.perf_counter() - t) * 1000)
            print(f"{mode:>6} search, {fname:16}: p50 {statistics.median(times):6.1f} ms, p95 {pct(times, 0.95):6.1f} ms "
                  f"({len(times)} searches{'; the query embedding included' if mode == 'hybrid' else ''})")

    until = datetime(2026, 10, 28, tzinfo=UTC)
    counts = await storage.digest_counts(until - timedelta(days=30), until)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        png = appeals_chart(counts["per_day"], counts["by_channel"], "Appeals · 30 days",
                            since=(until - timedelta(days=30)).date(), until=until.date())
        times.append((time.perf_counter() - t) * 1000)
    print(f"chart (30 days, {counts['appeals']:,} appeals): median {statistics.median(times):.0f} ms, {len(png) // 1024} KB PNG")

    class Sink(io.TextIOBase):
        def __init__(self) -> None:
            self.bytes = 0

        def write(self, s: str) -> int:
            self.bytes += len(s)
            return len(s)

    for fmt, writer in (("csv", write_csv), ("json", write_json)):
        q = SearchQuery()
        sink = Sink()
        tracemalloc.start()
        t = time.perf_counter()
        rows = storage.export_rows(q)
        if export_limit:
            rows = _limit(rows, export_limit)
        count = await writer(rows, sink)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"export {fmt}: {count:,} posts in {seconds:.1f} s = {count / seconds:,.0f} posts/s, "
              f"{sink.bytes / 2**20:,.0f} MiB written, peak traced Python memory {peak / 2**20:.1f} MiB")
    await storage.close()
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


async def _limit(rows, n: int):  # type: ignore[no-untyped-def]
    i = 0
    async for r in rows:
        yield r
        i += 1
        if i >= n:
            return


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=100_000)
    ap.add_argument("--db", default="/tmp/appealwatch-bench-research-{n}.sqlite3")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--export-limit", type=int, default=0, help="export at most this many posts (0: all)")
    args = ap.parse_args()
    db = Path(args.db.format(n=args.posts))
    if not db.exists():
        asyncio.run(build(db, args.posts))
    asyncio.run(measure(db, args.repeats, args.export_limit or None))


if __name__ == "__main__":
    main()
