"""Scale-out on PostgreSQL: classification throughput in the bot vs 1 and 2 worker processes, and what one
database can feed.

Real-length posts (the real channel posts of ``../shared/data/real`` that the model trains on,
``load_real_examples``), the real model, a fresh schema per run in the database given:

1. **in-bot**: the bot's own pipeline (one classification thread per core) classifies the posts
   it stored — the baseline, in this process;
2. **1 worker / 2 workers**: the posts are stored, then ``appealwatch worker`` child processes
   (2 threads, or 1 thread each) claim, classify and write them; timed from the workers being
   ready (model loaded) to an empty queue;
3. **ingest → alert through PostgreSQL** (``--latency``): ``bench/latency.py`` at 10 posts/s, 100
   chats, 5 % appeals, with the bot on PostgreSQL and 1 worker, then (the baseline, same run)
   the bot on SQLite classifying itself; each in its own process;
4. **the database alone**: with a scorer that costs nothing, how many posts/s PostgreSQL stores
   (``store_posts`` in batches of 50) and how many it hands out and takes back (``claim_posts`` +
   ``save_classifications`` with a 384-dim vector, 1 and 4 concurrent claimers). From these and
   the worker rate, on paper: how many worker hosts one database feeds.

    .venv/bin/python bench/scale.py --pg "postgresql:///appealwatch_test?host=/var/run/postgresql" --posts 200 [--latency]

On this 2-core machine the database, the workers and the benchmark share the same two cores:
the database figures are a floor for a real server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np

from bot.app import load_classifier
from bot.config import load_config
from bot.domain import IncomingPost
from bot.pipeline import Pipeline
from bot.storage.postgres import PostgresStorage
from models.taxonomy import Classification


@asynccontextmanager
async def fresh_schema(url: str) -> AsyncIterator[str]:
    schema = "bench_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(url)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    try:
        yield url + ("&" if "?" in url else "?") + f"search_path={schema}"
    finally:
        conn = await asyncpg.connect(url)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


def incoming(i: int, text: str) -> IncomingPost:
    return IncomingPost(channel=f"bench_{i % 20}", message_id=i, text=text, date=datetime.now(UTC), source="web")


async def in_bot(url: str, texts: Sequence[str], clf: object) -> float:
    async with fresh_schema(url) as u:
        storage = PostgresStorage(u)
        await storage.open()
        pipeline = Pipeline(storage, clf, batch_size=32)  # type: ignore[arg-type]
        pipeline.start()
        try:
            t0 = time.perf_counter()
            await pipeline.ingest([incoming(i, t) for i, t in enumerate(texts)])
            await pipeline.wait_idle(3600)
            return len(texts) / (time.perf_counter() - t0)
        finally:
            await pipeline.stop()
            await storage.close()


async def with_workers(url: str, texts: Sequence[str], n: int, threads: int, cache: Path) -> float:
    async with fresh_schema(url) as u:
        storage = PostgresStorage(u)
        await storage.open()
        await storage.store_posts([incoming(i, t) for i, t in enumerate(texts)])
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "worker.toml"
            config.write_text(f'[storage]\nurl = "{u}"\n[pipeline]\nclassify_in_bot = false\nworker_batch = 16\n'
                              f'worker_polls = false\n[model]\ncache_dir = "{cache}"\nthreads = {threads}\n', encoding="utf-8")
            logs = [Path(tmp) / f"w{i}.log" for i in range(n)]
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            procs = []
            for i, log in enumerate(logs):
                with log.open("wb") as out:
                    procs.append(subprocess.Popen([sys.executable, "-m", "bot", "worker", "--config", str(config),  # noqa: ASYNC220
                                                   "--name", f"w{i}"], stdout=out, stderr=subprocess.STDOUT, env=env))
            try:
                # the workers start claiming as soon as their model is loaded: time from the first claim
                while (await storage.queue_depth())[1] == 0 and (await storage.queue_depth())[0] == len(texts):
                    assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
                    await asyncio.sleep(0.02)
                t0 = time.perf_counter()
                while (await storage.queue_depth())[0] > 0:  # noqa: ASYNC110 - the database is what is watched
                    await asyncio.sleep(0.05)
                return len(texts) / (time.perf_counter() - t0)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(60)
                await storage.close()


@dataclass(frozen=True)
class _Free:
    classification: Classification
    vector: np.ndarray | None


class FreeScorer:
    """Costs nothing: what is left is the database's share of each post."""

    vec = (np.ones(384, dtype=np.float32) / np.sqrt(384))

    def score(self, texts: Sequence[str]) -> list[_Free]:
        c = Classification(appeal=False, score=0.01, labels=(), label_scores={}, addressee=None, reasons=(), lang="uk",
                           lang_confidence=0.99)
        return [_Free(c, self.vec) for _ in texts]


