"""History never alerts: posts older than ``[alerts] max_age`` by their own date, and imports, are
stored, classified and searchable but alert nobody; after downtime the admins get one summary.

Through the local Bot API with the real model, on real SQLite files.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import recovery
from bot.config import ConfigError, load_config
from bot.domain import Filters
from bot.local_botapi import LocalBotAPI
from bot.pipeline import Pipeline
from bot.shell import jobs
from bot.sources.desktop_export import import_export
from bot.storage import Storage
from models.classifier import AppealClassifier
from tests.botkit import (
    APPEALS,
    NOT_APPEALS,
    Channel,
    alerts_to,
    command,
    eventually,
    post_and_settle,
    rows,
    running_bot,
    settle,
    storage_of,
    subscribe,
)

USER, OTHER, ADMIN = 8101, 8102, 8103
CHANNEL = Channel(-1008234500001, "history_test", "History")
FORWARD_SOURCE = Channel(-1008234500002, "history_forwards", "History Forwards")
DAY = 86_400


# -- the setting ----------------------------------------------------------------------------------


def test_max_age_defaults_to_six_hours_and_is_validated(tmp_path: Path) -> None:
    assert load_config(None, env={}).alerts.max_age == timedelta(hours=6)
    path = tmp_path / "config.toml"
    for text, expected in [("90m", timedelta(minutes=90)), ("2d", timedelta(days=2)), ("1.5h", timedelta(hours=1.5))]:
        path.write_text(f'[alerts]\nmax_age = "{text}"\n', encoding="utf-8")
        assert load_config(path, env={}).alerts.max_age == expected
    for bad, message in [('"6 hours"', "expected a duration"), ('"30s"', "must be between"), ("6", "expected str"),
                         ('"400d"', "must be between")]:
        path.write_text(f"[alerts]\nmax_age = {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"\[alerts\] max_age: .*{message}"):
            load_config(path, env={})


def test_transient_retries_are_validated(tmp_path: Path) -> None:
    cfg = load_config(None, env={}).telegram
    assert (cfg.transient_retries, cfg.retry_delay) == (5, 0.5)
    path = tmp_path / "config.toml"
    path.write_text("[telegram]\ntransient_retries = 50\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[telegram\] transient_retries: must be between"):
        load_config(path, env={})


# -- old posts, imports, forwards ------------------------------------------------------------------


async def test_a_three_day_old_channel_post_is_stored_and_searchable_but_alerts_nobody(
    tmp_path: Path, classifier: AppealClassifier
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await subscribe(api, USER)
        CHANNEL.add_bot(api, by_user_id=USER)
        old = await post_and_settle(api, app, CHANNEL, 31, APPEALS[0][2], date=int(time.time()) - 3 * DAY)
        assert old.appeal is True and old.date < datetime.now(UTC) - timedelta(days=2)
        assert alerts_to(api, USER) == []
        found = await command(api, USER, "/search сдавайтесь")
        assert CHANNEL.link(31) in (found.text or "")
        fresh = await post_and_settle(api, app, CHANNEL, 32, APPEALS[1][2])  # the same bot alerts what is new
        assert [CHANNEL.link(32) in (c.text or "") for c in alerts_to(api, USER)] == [True]
        [(status,)] = await rows(app, "SELECT status FROM alerts WHERE post_id=?", (fresh.id,))
        assert status == "sent"
        assert await rows(app, "SELECT * FROM alerts WHERE post_id=?", (old.id,)) == []


async def test_an_interrupted_import_then_a_start_of_the_bot_alerts_nobody(
    tmp_path: Path, classifier: AppealClassifier
) -> None:
    """``import`` stores fast and classifies slowly: a crash leaves its posts 'new', and the next
    start classifies them — without alerting, even the ones dated minutes ago."""
    db = tmp_path / "appealwatch.sqlite3"
    export = tmp_path / "result.json"
    now = int(time.time())
    texts = [APPEALS[0][2], NOT_APPEALS[0][1], APPEALS[1][2], APPEALS[3][2]]
    dates = [now - 30 * DAY, now - 2 * DAY, now - 3600, now - 120]
    messages = [{"id": i + 1, "type": "message", "date_unixtime": str(d), "text": t}
                for i, (t, d) in enumerate(zip(texts, dates, strict=True))]
    export.write_text(json.dumps({"name": "Imported", "type": "public_channel", "id": 77, "messages": messages},
                                 ensure_ascii=False), encoding="utf-8")
    storage = Storage(db)
    await storage.open()
    try:
        await storage.ensure_chat(USER)
        await storage.subscribe(USER, Filters())
        unstarted = Pipeline(storage, classifier, alerts=None)  # its worker never runs: the import is cut off
        summary = await import_export(export, unstarted, channel="imported_history", progress=False)
        assert summary.new == 4
        assert len(await storage.unfinished_posts()) == 4
    finally:
        await storage.close()

    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, path=db) as app:
        await settle(app, posts=4, timeout=120)
        appeals = await rows(app, "SELECT COUNT(*) FROM classifications WHERE appeal=1")
        assert appeals[0][0] >= 3
        assert alerts_to(api, USER) == [] and await rows(app, "SELECT * FROM alerts") == []
        assert services_history(app) >= 3
        found = await command(api, USER, "/search сдавайтесь")
        assert "t.me/imported_history/1" in (found.text or "")


def services_history(app: object) -> int:
    from bot.app import services_of

    return services_of(app).alerts.stats.history  # type: ignore[arg-type]


async def test_a_forwarded_old_post_gets_its_answer_and_alerts_nobody_else(
    tmp_path: Path, classifier: AppealClassifier
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await subscribe(api, USER)
        await subscribe(api, OTHER)
        since = api.mark()
        api.forward_from_channel(USER, FORWARD_SOURCE.id, FORWARD_SOURCE.username, FORWARD_SOURCE.title, 501,
                                 APPEALS[6][2], date=int(time.time()) - 3 * DAY)
        answer = await api.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == USER, 60, since=since)
        assert (answer.shown_text or "").startswith("🚨 appeal:"), answer.describe()
        await settle(app)
        assert alerts_to(api, OTHER) == [] and alerts_to(api, USER) == []
        post = await storage_of(app).find_post(FORWARD_SOURCE.username, 501)
        assert post is not None and post.appeal is True


# -- after downtime: one summary ----------------------------------------------------------------------


async def test_after_downtime_the_admins_get_one_summary_instead_of_a_flood(
    tmp_path: Path, classifier: AppealClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "MAINTENANCE_EVERY", 0.3)
    monkeypatch.setattr(jobs, "MAINTENANCE_FIRST", 0.1)
    monkeypatch.setattr(recovery, "SETTLE_SECONDS", 1.0)
    db = tmp_path / "appealwatch.sqlite3"
    storage = Storage(db)
    await storage.open()
    try:  # the bot ran until three days ago; its subscribers and channel are known
        await recovery.beat(storage, datetime.now(UTC) - timedelta(days=3))
        for chat in (USER, ADMIN):
            await storage.ensure_chat(chat)
            await storage.subscribe(chat, Filters())
        await storage.ensure_channel(CHANNEL.username, chat_id=CHANNEL.id, title=CHANNEL.title, source="bot",
                                     watched=True, approval="approved")
    finally:
        await storage.close()

    now = int(time.time())
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, path=db, admins=(ADMIN,)) as app:
        since = api.mark()
        # what Telegram kept for the bot while it was down: two days old, then one from a minute ago
        for mid, (_, _, text) in zip((41, 42, 43), (APPEALS[0], APPEALS[2], APPEALS[3]), strict=True):
            CHANNEL.post(api, mid, text, date=now - 2 * DAY + mid)
        CHANNEL.post(api, 44, APPEALS[1][2], date=now - 60)
        await settle(app, posts=4, timeout=120)
        old_appeals = await rows(app, "SELECT COUNT(*) FROM posts p JOIN classifications cl ON cl.post_id=p.id "
                                      "WHERE cl.appeal=1 AND p.message_id IN (41, 42, 43)")
        n = int(old_appeals[0][0])
        assert n >= 2

        def summaries() -> list[str]:
            return [c.shown_text or "" for c in api.calls[since:]
                    if c.method == "sendMessage" and c.chat_id == ADMIN and "While I was down" in (c.shown_text or "")]

        await eventually(lambda: len(summaries()) == 1, 20, "no downtime summary")
        [summary] = summaries()
        assert f"{n} appeals arrived" in summary and re.search(r"/digest \d+[hd]", summary)
        for chat in (USER, ADMIN):  # the fresh appeal alerts; the history does not
            assert [CHANNEL.link(44) in (c.text or "") for c in alerts_to(api, chat, since)] == [True]
        # later history (a backfill, say) is not reported again
        await post_and_settle(api, app, CHANNEL, 45, APPEALS[4][2], date=now - DAY)
        await asyncio.sleep(2.0)  # several maintenance runs past the settle time
        assert len(summaries()) == 1
        assert not [c for c in alerts_to(api, USER, since) if CHANNEL.link(45) in (c.text or "")]
