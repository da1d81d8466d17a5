"""One alert per story (updated with "also in"), stories shown once in search, scheduled digests,
and `appealwatch import` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.local_botapi import LocalBotAPI
from models.classifier import AppealClassifier
from tests.botkit import Channel, alerts_to, command, post_and_settle, rows, running_bot, subscribe

APPEAL = ("Российские военные! Сдавайтесь в плен — вам гарантированы жизнь, еда и медицинская помощь. "
          "Звоните на горячую линию «Хочу жить» или пишите в чат-бот, частота 149.200.")
USER = 5101


async def test_a_reposted_appeal_is_one_alert_updated_with_where_else_it_appeared(
    tmp_path: Path, classifier: AppealClassifier
) -> None:
    first = Channel(-1001000000071, "first_source", "First")
    second = Channel(-1001000000072, "second_source", "Second")
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await subscribe(api, USER)
        first.add_bot(api, USER)
        second.add_bot(api, USER)
        original = await post_and_settle(api, app, first, 10, APPEAL)
        assert original.appeal and original.story_id is not None
        assert len(alerts_to(api, USER)) == 1
        repost = await post_and_settle(api, app, second, 20, APPEAL + "\n\n👉 Подписывайтесь: @second_source")
        assert repost.story_id == original.story_id  # same story despite the signature
        assert len(alerts_to(api, USER)) == 1  # no second alert for the repost...
        edits = [c for c in api.calls_of("editMessageText") if c.ok and c.chat_id == USER]
        assert edits, "the first alert should be updated"
        shown = edits[-1].shown_text or ""
        assert "also in @second_source (1 repost)" in shown
        # /search and digests show the story once, with its repost count, under its first source
        reply = await command(api, USER, "/search сдавайтесь")
        text = reply.shown_text or ""
        assert text.count("@first_source") == 1 and "@second_source" not in text
        assert "🔁 1 repost" in text
        statuses = await rows(app, "SELECT status FROM alerts WHERE chat_id=? ORDER BY post_id", (USER,))
        assert [r[0] for r in statuses] == ["sent", "skipped"]


async def test_settings_schedule_a_daily_digest_in_the_chats_time_zone(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await command(api, USER, "/settings timezone America/New_York")
        reply = await command(api, USER, "/settings digest daily 09:30")
        assert "daily at 09:30" in (reply.shown_text or "")
        assert app.job_queue is not None
        jobs = app.job_queue.get_jobs_by_name(f"digest:{USER}")
        assert len(jobs) == 1
        nxt = jobs[0].next_t
        assert nxt is not None
        local = nxt.astimezone(ZoneInfo("America/New_York"))
        assert (local.hour, local.minute) == (9, 30)
        await command(api, USER, "/settings digest off")
        assert not [j for j in app.job_queue.get_jobs_by_name(f"digest:{USER}") if j.enabled and not j.removed]


def test_import_command_is_idempotent_and_summarises(tmp_path: Path, model_cache: Path) -> None:
    export = tmp_path / "result.json"
    messages = [
        {"id": 1, "type": "message", "date_unixtime": "1767261600", "text": APPEAL},
        {"id": 2, "type": "message", "date_unixtime": "1767261660",
         "text": ["Погода в Харькове: ", {"type": "bold", "text": "+4"}, ", мокрый снег."]},
        {"id": 3, "type": "service", "date_unixtime": "1767261720", "action": "pin_message"},
        {"id": 4, "type": "message", "date_unixtime": "1767261780", "text": "", "photo": "photos/1.jpg"},
    ]
    export.write_text(json.dumps({"name": "Import Test", "type": "public_channel", "id": 42, "messages": messages},
                                 ensure_ascii=False))
    config = tmp_path / "config.toml"
    db = tmp_path / "import.sqlite3"
    config.write_text(f'[storage]\npath = "{db}"\n')
    env = {**os.environ, "APPEALWATCH_CACHE": str(model_cache)}
    cmd = [sys.executable, "-m", "bot", "import", str(export), "--channel", "@import_test", "--config", str(config)]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "posts: 3, new: 3" in first.stdout and "1 service" in first.stdout
    assert "appeals in this channel: 1" in first.stdout and "surrender" in first.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "new: 0" in again.stdout
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT message_id, text, state FROM posts ORDER BY message_id").fetchall()
    assert [(r[0], r[2]) for r in rows] == [(1, "done"), (2, "done"), (4, "skipped")]
    assert rows[1][1] == "Погода в Харькове: +4, мокрый снег."
    assert datetime.fromtimestamp(1767261600).year == 2026
