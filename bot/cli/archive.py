"""``appealwatch import``, ``export`` and ``reprocess``: moving an archive in and out of storage, and
classifying again the posts the bot gave up on.

Import reads Telegram Desktop's JSON export (parsed by ``bot.sources.desktop_export``) through
the same pipeline as live posts; imported posts are history, so they raise no alerts, and a
second import of the same file adds nothing. Export streams the archive as CSV or JSON with
the same filters as ``/search``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

from bot.arguments import UsageError, parse_search
from bot.channels import normalise_channel
from bot.cli.common import cli_config
from bot.config import Config
from bot.export import write_csv, write_json
from bot.pipeline import Pipeline
from bot.sources.desktop_export import import_export
from bot.storage import SearchQuery, Storage
from bot.storage.factory import storage_for


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
    storage = storage_for(cfg.storage)
    await storage.open()
    try:
        classifier = await asyncio.get_running_loop().run_in_executor(None, load_classifier, cfg)
        # with workers ([pipeline] classify_in_bot = false) the posts join their queue: only claims classify
        in_process = cfg.pipeline.classify_in_bot
        pipeline = Pipeline(storage, classifier, alerts=None, batch_size=64, linger=0.2, classify=in_process)
        pipeline.start()
        started = time.perf_counter()
        summary = await import_export(path, pipeline, channel=key)
        if in_process:
            print(f"stored; classifying {pipeline.pending} new posts…")
            await pipeline.wait_idle()
        else:
            await _wait_for_workers(storage)
        await pipeline.stop()
        seconds = time.perf_counter() - started
        rows = await storage.channel_appeals(summary.channel)
        by_label: Counter[str] = Counter()
        by_lang: Counter[str] = Counter()
        for lang, labels in rows:
            by_lang[lang or "?"] += 1
            by_label.update(labels)
        skipped = ", ".join(f"{n} {why}" for why, n in summary.skipped.items()) or "none"
        print(f"\nImported {path} as {summary.channel} in {seconds:.1f} s")
        print(f"  messages read: {summary.read}, posts: {summary.posts}, new: {summary.new}, skipped: {skipped}")
        print(f"  appeals in this channel: {len(rows)}; by label: {dict(by_label.most_common())}; "
              f"by language: {dict(by_lang.most_common())}")
    finally:
        await storage.close()
    return 0



async def run_export(cfg: Config, args: argparse.Namespace) -> int:
    text = " ".join(args.query)
    try:
        q = parse_search(text) if text.strip() else SearchQuery()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    storage = storage_for(cfg.storage)
    await storage.open()
    try:
        # a local file written row by row as the rows stream in
        out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8", newline="")  # noqa: ASYNC230
        try:
            writer = write_csv if args.format == "csv" else write_json
            n = await writer(storage.export_rows(q), out)
        finally:
            if out is not sys.stdout:
                out.close()
    finally:
        await storage.close()
    print(f"exported {n} posts", file=sys.stderr)
    return 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    return asyncio.run(run_reprocess(cli_config(args)))


async def _wait_for_workers(storage: Storage) -> None:
    """Until the workers have classified the queue (a progress bar; Ctrl-C leaves the rest to them)."""
    from tqdm import tqdm

    waiting = (await storage.queue_depth())[0]
    print(f"stored; {waiting} posts are in the workers' queue (`appealwatch worker` classifies them)…")
    with tqdm(total=waiting, unit="post", desc="classified by workers") as bar:
        while waiting:
            await asyncio.sleep(1.0)
            now = (await storage.queue_depth())[0]
            bar.update(max(0, waiting - now))
            waiting = now


async def run_reprocess(cfg: Config) -> int:
    """Classify every post in state 'error' once more (the bot may be running).

    They end 'classified', not 'done': the running bot's healing sweep (or its next start)
    fans them out under the usual rules — too old to alert, stories, claims. Exit status 1
    while some still fail.
    """
    from bot.app import load_classifier

    storage = storage_for(cfg.storage)
    await storage.open()
    try:
        failed = await storage.failed_posts()
        if not failed:
            print("no posts in state 'error'")
            return 0
        if not cfg.pipeline.classify_in_bot:  # workers classify: the posts go back to their queue
            pipeline = Pipeline(storage, None, classify=False)
            ids = await pipeline.retry_failed()
            print(f"{len(ids)} posts in state 'error' are back in the workers' queue; /status shows what still fails")
            return 0
        print(f"{len(failed)} posts in state 'error'; classifying them again…")
        classifier = await asyncio.get_running_loop().run_in_executor(None, load_classifier, cfg)
        pipeline = Pipeline(storage, classifier, alerts=None, batch_size=cfg.model.batch_size, hand_off=True)
        pipeline.start()
        ids = await pipeline.retry_failed()
        await pipeline.wait_idle()
        await pipeline.stop()
        still = [f for f in await storage.failed_posts() if f.id in set(ids)]
        print(f"reprocessed {len(ids)} posts: {len(ids) - len(still)} classified, {len(still)} still failing")
        for post in still:
            print(f"  #{post.id} @{post.channel}/{post.message_id}: {post.error}")
        return 1 if still else 0
    finally:
        await storage.close()

