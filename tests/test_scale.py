"""Scale-out: classification workers beside the bot, PostgreSQL as the shared store and queue.

The end-to-end test is the issue's: the bot (in this process, polling the local Bot API) on
PostgreSQL with ``classify_in_bot = false``, two ``appealwatch worker`` child processes with
the real model, 24 channel posts, and one worker SIGKILLed with its first batch classified and
nothing written (``bot.crashpoints``): every appeal is alerted once per chat, every post classified
once, nothing left in the queue. The other tests check the pieces on both engines.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from bot.config import ConfigError, load_config
from bot.domain import IncomingPost
from bot.local_botapi import LocalBotAPI
from bot.storage import SearchQuery, Storage
from bot.worker import ClassificationWorker
from models.classifier import AppealClassifier
from models.taxonomy import Classification
from tests.botkit import Channel, is_alert, running_bot, storage_of
from tests.test_restart import alert_link, injected_posts

# -- the queue on both engines, with a counting scorer (fast; the real model runs in the end-to-end test) ------


@dataclass(frozen=True)
class _Scored:
    classification: Classification
    vector: np.ndarray | None


@dataclass
class CountingScorer:
    """Scores every text as an appeal iff it holds "сдавайся"; counts how often each text was scored."""

    calls: Counter[str] = field(default_factory=Counter)
    delay: float = 0.01

    def score(self, texts: Sequence[str]) -> list[_Scored]:
        time.sleep(self.delay)
        self.calls.update(texts)
        out = []
        for t in texts:
            appeal = "сдавайся" in t
            vec = np.zeros(8, dtype=np.float32)
            vec[hash(t) % 8] = 1.0
            out.append(_Scored(Classification(appeal=appeal, score=0.9 if appeal else 0.05,
                                              labels=("surrender",) if appeal else (), label_scores={},
                                              addressee="military" if appeal else None, reasons=(), lang="ru",
                                              lang_confidence=0.99), vec))
        return out


def post(mid: int, text: str) -> IncomingPost:
    return IncomingPost(channel="queue_chan", message_id=mid, text=text, date=datetime.now(UTC), source="web")


async def drain(workers: list[ClassificationWorker], storage: Storage, timeout: float = 60.0) -> None:
    """Run the workers side by side until nothing is left in the queue."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    deadline = time.monotonic() + timeout
    try:
        while (await storage.queue_depth())[0] > 0:
            assert time.monotonic() < deadline, f"queue not drained: {await storage.queue_depth()}"
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_two_workers_share_the_queue_and_classify_each_post_once(make_storage: Callable[..., Storage]) -> None:
    storage = make_storage("queue.sqlite3")
    await storage.open()
    try:
        texts = [f"Пост {i}: " + ("сдавайся, солдат" if i % 5 == 0 else "погода и новости") for i in range(40)]
        await storage.store_posts([post(i, t) for i, t in enumerate(texts)])
        scorer = CountingScorer()
        workers = [ClassificationWorker(storage, scorer, name=n, batch_size=4, lease=60, poll=0.05) for n in ("w1", "w2")]
        await drain(workers, storage)
        assert scorer.calls == Counter(texts)  # each post scored once: no batch was claimed twice
        assert sum(w.stats.classified for w in workers) == 40 and all(w.stats.classified > 0 for w in workers)
        rows = list(await storage.db.execute_fetchall(
            "SELECT p.state, p.claimed_by, cl.appeal FROM posts p JOIN classifications cl ON cl.post_id=p.id"))
        assert len(rows) == 40 and {r[0] for r in rows} == {"classified"}
        assert Counter(r[1] for r in rows) == Counter({w.name: w.stats.classified for w in workers})
        assert sum(int(r[2]) for r in rows) == 8
        assert await storage.queue_depth() == (0, 0)
    finally:
        await storage.close()


