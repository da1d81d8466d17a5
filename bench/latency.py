"""Ingest-to-alert latency through the local Bot API: N posts/s, M subscribed chats, real model.

The real bot (python-telegram-bot over HTTP, SQLite, the classifier on a worker thread)
runs against bot.local_botapi; a channel posts a realistic mix from the labelled data
(a fifth appeals) at a steady rate. For every alert the fake server receives, latency
is (time the sendMessage arrived) − (time the post was injected). Telegram's own global
limit (~30 messages/s) is lifted here (max_messages_per_second = 0) to measure the bot,
not the limit; see the README.

Every alert is claimed and recorded per recipient (at-least-once delivery). With
``--fail-share 0.2`` the local Bot API answers that share of ``sendMessage`` calls with a
502 (a transient error): the bot retries them with backoff, and the latency printed is the
delivery latency (post injected → the successful sendMessage).

    .venv/bin/python bench/latency.py --rate 10 --chats 100 --seconds 30
    .venv/bin/python bench/latency.py --rate 10 --chats 100 --appeal-share 0.05 --fail-share 0.2
    .venv/bin/python bench/latency.py --rate 10 --chats 100 --appeal-share 0.05 --real-length
    .venv/bin/python bench/latency.py --rate 10 --chats 100 --appeal-share 0.05 --postgres URL --workers 1

``--postgres URL`` stores into a fresh schema of that PostgreSQL database instead of SQLite; with
``--workers N`` the bot leaves classification to N ``appealwatch worker`` processes (the
scale-out topology, ``[pipeline] classify_in_bot = false``), whose model load is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from bot.app import AnyApp, build_application, load_classifier, services_of, start_bot, stop_bot
from bot.config import TelegramConfig, load_config
from bot.local_botapi import LocalBotAPI
from models.training.dataset import load_examples

CHANNEL_ID = -1001000000001
CHANNEL = "bench_channel"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


async def main_async(args: argparse.Namespace) -> None:
    cfg0 = load_config(None)
    t0 = time.perf_counter()
    clf = load_classifier(cfg0)
    print(f"model load: {time.perf_counter() - t0:.1f} s")
    rng = random.Random(0)
    ex = load_examples()
    if args.real_length:
        # real channel posts as the traffic (real_*.jsonl: nearly all not appeals) and the real-style
        # appeals (emoji headers, footers, news around a short call) as the appeals
        from models.training.dataset import load_real_examples

        appeals = [e.text for e in ex if e.appeal and e.id.startswith("rs-")]
        others = [e.text for e in load_real_examples() if not e.appeal]
    else:
        appeals = [e.text for e in ex if e.appeal]
        others = [e.text for e in ex if not e.appeal]
    n_posts = int(args.rate * args.seconds)
    texts = [rng.choice(appeals) if rng.random() < args.appeal_share else rng.choice(others) for _ in range(n_posts)]
    async with contextlib.AsyncExitStack() as cleanup:
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory())
        async with LocalBotAPI() as api:
            cfg = dataclasses.replace(
                cfg0,
                telegram=TelegramConfig(token="1:BENCH", api_base_url=api.base_url, api_file_url=api.base_file_url,
                                        max_messages_per_second=0),
                storage=dataclasses.replace(cfg0.storage, path=Path(tmp) / "bench.sqlite3"),
            )
            if args.postgres:
                url = await _fresh_schema(args.postgres)
                cleanup.push_async_callback(_drop_schema, args.postgres, url)
                cfg = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, url=url),
                                          pipeline=dataclasses.replace(cfg.pipeline, classify_in_bot=args.workers == 0))
                if args.workers:
                    procs = _start_workers(url, args.workers, cfg.model.cache_dir, Path(tmp))
                    cleanup.callback(_stop_workers, procs)
            app = build_application(cfg, classifier=clf, start_sources=False)
            await start_bot(app)
            try:
                for u in range(args.chats):
                    api.send_user_message(10_000 + u, "/subscribe")
                await api.wait_for_count("sendMessage", args.chats, timeout=120)
                api.add_bot_to_channel(CHANNEL_ID, CHANNEL, "Bench", by_user_id=10_000)
                if args.fail_share > 0:
                    api.fail("sendMessage", 502, "Bad Gateway", times=None, share=args.fail_share)
                mark = api.mark()
                injected: dict[int, float] = {}
                start = time.perf_counter()
                for i, text in enumerate(texts):
                    due = start + i / args.rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    injected[1 + i] = time.time()
                    api.post_to_channel(CHANNEL_ID, CHANNEL, "Bench", 1 + i, text)
                await asyncio.sleep(1.0)
                await services_of(app).pipeline.wait_idle(300)
                await asyncio.sleep(1.0)
                left = await _undelivered(app, timeout=120)  # a round that failed throughout: the sweep's turn
                rss = psutil.Process().memory_info().rss / 2**20
            finally:
                await stop_bot(app)
            link = re.compile(rf"t\.me/{CHANNEL}/(\d+)")
            per_alert: list[float] = []
            first: dict[int, float] = {}
            for call in api.calls[mark:]:
                if call.method != "sendMessage" or not call.ok or not call.text:
                    continue
                m = link.search(call.text)
                if not m:
                    continue
                mid = int(m.group(1))
                lat = call.time - injected[mid]
                per_alert.append(lat)
                first[mid] = min(first.get(mid, lat), lat)
            stats = services_of(app).pipeline.stats
            alert_stats = services_of(app).alerts.stats
            refused = sum(1 for c in api.calls[mark:] if c.method == "sendMessage" and c.error_code == 502)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n_posts} posts at {args.rate}/s, {args.chats} chats: {stats.appeals} appeals, "
          f"{len(per_alert)} alerts delivered, {stats.batches} classification batches")
    if args.fail_share > 0:
        print(f"transient 502s injected on {args.fail_share:.0%} of sendMessage: {refused} refused calls, "
              f"{alert_stats.retried} retries, {alert_stats.postponed} left for the sweep; "
              f"undelivered at the end: {left}")
    if per_alert:
        print(f"delivery latency per alert:  p50 {statistics.median(per_alert):.2f} s  p95 {pct(per_alert, 0.95):.2f} s  "
              f"max {max(per_alert):.2f} s")
        fl = list(first.values())
        print(f"first alert of a post: p50 {statistics.median(fl):.2f} s  p95 {pct(fl, 0.95):.2f} s")
    print(f"resident memory at the end: {rss:.0f} MiB; peak RSS {peak:.0f} MiB (bot + local Bot API in one process)")


async def _fresh_schema(url: str) -> str:
    import asyncpg

    schema = f"latency_{int(time.time())}"
    conn = await asyncpg.connect(url)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    return url + ("&" if "?" in url else "?") + f"search_path={schema}"


async def _drop_schema(url: str, schema_url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    await conn.execute(f"DROP SCHEMA {schema_url.rsplit('search_path=', 1)[1]} CASCADE")
    await conn.close()


def _start_workers(url: str, n: int, cache: Path, tmp: Path) -> list[subprocess.Popen[bytes]]:
    """``appealwatch worker`` processes sharing the cores; returns once each has loaded its model."""
    config = tmp / "worker.toml"
    config.write_text(f'[storage]\nurl = "{url}"\n[pipeline]\nclassify_in_bot = false\nworker_polls = false\n'
                      f'[model]\ncache_dir = "{cache}"\nthreads = {max(1, 2 // n)}\n', encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    logs = [tmp / f"worker{i}.log" for i in range(n)]
    procs = []
    for i, log in enumerate(logs):
        with log.open("wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "bot", "worker", "--config", str(config), "--name", f"w{i}"],
                                          stdout=out, stderr=subprocess.STDOUT, env=env))
    deadline = time.monotonic() + 300
    while not all("classifying for" in log.read_text(errors="replace") for log in logs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("workers did not start: " + " | ".join(log.read_text(errors="replace")[-500:] for log in logs))
        time.sleep(0.2)
    return procs


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(60)


async def _undelivered(app: AnyApp, timeout: float) -> int:
    """Alert claims still pending, after waiting up to ``timeout`` s for the sweep to send them."""
    storage = services_of(app).storage
    deadline = time.monotonic() + timeout
    while True:
        pending = (await storage.alert_counts(datetime.now(UTC) - timedelta(days=1))).get("pending", 0)
        if not pending or time.monotonic() > deadline:
            return pending
        await asyncio.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--chats", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--appeal-share", type=float, default=0.2)
    ap.add_argument("--real-length", action="store_true",
                    help="real channel posts and real-style appeals instead of the short hand-written posts")
    ap.add_argument("--postgres", metavar="URL", help="store into a fresh schema of this PostgreSQL database")
    ap.add_argument("--workers", type=int, default=0, help="with --postgres: classify in N worker processes")
    ap.add_argument("--fail-share", type=float, default=0.0,
                    help="share of sendMessage calls answered with a transient 502 (retried by the bot)")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
