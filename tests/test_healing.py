"""Work that heals itself: failed classification batches are retried with backoff, a post that keeps
failing ends in state 'error' (shown in /status, fixed by ``appealwatch reprocess``), and a failure
after a post was stored never loses it.

Fake classifiers (fast, scripted failures) over real SQLite files; ``reprocess`` runs as a real
subprocess with the real model, and the bot then fans the fixed post out over the local Bot API.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from bot.alerts import AlertStats
from bot.app import services_of
from bot.domain import Filters, IncomingPost
from bot.health import delivery_status
from bot.local_botapi import LocalBotAPI
from bot.pipeline import HealingPolicy, Pipeline
from bot.storage import Storage
from models.classifier import AppealClassifier
from models.taxonomy import Classification
from tests.botkit import APPEALS, Channel, alerts_for_link, eventually, rows, running_bot, subscribe

FAST = HealingPolicy(attempts=3, base=0.01, cap=0.02, stall=timedelta(0))


@dataclass
class Scored:
    classification: Classification
    vector: np.ndarray | None


def scored(text: str) -> Scored:
    appeal = "сдавайтесь" in text.lower()
    c = Classification(appeal=appeal, score=0.9 if appeal else 0.1, labels=("surrender",) if appeal else (),
                       label_scores={"surrender": 0.9 if appeal else 0.1}, addressee="ru_military" if appeal else None,
                       reasons=("сдавайтесь",) if appeal else (), lang="ru", lang_confidence=0.99)
    vec = np.zeros(8, dtype=np.float32)
    vec[len(text) % 8] = 1.0
    return Scored(c, vec)


class FlakyScorer:
    """Fails its first ``failures`` calls, then works; or fails every batch holding ``poison``."""

    def __init__(self, failures: int = 0, poison: str | None = None) -> None:
        self.failures = failures
        self.poison = poison
        self.calls: list[int] = []

    def score(self, texts: Sequence[str]) -> list[Scored]:
        self.calls.append(len(texts))
        if len(self.calls) <= self.failures:
            raise RuntimeError("CUDA out of memory (pretend)")
        if self.poison is not None and any(self.poison in t for t in texts):
            raise ValueError("tokenizer choked on the post")
        return [scored(t) for t in texts]


@pytest.fixture
async def storage(make_storage: Callable[..., Storage]) -> AsyncIterator[Storage]:
    s = make_storage("healing.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def post(mid: int, text: str, channel: str = "heal_chan") -> IncomingPost:
    return IncomingPost(channel=channel, message_id=mid, text=text, date=datetime.now(UTC), source="bot")


async def states(s: Storage) -> dict[int, tuple[str, int, str | None]]:
    return {int(r[0]): (str(r[1]), int(r[2]), r[3]) for r in
            await s.db.execute_fetchall("SELECT message_id, state, attempts, error FROM posts")}


async def test_a_batch_that_fails_twice_is_retried_with_backoff_and_then_classified(storage: Storage) -> None:
    scorer = FlakyScorer(failures=2)
    pipeline = Pipeline(storage, scorer, healing=FAST)
    pipeline.start()
    try:
        await pipeline.ingest([post(1, "Сдавайтесь, солдаты")])
        await pipeline.wait_idle(10)
    finally:
        await pipeline.stop()
    assert scorer.calls == [1, 1, 1]
    assert await states(storage) == {1: ("done", 0, None)}  # the failures are cleared once it worked
    assert (pipeline.stats.retries, pipeline.stats.errors, pipeline.stats.classified) == (2, 0, 1)


async def test_a_post_that_always_fails_ends_in_error_and_never_takes_its_batch_down(storage: Storage) -> None:
    scorer = FlakyScorer(poison="POISON")
    pipeline = Pipeline(storage, scorer, healing=FAST, linger=0.2)
    pipeline.start()
    try:
        await pipeline.ingest([post(1, "Сдавайтесь, солдаты"), post(2, "POISON пост"), post(3, "Погода в Харькове")])
        await pipeline.wait_idle(10)
    finally:
        await pipeline.stop()
    got = await states(storage)
    assert got[1][0] == got[3][0] == "done"
    state, attempts, error = got[2]
    assert (state, attempts) == ("error", FAST.attempts) and error == "ValueError: tokenizer choked on the post"
    assert pipeline.stats.errors == 1 and pipeline.stats.retries == FAST.attempts - 1
    assert await storage.unfinished_posts() == []  # 'error' is not retried at each start
    status = await delivery_status(storage, AlertStats(), pipeline.stats)
    assert "1 post could not be classified" in status and "appealwatch reprocess" in status
    assert "@heal_chan/2 · 3× · ValueError: tokenizer choked on the post" in status


async def test_an_error_after_storing_leaves_the_post_new_and_the_healing_sweep_finishes_it(storage: Storage) -> None:
    pipeline = Pipeline(storage, FlakyScorer(), healing=FAST)
    pipeline.start()

    async def broken(*_: object) -> None:
        raise RuntimeError("the handler died after storing")

    real = pipeline._queue_stored
    pipeline._queue_stored = broken  # type: ignore[method-assign,assignment]
    try:
        assert await pipeline.ingest([post(1, "Сдавайтесь, солдаты")]) == 1  # no exception reaches the handler
        assert await states(storage) == {1: ("new", 0, None)}
        pipeline._queue_stored = real  # type: ignore[method-assign]
        assert await pipeline.heal() == 1
        await pipeline.wait_idle(10)
        assert await pipeline.heal() == 0
    finally:
        await pipeline.stop()
    assert await states(storage) == {1: ("done", 0, None)}


class FailingOnce:
    """An AlertFanout whose first dispatch raises."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def dispatch(self, post_ids: Sequence[int]) -> None:
        self.calls.append(list(post_ids))
        if len(self.calls) == 1:
            raise ConnectionError("database went away")