async def test_a_failing_post_is_retried_after_its_lease_and_never_blocks_its_batch(
        make_storage: Callable[..., Storage]) -> None:
    storage = make_storage("failing.sqlite3")
    await storage.open()

    class Flaky(CountingScorer):
        def score(self, texts: Sequence[str]) -> list[_Scored]:
            if any("💥" in t for t in texts):
                raise RuntimeError("the model choked")
            return super().score(texts)

    try:
        await storage.store_posts([post(1, "обычный пост"), post(2, "💥 плохой пост"), post(3, "сдавайся")])
        worker = ClassificationWorker(storage, Flaky(), name="w", batch_size=8, lease=1, poll=0.05)
        assert await worker.step() == 3
        states = {int(r[0]): (str(r[1]), int(r[2])) for r in await storage.db.execute_fetchall(
            "SELECT message_id, state, attempts FROM posts")}
        assert states == {1: ("classified", 0), 2: ("new", 1), 3: ("classified", 0)}
        assert await worker.step() == 0  # still held under its lease: not retried at once
        await asyncio.sleep(2.1)
        assert await worker.step() == 1  # the lease ran out: tried again
        assert worker.stats.failed == 2
    finally:
        await storage.close()


# -- configuration ----------------------------------------------------------------------------------------


def test_workers_need_postgresql_and_a_valid_url(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[pipeline]\nclassify_in_bot = false\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"classify_in_bot = false needs \[storage\] url"):
        load_config(cfg)
    cfg.write_text('[storage]\nurl = "mysql://x/y"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a PostgreSQL URL"):
        load_config(cfg)
    cfg.write_text('[storage]\nurl = "postgresql://u@h/db"\n[pipeline]\nclassify_in_bot = false\nlease = "30s"\n',
                   encoding="utf-8")
    loaded = load_config(cfg, env={})
    assert loaded.storage.url == "postgresql://u@h/db" and loaded.pipeline.lease == timedelta(seconds=30)
    assert load_config(cfg, env={"APPEALWATCH_DATABASE_URL": "postgresql://other/db"}).storage.url == "postgresql://other/db"


def test_the_worker_command_explains_what_it_needs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bot", "worker", "--config", str(tmp_path / "none.toml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no such file" in done.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bot", "worker", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "needs [storage] url" in done.stdout


# -- moving an archive: SQLite → PostgreSQL -------------------------------------------------------------------


async def test_storage_migrate_copies_an_archive_once_and_postgresql_serves_it(tmp_path: Path, pg_url: str) -> None:
    src = Storage(tmp_path / "old.sqlite3")
    await src.open()
    try:
        posts = await src.store_posts([post(i, f"Звернення {i}: здавайся в полон, мама чекає" if i % 3 == 0 else
                                            f"Зведення {i}: тиша на фронті") for i in range(1, 31)])
        await src.store_post(post(1, "Звернення 1: здавайся в полон, виправлено"))  # an edit: two rows of history
        appeal = Classification(appeal=True, score=0.93, labels=("surrender",), label_scores={"surrender": 0.93},
                                addressee="military", reasons=("здавайся",), lang="uk", lang_confidence=0.99)
        vec = np.ones(8, dtype=np.float32) / np.sqrt(8)
        await src.save_classifications([(posts[0].post_id, appeal, vec)])
        await src.ensure_chat(77)
        await src.claim_alert(77, posts[0].post_id, None, status="sent")
    finally:
        await src.close()

    def migrate() -> str:
        done = subprocess.run([sys.executable, "-m", "bot", "storage", "migrate", "--from", f"sqlite:///{tmp_path}/old.sqlite3",
                               "--to", pg_url], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def counts(out: str) -> dict[str, tuple[int, ...]]:
        return {line.split()[0]: tuple(int(x.replace(",", "")) for x in line.split()[1:])
                for line in out.splitlines() if len(line.split()) == 4 and line.split()[1].replace(",", "").isdigit()}

    first = counts(migrate())
    assert first["posts"] == (30, 30, 0) and first["post_edits"] == (31, 31, 0) and first["alerts"] == (1, 1, 0), first
    second = counts(migrate())  # idempotent: a second run (or the end of an interrupted one) adds nothing
    assert second["posts"] == (30, 0, 30) and all(copied == 0 for _, copied, _ in second.values()), second

    from bot.storage.postgres import PostgresStorage

    dst = PostgresStorage(pg_url)
    await dst.open()
    try:
        assert await dst.count_posts() == 30
        moved = await dst.find_post("queue_chan", 1)
        assert moved is not None and moved.appeal is True and moved.labels == ("surrender",) and "виправлено" in moved.text
        assert len(await dst.post_edits(moved.id)) == 2
        assert await dst.was_alerted(77, moved.id)
        found, total = await dst.search(SearchQuery(words="полон"), limit=50)  # lemmas moved into the tsvector
        assert total == 11 and moved.id in {p.id for p in found}  # 10 appeals and the edited post 1
        emb = await dst.embedding_of(moved.id)
        assert emb is not None and np.allclose(emb, vec, atol=1e-3)
        new = await dst.store_post(post(99, "новий пост після переїзду"))  # sequences moved past the copied ids
        assert new.is_new and new.post_id > max(p.post_id for p in posts)
    finally:
        await dst.close()


# -- the scenario: bot + 2 workers on PostgreSQL, one worker SIGKILLed mid-batch ---------------------

CHATS = (6001, 6002)
CHANNEL = Channel(-1005234500777, "scale_test", "Scale Test")


def worker_config(tmp_path: Path, url: str, model_cache: Path) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(
        "[storage]\n"
        f'url = "{url}"\n'
        "[pipeline]\n"
        "classify_in_bot = false\n"
        "worker_batch = 3\n"
        'lease = "6s"\n'
        "poll = 0.5\n"
        "[model]\n"
        f'cache_dir = "{model_cache}"\n'
        "threads = 1\n",
        encoding="utf-8")
    return path


def start_worker(config: Path, name: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if k not in ("APPEALWATCH_CRASH_AT", "APPEALWATCH_CACHE")}
    environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", **env)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bot", "worker", "--config", str(config), "--name", name],
                                stdout=out, stderr=subprocess.STDOUT, env=environ)