async def database_alone(url: str, texts: Sequence[str], n_posts: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    from bot.pipeline import score_stored

    out: dict[str, float] = {}
    async with fresh_schema(url) as u:
        storage = PostgresStorage(u)
        await storage.open()
        try:
            posts = [incoming(i, texts[i % len(texts)] + f" #{i}") for i in range(n_posts)]
            t0 = time.perf_counter()
            for s in range(0, n_posts, 50):
                await storage.store_posts(posts[s : s + 50])
            out["store posts/s (batches of 50)"] = n_posts / (time.perf_counter() - t0)
            executor = ThreadPoolExecutor(1)

            async def claimer(name: str) -> int:
                done = 0
                while ids := await storage.claim_posts(name, 16, lease=120):
                    scored = await score_stored(storage, FreeScorer(), ids, executor)
                    done += len(await storage.save_classifications(scored.items, worker=name))
                return done

            half = n_posts // 2
            await storage.db.execute("UPDATE posts SET claim_until=? WHERE id>?", (2**40, half))  # hold back half
            t0 = time.perf_counter()
            one = await claimer("solo")
            out["claim+write posts/s, 1 claimer"] = one / (time.perf_counter() - t0)
            await storage.db.execute("UPDATE posts SET claim_until=NULL WHERE state='new'")
            t0 = time.perf_counter()
            many = sum(await asyncio.gather(*(claimer(f"c{i}") for i in range(4))))
            out["claim+write posts/s, 4 claimers"] = many / (time.perf_counter() - t0)
            assert one + many == n_posts, (one, many)
        finally:
            await storage.close()
    return out


def run_latency(extra: list[str]) -> str:
    """bench/latency.py in its own process (its own bot, model and Bot API); its printed figures."""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("latency.py")), "--rate", "10", "--chats", "100",
                           "--appeal-share", "0.05", *extra], capture_output=True, text=True, check=True)
    return done.stdout


async def main_async(args: argparse.Namespace) -> None:
    from models.training.dataset import load_real_examples

    texts = [e.text for e in load_real_examples() if e.text.strip()][: args.posts]
    print(f"{len(texts)} real posts, median {statistics.median(len(t) for t in texts):.0f} characters; "
          f"database {args.pg.split('?')[0]}")
    cfg = load_config(None)
    clf = load_classifier(cfg)
    rates: dict[str, float] = {}
    rates["in-bot pipeline"] = await in_bot(args.pg, texts, clf)
    print(f"in-bot pipeline:       {rates['in-bot pipeline']:6.1f} posts/s")
    del clf  # the workers need the memory and the cores
    rates["1 worker (2 threads)"] = await with_workers(args.pg, texts, 1, 2, cfg.model.cache_dir)
    rates["2 workers (1 thread each)"] = await with_workers(args.pg, texts, 2, 1, cfg.model.cache_dir)
    base = rates["in-bot pipeline"]
    for name, rate in rates.items():
        print(f"{name:<26} {rate:6.1f} posts/s   ×{rate / base:.2f} of in-bot")
    db = await database_alone(args.pg, texts, args.db_posts)
    for name, rate in db.items():
        print(f"database alone: {name:<34} {rate:8.0f}")
    host = max(rates["1 worker (2 threads)"], rates["2 workers (1 thread each)"])
    ceiling = min(db["store posts/s (batches of 50)"], db["claim+write posts/s, 4 claimers"])
    if args.latency:
        for label, extra in (("PostgreSQL, 1 worker", ["--postgres", args.pg, "--workers", "1"]),
                             ("SQLite, in-bot (baseline)", [])):
            out = await asyncio.to_thread(run_latency, extra)
            for line in out.splitlines():
                if "latency" in line or "first alert" in line:
                    print(f"ingest → alert, {label}: {line.strip()}")
    print(f"on paper: one database here takes ~{ceiling:.0f} posts/s (the lower of store and claim+write); a 2-core "
          f"worker host classifies ~{host:.1f} real posts/s, so one database feeds ~{ceiling / host:.0f} such hosts "
          f"(or ~{ceiling / (host * 8):.0f} hosts with 16 cores, scaling per core)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", default=os.environ.get("APPEALWATCH_TEST_PG", "postgresql:///appealwatch_test?host=/var/run/postgresql"))
    ap.add_argument("--posts", type=int, default=200, help="real posts classified in each mode")
    ap.add_argument("--db-posts", type=int, default=5000, help="posts for the database-alone figures")
    ap.add_argument("--latency", action="store_true", help="also ingest → alert at 10 posts/s (bench/latency.py, ~4 min)")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