async def test_a_fan_out_that_raised_is_dispatched_again_by_the_healing_sweep(storage: Storage) -> None:
    fanout = FailingOnce()
    pipeline = Pipeline(storage, FlakyScorer(), alerts=fanout, healing=FAST)
    pipeline.start()
    try:
        await pipeline.ingest([post(1, "Сдавайтесь, солдаты")])
        await pipeline.wait_idle(10)
        assert (await states(storage))[1][0] == "classified"
        assert await pipeline.heal() == 1
        await pipeline.wait_idle(10)
    finally:
        await pipeline.stop()
    assert len(fanout.calls) == 2 and (await states(storage))[1][0] == "done"


# -- end to end -------------------------------------------------------------------------------------

CHANNEL = Channel(-1009234500001, "healing_test", "Healing")
USER = 9101


async def test_a_channel_post_whose_handler_fails_after_storing_is_still_classified_and_alerted(
    tmp_path: Path, classifier: AppealClassifier
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await subscribe(api, USER)
        CHANNEL.add_bot(api, by_user_id=USER)
        pipeline = services_of(app).pipeline
        pipeline.healing = FAST
        real = pipeline._queue_stored

        async def broken(*_: object) -> None:
            raise RuntimeError("the handler died after storing")

        pipeline._queue_stored = broken  # type: ignore[method-assign,assignment]
        CHANNEL.post(api, 61, APPEALS[0][2])
        await eventually(lambda: _state_is(app, 61, "new"), 20, "the post was not stored")
        pipeline._queue_stored = real  # type: ignore[method-assign]
        await pipeline.heal()  # what the maintenance job does every 30 s
        await eventually(lambda: len(alerts_for_link(api, USER, CHANNEL.link(61))) == 1, 60, "no alert")


async def _state_is(app: object, mid: int, state: str) -> bool:
    found = await rows(app, "SELECT state FROM posts WHERE message_id=?", (mid,))  # type: ignore[arg-type]
    return bool(found) and found[0][0] == state


async def test_appealwatch_reprocess_fixes_a_post_in_error_and_the_bot_alerts_it(
    tmp_path: Path, model_cache: Path, classifier: AppealClassifier
) -> None:
    db = tmp_path / "appealwatch.sqlite3"
    storage = Storage(db)
    await storage.open()
    try:
        await storage.ensure_chat(USER)
        await storage.subscribe(USER, Filters())
        broken = Pipeline(storage, FlakyScorer(failures=100), healing=FAST)
        broken.start()
        await broken.ingest([post(71, APPEALS[0][2], channel=CHANNEL.username)])
        await broken.wait_idle(10)
        await broken.stop()
        [failed] = await storage.failed_posts()
        assert failed.message_id == 71 and "CUDA out of memory" in failed.error
    finally:
        await storage.close()

    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\npath = "{db}"\n[model]\nthreads = 2\n', encoding="utf-8")
    env = {**os.environ, "APPEALWATCH_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "bot", "reprocess", "--config", str(config)]

    def reprocess() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)

    result = await asyncio.to_thread(reprocess)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "reprocessed 1 posts: 1 classified, 0 still failing" in result.stdout
    again = await asyncio.to_thread(reprocess)
    assert again.returncode == 0 and "no posts in state 'error'" in again.stdout

    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, path=db) as app:
        # reprocess left it 'classified': the bot fans it out under the usual rules
        await eventually(lambda: len(alerts_for_link(api, USER, CHANNEL.link(71))) == 1, 60, "no alert")
        [(state, attempts, error)] = await rows(app, "SELECT state, attempts, error FROM posts")
        assert (attempts, error) == (0, None)
        await eventually(lambda: _state_is(app, 71, "done"), 20)
        assert state in ("classified", "done")