@pytest.mark.slow
async def test_bot_and_two_workers_one_killed_mid_batch_alert_every_appeal_once(
        tmp_path: Path, pg_url: str, classifier: AppealClassifier, model_cache: Path) -> None:
    posts = injected_posts()[:24]
    config = worker_config(tmp_path, pg_url, model_cache)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers: list[subprocess.Popen[bytes]] = []
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, url=pg_url, classify_in_bot=False,
                                                 lease=timedelta(seconds=6)) as app:
        storage = storage_of(app)
        try:
            # w1 dies with its first batch classified and nothing written; w2 takes those posts when the lease ends
            workers.append(start_worker(config, "w1", logs[0], APPEALWATCH_CRASH_AT="worker_scored"))
            workers.append(start_worker(config, "w2", logs[1]))
            ready = time.monotonic() + 180
            while not all("classifying for" in p.read_text(errors="replace") for p in logs if p.exists()) or \
                    not all(p.exists() for p in logs):
                assert time.monotonic() < ready and all(w.poll() is None for w in workers), \
                    "\n".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())
                await asyncio.sleep(0.2)  # both models loaded: the two compete for every batch
            for chat in CHATS:
                api.send_user_message(chat, "/subscribe")
            CHANNEL.add_bot(api, by_user_id=CHATS[0])
            for mid, text in posts:
                CHANNEL.post(api, mid, text)

            deadline = time.monotonic() + 240
            while True:
                stored = await storage.count_posts()
                unfinished = await storage.unfinished_posts()
                if stored == len(posts) and not unfinished and workers[0].poll() is not None:
                    break
                assert time.monotonic() < deadline, (
                    f"{stored} stored, unfinished {unfinished}, w1 {workers[0].poll()}\n"
                    + "\n".join(p.read_text(errors="replace")[-3000:] for p in logs))
                assert workers[1].poll() is None, logs[1].read_text(errors="replace")[-3000:]
                await asyncio.sleep(0.2)
            await services_idle(app)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.terminate()
            for w in workers:
                w.wait(timeout=30)

        assert workers[0].returncode == -9, "w1 was to be SIGKILLed at its crash point"
        rows = list(await storage.db.execute_fetchall(
            "SELECT p.message_id, p.state, p.claimed_by, cl.appeal, cl.score FROM posts p "
            "LEFT JOIN classifications cl ON cl.post_id=p.id"))
        assert sorted(int(r[0]) for r in rows) == sorted(mid for mid, _ in posts)  # each post stored once
        assert {str(r[1]) for r in rows} == {"done"} and all(r[3] is not None for r in rows)  # classified, dispatched
        assert {str(r[2]) for r in rows} == {"w2"}  # w1 wrote nothing: w2 classified its batch after the lease
        assert "crash point worker_scored reached" in logs[0].read_text(errors="replace")
        assert await storage.queue_depth() == (0, 0)
        appeals = {int(r[0]) for r in rows if r[3] and float(r[4]) >= 0.6}
        assert len(appeals) >= 5, f"the model found only {len(appeals)} appeals"
        sent = Counter((c.chat_id, alert_link(c)) for c in api.sent_messages() if is_alert(c))
        for chat in CHATS:
            for mid in appeals:
                assert sent[(chat, CHANNEL.link(mid))] <= 1, f"chat {chat} got {mid} twice"
            statuses = {int(r[0]): str(r[1]) for r in await storage.db.execute_fetchall(
                "SELECT p.message_id, a.status FROM alerts a JOIN posts p ON p.id=a.post_id WHERE a.chat_id=?", (chat,))}
            assert {mid for mid in appeals if statuses.get(mid) in ("sent", "skipped")} == appeals, statuses
    log_text = logs[1].read_text(errors="replace")
    assert "posts classified" in log_text  # w2 stopped cleanly and reported


