"""Commands for running beyond one machine: ``appealwatch worker`` and ``appealwatch storage migrate``."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bot.cli.common import cli_config
from bot.config import Config
from bot.storage import Storage


def cmd_worker(args: argparse.Namespace) -> int:
    cfg = cli_config(args)
    if cfg.storage.url is None:
        print("error: `appealwatch worker` needs [storage] url (PostgreSQL): the bot and its workers share posts there")
        return 2
    if cfg.pipeline.classify_in_bot:
        print("error: `appealwatch worker` needs [pipeline] classify_in_bot = false (the bot's config too): with the bot "
              "classifying as well, a post could be classified by both")
        return 2
    return asyncio.run(run_worker(cfg, name=args.name))


async def run_worker(cfg: Config, *, name: str | None = None) -> int:
    from bot.app import load_classifier
    from bot.storage.factory import storage_for
    from bot.worker import ClassificationWorker

    storage = storage_for(cfg.storage)
    await storage.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        classifier = await loop.run_in_executor(None, load_classifier, cfg)
        p = cfg.pipeline
        worker = ClassificationWorker(storage, classifier, name=name, batch_size=p.worker_batch,
                                      lease=p.lease.total_seconds(), poll=p.poll)
        print(f"worker {worker.name}: classifying for {storage.describe()} (Ctrl-C stops; unfinished posts are given back)",
              flush=True)
        polling = _poll_web_channels(cfg, storage, worker.name) if p.worker_polls else None
        try:
            await worker.run(stop)
        finally:
            if polling is not None:
                polling.cancel()
                await asyncio.gather(polling, return_exceptions=True)
        s = worker.stats
        print(f"worker {worker.name}: {s.classified} posts classified in {s.batches} batches, {s.failed} failures, "
              f"{s.lost} results dropped (lease lost)")
    finally:
        await storage.close()
    return 0


def _poll_web_channels(cfg: Config, storage: Storage, name: str) -> asyncio.Task[None]:
    """This worker's share of the web-preview channels (``Storage.lease_channels``): more workers, more polling.

    Its posts are stored through a pipeline that classifies nothing itself: they join the
    queue every worker claims from, and the bot alerts them as usual.
    """
    from bot.pipeline import Pipeline
    from bot.sources.webpreview import WebPreviewSource
    from bot.sources.webpreview.settings import channel_lease, web_settings

    settings = web_settings(cfg.sources.web)
    sink = Pipeline(storage, None, classify=False)
    source = WebPreviewSource(sink, settings, on_unavailable=lambda ch, why: _unavailable(storage, ch, why))

    async def channels() -> list[str]:
        return await storage.lease_channels(f"worker:{name}", lease=channel_lease(settings))

    async def run() -> None:
        try:
            await source.run(channels)
        finally:
            await source.close()

    return asyncio.get_running_loop().create_task(run(), name="web-preview")


async def _unavailable(storage: Storage, channel: str, reason: str) -> None:
    await storage.mark_unavailable(channel, reason)  # the bot's /status shows it to the admins


def _sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain file path."""
    if url.startswith("sqlite:"):
        parts = urlsplit(url)
        return Path(unquote(parts.path[1:] if parts.path.startswith("//") else parts.path.lstrip("/") or parts.path))
    return Path(url)


def cmd_storage_migrate(args: argparse.Namespace) -> int:
    if not args.to.startswith(("postgresql://", "postgres://")):
        print("error: --to must be a PostgreSQL URL (postgresql://user@host/db)")
        return 2
    source = _sqlite_path(args.source).resolve()
    if not source.is_file():
        print(f"error: no SQLite database at {source}")
        return 2
    return asyncio.run(_migrate(source, args.to))


async def _migrate(source: Path, destination: str) -> int:
    from tqdm import tqdm

    from bot.storage.postgres import redact
    from bot.storage.transfer import MigrationRefused, copy_sqlite_to_postgres

    bars: dict[str, tqdm] = {}

    def progress(table: str, done: int, total: int) -> None:
        bar = bars.get(table)
        if bar is None:
            bar = bars[table] = tqdm(total=total, desc=f"{table:>15}", unit="row", leave=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    print(f"copying {source} → {redact(destination)}")
    try:
        copies = await copy_sqlite_to_postgres(source, destination, progress=progress)
    except MigrationRefused as exc:
        print(f"error: {exc}")
        return 2
    for bar in bars.values():
        bar.close()
    print(f"{'table':<16}{'in SQLite':>12}{'copied':>10}{'already there':>15}")
    for c in copies:
        print(f"{c.table:<16}{c.source_rows:>12,}{c.copied:>10,}{c.already_there:>15,}")
    print(f"done: {sum(c.copied for c in copies):,} rows copied, {sum(c.already_there for c in copies):,} already there")
    return 0
