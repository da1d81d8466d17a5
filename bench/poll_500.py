"""500 channels polled through one request budget: does the budget hold, and how late are posts?

A local aiohttp server (its own process, 127.0.0.1, port 0) serves a t.me/s-shaped
page per channel and publishes new posts over time: channel popularity is Zipf-like
(a few busy channels, a long quiet tail), as on real Telegram. ``WebPreviewSource.run``
polls all of them for a bounded time under ``requests_per_second``. Printed:

* requests made, the median and the maximum number in any 1-second window, against
  the budget (rate + burst);
* lag from a post appearing on the server to its ingest: p50 (median) / p95 / max,
  and how many published posts were never ingested.

Times are scaled down (intervals of seconds, not minutes) so it runs in ~40 s;
the budget and the lag scale with them. Both processes read CLOCK_MONOTONIC, so
server-side publish times and client-side ingest times are comparable.

Run: ``.venv/bin/python bench/poll_500.py [--seconds 30 --rps 100]``
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import html
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.domain import IncomingPost  # noqa: E402
from bot.sources.ratelimit import TokenBucket  # noqa: E402
from bot.sources.webpreview import WebPreviewSettings, WebPreviewSource  # noqa: E402

POST = (
    '<div class="tgme_widget_message_wrap js-widget_message_wrap">'
    '<div class="tgme_widget_message js-widget_message" data-post="{name}/{mid}">'
    '<div class="tgme_widget_message_bubble">'
    '<div class="tgme_widget_message_text js-message_text" dir="auto">{text}</div>'
    '<div class="tgme_widget_message_footer"><div class="tgme_widget_message_info">'
    '<span class="tgme_widget_message_views">{views}</span><span class="tgme_widget_message_meta">'
    '<a class="tgme_widget_message_date" href="https://t.me/{name}/{mid}">'
    '<time datetime="2024-05-20T10:00:00+00:00" class="time">10:00</time></a></span>'
    "</div></div></div></div></div>"
)
TEXTS = (
    "Российские солдаты, сдавайтесь! Горячая линия «Хочу жить» работает круглосуточно.",
    "Обмін полоненими: додому повернулися захисники.",
    "Mothers of Russian soldiers: your sons can come home alive.",
    "Жителі окупованих територій, не передавайте дані окупантам.",
)


class Server:
    """Channels with posts (id, text, published-at) and a log of request times."""

    def __init__(self, channels: int, rate: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.names = [f"bench_chan_{i:03d}" for i in range(channels)]
        self.posts: dict[str, list[tuple[int, str, float]]] = {
            name: [(mid, TEXTS[mid % len(TEXTS)], 0.0) for mid in range(1, 6)] for name in self.names
        }
        self.weights = [1 / (i + 1) for i in range(channels)]  # Zipf, s=1
        self.rate = rate
        self.requests: list[float] = []
        self.publishing = False

    def page(self, name: str, before: int | None) -> str:
        posts = self.posts[name]
        if before is not None:
            posts = posts[: bisect.bisect_left([p[0] for p in posts], before)]
        shown = posts[-20:]
        more = ""
        if len(posts) > len(shown):
            first = shown[0][0]
            more = (
                f'<a href="/s/{name}?before={first}" class="tme_messages_more js-messages_more"'
                f' data-before="{first}"></a>'
            )
        items = "".join(
            POST.format(name=name, mid=mid, text=html.escape(f"{text} #{mid}"), views=f"{mid * 7 % 90 + 1}.{mid % 10}K")
            for mid, text, _ in shown
        )
        return (
            f'<html><body><main class="tgme_main"><section class="tgme_channel_history js-message_history">'
            f"{more}{items}</section></main></body></html>"
        )

    async def preview(self, request: web.Request) -> web.Response:
        self.requests.append(time.monotonic())
        name = request.match_info["name"]
        if name not in self.posts:
            raise web.HTTPFound(f"/{name}")
        before = request.query.get("before")
        return web.Response(text=self.page(name, int(before) if before else None), content_type="text/html")

    async def control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action == "start":
            self.publishing = True
            return web.json_response({"ok": True})
        published = {
            name: [(mid, t) for mid, _, t in posts if t > 0] for name, posts in self.posts.items() if len(posts) > 5
        }
        return web.json_response({"requests": self.requests, "published": published})

    async def publish(self) -> None:
        """New posts at ``rate`` per second overall, spread over channels by popularity."""
        while True:
            await asyncio.sleep(self.rng.expovariate(self.rate))
            if not self.publishing:
                continue
            name = self.rng.choices(self.names, self.weights)[0]
            posts = self.posts[name]
            mid = posts[-1][0] + self.rng.choice((1, 1, 1, 2))  # deleted posts leave gaps
            posts.append((mid, TEXTS[mid % len(TEXTS)], time.monotonic()))


def serve(port_queue: Any, channels: int, rate: float, seed: int) -> None:
    async def main() -> None:
        server = Server(channels, rate, seed)
        app = web.Application()
        app.router.add_get("/s/{name}", server.preview)
        app.router.add_get("/_bench/{action}", server.control)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await server.publish()

    asyncio.run(main())


class RecordingBucket(TokenBucket):
    """The source's bucket, noting when each token is granted (the send side of the budget)."""

    def __init__(self, rate: float, burst: int) -> None:
        super().__init__(rate, burst)
        self.grants: list[float] = []

    async def acquire(self) -> None:
        await super().acquire()
        self.grants.append(time.monotonic())


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """Most events in any ``window``-long interval (times sorted)."""
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class TimingSink:
    """Remembers when each post was first ingested."""

    def __init__(self) -> None:
        self.first_seen: dict[tuple[str, int], float] = {}

    async def ingest(self, posts: Sequence[IncomingPost]) -> None:
        now = time.monotonic()
        for post in posts:
            self.first_seen.setdefault((post.channel, post.message_id), now)

    async def last_message_id(self, channel: str) -> int | None:
        return None

    async def record_fetch(
        self, channel: str, *, ok: bool, error: str | None = None, when: datetime | None = None
    ) -> None:
        return None


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(args: argparse.Namespace, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    names = [f"bench_chan_{i:03d}" for i in range(args.channels)]
    settings = WebPreviewSettings(
        base_url=base,
        min_interval=args.min_interval,
        initial_interval=args.min_interval * 4,
        max_interval=args.min_interval * 16,
        requests_per_second=args.rps,
        burst=args.burst,
        max_concurrency=16,
        backfill_limit=100,
        jitter=0.1,
        base_backoff=1.0,
        max_backoff=10.0,
    )
    sink = TimingSink()
    bucket = RecordingBucket(args.rps, args.burst)
    async with aiohttp.ClientSession() as session, WebPreviewSource(sink, settings, session=session) as source:
        source.bucket = bucket
        task = asyncio.create_task(source.run(lambda: names))
        await asyncio.sleep(args.warmup)  # first round: every channel's initial backfill
        async with session.get(f"{base}/_bench/start") as resp:
            await resp.read()
        started = time.monotonic()
        await asyncio.sleep(args.seconds)
        ended = time.monotonic()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        async with session.get(f"{base}/_bench/stats") as resp:
            stats = await resp.json()
        intervals = sorted(source.status(n).interval for n in names)

    requests = stats["requests"]
    first = requests[0]
    per_second = [0] * (int(requests[-1] - first) + 1)
    for t in requests:
        per_second[int(t - first)] += 1
    at_send = max_in_window(bucket.grants)
    at_arrival = max_in_window(requests)

    lags: list[float] = []
    missing = 0
    published = 0
    for name, posts in stats["published"].items():
        for mid, t in posts:
            published += 1
            seen = sink.first_seen.get((name, mid))
            if seen is not None:
                lags.append(seen - t)
            elif t < ended - settings.max_interval * 1.2:
                missing += 1  # old enough that a poll must have found it

    print(f"channels {args.channels}, budget {args.rps:g} req/s + burst {args.burst}, run {args.seconds:g}s")
    print(f"requests made:            {len(requests)} ({len(requests) / (requests[-1] - first):.1f}/s overall)")
    print(f"requests per second:      median {statistics.median(per_second):.0f} (server side)")
    verdict = "held" if at_send <= args.rps + args.burst else "EXCEEDED"
    print(
        f"max in any 1-s window:    {at_send} at send (token granted) vs budget {args.rps + args.burst:g} -> {verdict}"
    )
    print(f"                          {at_arrival} at arrival on the server (transport and event-loop jitter)")
    print(
        f"interval per channel:     median {statistics.median(intervals):.1f}s,"
        f" min {intervals[0]:.1f}s, max {intervals[-1]:.1f}s"
    )
    print(f"posts published:          {published} in {ended - started:.1f}s; ingested {len(lags)}")
    if lags:
        print(
            f"lag publish -> ingest:    p50 {statistics.median(lags):.2f}s, p95 {percentile(lags, 0.95):.2f}s,"
            f" max {max(lags):.2f}s"
        )
    print(f"missed (older than 1.2 x max_interval, never ingested): {missing}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=500)
    ap.add_argument("--rps", type=float, default=100.0, help="requests_per_second budget")
    ap.add_argument("--burst", type=int, default=5)
    ap.add_argument("--min-interval", type=float, default=1.0, help="scaled: production uses 60 s")
    ap.add_argument("--publish-rate", type=float, default=20.0, help="new posts per second, all channels")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured time")
    ap.add_argument("--warmup", type=float, default=6.0, help="time for the first round before posting starts")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=serve, args=(ports, args.channels, args.publish_rate, args.seed), daemon=True)
    proc.start()
    try:
        asyncio.run(drive(args, ports.get(timeout=30)))
    finally:
        proc.terminate()
        proc.join(5)


if __name__ == "__main__":
    main()