async def services_idle(app: object) -> None:
    from bot.app import services_of

    await services_of(app).pipeline.wait_idle(60)  # type: ignore[arg-type]


async def test_pg_notifications_reach_a_listener(pg_url: str) -> None:
    """LISTEN/NOTIFY through the storage API: what wakes workers and the bot without polling."""
    from bot.storage.postgres import PostgresStorage

    a, b = PostgresStorage(pg_url), PostgresStorage(pg_url)
    await a.open()
    await b.open()
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await b.listen("appealwatch_test", got.put_nowait)
        await a.notify("appealwatch_test", "1,2,3")
        assert await asyncio.wait_for(got.get(), 5) == "1,2,3"
        async with a.db.transaction():  # inside a transaction: delivered at commit, not before
            await a.notify("appealwatch_test", "4")
            await asyncio.sleep(0.2)
            assert got.empty()
        assert await asyncio.wait_for(got.get(), 5) == "4"
    finally:
        await a.close()
        await b.close()


# -- web-preview polling shared across processes --------------------------------------------------------------


async def test_each_web_channel_is_polled_by_exactly_one_process(make_storage: Callable[..., Storage], tme: Any) -> None:
    """Two processes' pollers (here: two sources with their own owners) share the watched channels by lease."""
    from bot.sources.webpreview import WebPreviewSource
    from tests.test_webpreview import MemorySink, render_page, settings

    names = [f"shared_{i}" for i in range(6)]
    for name in names:
        tme.channels[name] = lambda _r, n=name: web.Response(text=render_page(n, [(1, "пост")]), content_type="text/html")
    storage = make_storage("poll.sqlite3")
    await storage.open()
    for name in names:
        await storage.ensure_channel(name, source="web", watched=True)
    sinks = {"bot": MemorySink(), "w1": MemorySink()}
    fast = settings(tme, channels_refresh=0.2)
    sources = {owner: WebPreviewSource(sink, fast) for owner, sink in sinks.items()}

    def provider(owner: str) -> Callable[[], Awaitable[list[str]]]:
        return lambda: storage.lease_channels(owner, lease=3.0)  # leases count whole seconds

    tasks = [asyncio.create_task(src.run(provider(owner))) for owner, src in sources.items()]
    try:
        await asyncio.sleep(2.0)  # both registered, the first one has shed the other's share
        for sink in sinks.values():
            sink.fetches.clear()
        await asyncio.sleep(2.0)
        polled = {owner: {ch for ch, ok, _ in sink.fetches if ok} for owner, sink in sinks.items()}
        assert polled["bot"].isdisjoint(polled["w1"]), polled  # never the same channel twice
        assert polled["bot"] | polled["w1"] == set(names) and len(polled["bot"]) == len(polled["w1"]) == 3, polled
        tasks[1].cancel()  # w1 dies: its channels come back to the bot once its leases ran out
        await asyncio.gather(tasks[1], return_exceptions=True)
        await asyncio.sleep(4.5)
        sinks["bot"].fetches.clear()
        await asyncio.sleep(1.5)
        assert {ch for ch, ok, _ in sinks["bot"].fetches if ok} == set(names)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for src in sources.values():
            await src.close()
        await storage.close()


