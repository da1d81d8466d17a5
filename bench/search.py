"""/search latency over a large archive: p50/p95 of Storage.search on N stored posts.

Posts are synthesised from the labelled data's sentences (real Russian, Ukrainian and
English vocabulary), a tenth of them classified as appeals with labels, spread over a
year and 200 channels. The database is built once into --db and reused.

    .venv/bin/python bench/search.py --posts 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import time
from pathlib import Path

from tqdm import tqdm

from bot.storage import SearchQuery, Storage, content_hash, label_mask, meta_tokens
from models.taxonomy import LABELS
from models.training.dataset import load_examples

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
    rng = random.Random(seed)
    sentences = []
    for e in load_examples():
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", e.text) if len(s.strip()) > 20]
    storage = Storage(db)
    await storage.open()
    conn = storage.db
    for i in range(200):
        await storage.ensure_channel(f"channel_{i}", source="bot", watched=True)
    start = 1_735_689_600  # 2025-01-01
    await conn.execute("BEGIN")
    for i in tqdm(range(n), desc="synthesising posts", unit="post", mininterval=10):
        text = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 4)))
        ch = rng.randrange(200) + 1
        date = start + rng.randrange(365 * 86400)
        lang = rng.choice(["ru", "ru", "uk", "uk", "en"])
        appeal = rng.random() < 0.1
        labels = rng.sample(LABELS, rng.randint(1, 2)) if appeal else []
        cur = await conn.execute(
            "INSERT INTO posts(channel_id, message_id, text, date, first_seen, source, content_hash, lang, state, "
            "search_meta) VALUES (?,?,?,?,?,?,?,?,'done',?)",
            (ch, i, text, date, date, "bot", content_hash(text), lang,
             meta_tokens(f"channel_{ch - 1}", lang, labels, appeal)))
        if appeal:
            await conn.execute(
                "INSERT INTO classifications VALUES (?,?,?,?,?,?,?,?,NULL,?)",
                (cur.lastrowid, 1, rng.uniform(0.6, 1), json.dumps(labels), "{}", "ru_military", "[]", date,
                 label_mask(labels)))
        if i % 50_000 == 49_999:
            await conn.execute("COMMIT")
            await conn.execute("BEGIN")
    await conn.execute("COMMIT")
    await conn.execute("INSERT INTO posts_fts(posts_fts) VALUES ('optimize')")
    await storage.close()


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