async def test_storage_migrate_refuses_a_database_holding_another_archive(tmp_path: Path, pg_url: str) -> None:
    from bot.storage.postgres import PostgresStorage

    for name in ("a", "b"):
        s = Storage(tmp_path / f"{name}.sqlite3")
        await s.open()
        await s.store_post(post(1, f"архив {name}"))
        await s.close()
    def migrate(source: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "storage", "migrate", "--to", pg_url, "--from", source],
                              capture_output=True, text=True, timeout=300)

    assert migrate(str(tmp_path / "a.sqlite3")).returncode == 0
    refused = migrate(str(tmp_path / "b.sqlite3"))
    assert refused.returncode == 2 and "already holds data" in refused.stdout, refused.stdout + refused.stderr
    dst = PostgresStorage(pg_url)
    await dst.open()
    try:
        only = await dst.find_post("queue_chan", 1)
        assert only is not None and only.text == "архив a"
    finally:
        await dst.close()


async def test_a_notification_and_the_sweep_never_both_take_a_post(make_storage: Callable[..., Storage]) -> None:
    """The bot takes each worker-classified post once, however many paths bring it (NOTIFY, resume, heal)."""
    from bot.pipeline import Pipeline

    storage = make_storage("take.sqlite3")
    await storage.open()
    dispatched: list[int] = []

    class Fanout:
        async def dispatch(self, post_ids: Sequence[int]) -> None:
            dispatched.extend(post_ids)

    try:
        ids = [r.post_id for r in await storage.store_posts([post(i, f"сдавайся {i}") for i in range(6)])]
        scored = CountingScorer().score([f"сдавайся {i}" for i in range(6)])
        await storage.save_classifications([(pid, s.classification, s.vector) for pid, s in zip(ids, scored, strict=True)])
        pipeline = Pipeline(storage, None, alerts=Fanout(), classify=False)
        pipeline.start()
        try:
            taken = await asyncio.gather(pipeline.take_classified(ids), pipeline.take_classified(ids[::-1]),
                                         pipeline.resume())
            await pipeline.wait_idle(10)
        finally:
            await pipeline.stop()
        assert sum(taken) == 6 and sorted(dispatched) == sorted(ids)
        assert await storage.posts_in_state(ids, "done") == ids
    finally:
        await storage.close()
