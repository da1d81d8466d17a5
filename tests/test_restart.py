"""A crash and a restart of the real bot process: nothing stored twice, no alert lost, no duplicate
except a message in flight at the crash.

LocalBotAPI runs in the test process; the bot runs as ``python -m bot`` in a child process with a
config file, a SQLite file in tmp_path and the real model. The child is SIGKILLed in the middle of
its work (alerts partly sent), started again, and the database and the Bot API calls are checked.
``tests/test_delivery.py`` kills it at exact steps of a fan-out (``bot.crashpoints``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.local_botapi import Call, LocalBotAPI
from tests.botkit import APPEALS, BOT_TOKEN, NOT_APPEALS, SHELLING_REPORTS, Channel, is_alert

CHATS = (5001, 5002, 5003)
CHANNEL = Channel(-1005234500001, "restart_test", "Restart Test")
STARTUP_TIMEOUT = 120.0
MIN_SCORE = 0.6  # the default [alerts] min_score


def injected_posts() -> list[tuple[int, str]]:
    """30 posts: 9 appeals among 21 non-appeals, each text distinct."""
    others = [text for _, text in NOT_APPEALS] + SHELLING_REPORTS
    others += [f"Ранкове зведення № {i}: у Дніпрі відновили рух трамваїв, на дорогах ожеледиця, "
               f"температура повітря {i - 12} градусів." for i in range(30 - len(APPEALS) - len(others))]
    texts: list[str] = []
    appeals = [text for _, _, text in APPEALS]
    while appeals or others:
        if appeals:
            texts.append(appeals.pop(0))
        texts.extend(others[:2])
        del others[:2]
    assert len(texts) == 30 and len(set(texts)) == 30
    return [(1001 + i, text) for i, text in enumerate(texts)]


def write_config(tmp_path: Path, api: LocalBotAPI, model_cache: Path) -> tuple[Path, Path]:
    db = tmp_path / "bot.sqlite3"
    config = tmp_path / "config.toml"
    config.write_text(
        "[telegram]\n"
        f'token = "{BOT_TOKEN}"\n'
        f'api_base_url = "{api.base_url}"\n'
        "max_messages_per_second = 0\n"
        "[storage]\n"
        f'path = "{db}"\n'
        "[alerts]\n"
        f"min_score = {MIN_SCORE}\n"
        "[model]\n"
        f'cache_dir = "{model_cache}"\n'
        "threads = 2\n",
        encoding="utf-8",
    )
    return config, db


def start_bot_process(config: Path, log: Path, cwd: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "APPEALWATCH_CACHE",
                                                             "APPEALWATCH_CONFIG", "APPEALWATCH_CRASH_AT")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", **extra_env)
    with log.open("ab") as out:
        # The README's form is `appealwatch run --config FILE`; see test_cli_run_accepts_config_after_the_command.
        return subprocess.Popen([sys.executable, "-m", "bot", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def db_progress(db: Path) -> tuple[int, int]:
    """(posts stored, posts not yet fully processed), read from the bot's SQLite file."""
    if not db.exists():
        return 0, 0
    con = sqlite3.connect(db, timeout=5)
    try:
        stored = con.execute("SELECT COUNT(*) FROM posts").fetchone()[0]
        unfinished = con.execute("SELECT COUNT(*) FROM posts WHERE state IN ('new','classified')").fetchone()[0]
        return int(stored), int(unfinished)
    except sqlite3.OperationalError:  # not migrated yet
        return 0, 0
    finally:
        con.close()


def alert_statuses(db: Path) -> dict[tuple[int, int], str]:
    """(chat, post) → alert status, read from the bot's SQLite file (empty before the schema exists)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=5)
    try:
        return {(int(c), int(p)): str(st) for c, p, st in con.execute("SELECT chat_id, post_id, status FROM alerts")}
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def log_tail(log: Path, n: int = 40) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    return "\n".join(lines[-n:])


def kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the bot exited (rc={proc.returncode}) while waiting until {what}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}\n{log_tail(log)}")
        await asyncio.sleep(0.1)


def alert_link(call: Call) -> str | None:
    text = call.text or ""
    marker = f'href="https://t.me/{CHANNEL.username}/'
    if marker not in text:
        return None
    start = text.index(marker) + len('href="')
    return text[start : text.index('"', start)]


async def test_sigkill_mid_work_then_restart_stores_once_and_alerts_every_chat(tmp_path: Path, model_cache: Path) -> None:
    posts = injected_posts()
    log = tmp_path / "bot.log"
    proc: subprocess.Popen[bytes] | None = None
    async with LocalBotAPI() as api:
        config, db = write_config(tmp_path, api, model_cache)
        for chat in CHATS:  # queued in getUpdates before the bot starts
            api.send_user_message(chat, "/subscribe")
        api.set_latency("sendMessage", 0.3)  # alerts go out slowly enough to be cut off by the crash
        try:
            proc = start_bot_process(config, log, tmp_path)
            await wait_until(lambda: subscribed(api) >= set(CHATS), STARTUP_TIMEOUT,
                             "the queued /subscribe commands were answered", proc, log)
            CHANNEL.add_bot(api, by_user_id=CHATS[0])
            for mid, text in posts:
                CHANNEL.post(api, mid, text)

            await wait_until(lambda: sum(1 for c in api.calls if is_alert(c)) >= 3, STARTUP_TIMEOUT,
                             "the first alerts were sent", proc, log)
            kill(proc)
            await asyncio.sleep(0.6)  # requests the dead process had sent are answered (latency 0.3 s): in flight
            stored, unfinished = db_progress(db)
            at_kill = alert_statuses(db)
            calls_at_kill = len(api.calls)
            alerts_before = sum(1 for c in api.calls if is_alert(c))
            assert stored < len(posts) or unfinished > 0, "the bot finished everything before the crash"

            proc = start_bot_process(config, log, tmp_path)
            await wait_until(lambda: db_progress(db) == (len(posts), 0), STARTUP_TIMEOUT,
                             f"all {len(posts)} posts are stored and processed (now {db_progress(db)})", proc, log)
            await wait_until(lambda: "pending" not in alert_statuses(db).values(), STARTUP_TIMEOUT,
                             "every pending alert claim was sent again", proc, log)
        finally:
            kill(proc)

    assert alerts_before >= 3
    con = sqlite3.connect(db)
    try:
        per_post = con.execute(
            "SELECT p.channel_id, p.message_id, COUNT(*) FROM posts p GROUP BY p.channel_id, p.message_id").fetchall()
        assert len(per_post) == len(posts) and all(n == 1 for _, _, n in per_post)
        [(channel_key,)] = con.execute("SELECT DISTINCT c.key FROM posts p JOIN channels c ON c.id=p.channel_id")
        assert channel_key == CHANNEL.username
        assert {mid for _, mid, _ in per_post} == {mid for mid, _ in posts}
        texts = dict(con.execute("SELECT message_id, text FROM posts"))
        assert texts == dict(posts)
        appeals = {mid: pid for pid, mid in con.execute(
            "SELECT p.id, p.message_id FROM posts p JOIN classifications cl ON cl.post_id=p.id "
            "WHERE cl.appeal=1 AND cl.score>=?", (MIN_SCORE,))}
        alert_rows = con.execute("SELECT chat_id, post_id, status FROM alerts").fetchall()
    finally:
        con.close()
    assert len(appeals) >= 5, f"the model found only {len(appeals)} appeals among the posts"

    sent = Counter((c.chat_id, alert_link(c)) for c in api.sent_messages() if is_alert(c))
    sent_before_kill = Counter((c.chat_id, alert_link(c)) for c in api.calls[:calls_at_kill] if is_alert(c))
    status = {(chat, pid): st for chat, pid, st in alert_rows}
    by_post_id = {pid: mid for mid, pid in appeals.items()}
    for chat in CHATS:
        for mid, pid in appeals.items():
            # every appeal reached every chat: sent, or grouped into a story the chat already has
            assert status.get((chat, pid)) in ("sent", "skipped"), f"appeal {mid} to chat {chat}: {status.get((chat, pid))}"
    for (chat, pid), st in status.items():
        assert st in ("sent", "skipped"), f"alert {chat}/{pid}: {st}"
        if st == "sent":
            assert pid in by_post_id, f"an alert for post {pid}, which is not a stored appeal"
            assert sent[(chat, CHANNEL.link(by_post_id[pid]))] >= 1, f"alert row 'sent' but no message: {chat}/{pid}"
    # A duplicate is only possible for a message in flight at the crash: delivered before the kill,
    # its claim still 'pending' then (sent, not yet recorded) — and then exactly one more copy.
    for (to, link), n in sent.items():
        if n == 1:
            continue
        assert link is not None and n == 2, f"chat {to} got {link} {n} times"
        assert isinstance(to, int), to
        pid = appeals[int(link.rsplit("/", 1)[1])]
        assert sent_before_kill[(to, link)] == 1 and at_kill.get((to, pid)) == "pending", \
            f"a duplicate of {link} in chat {to} that was not in flight at the crash ({at_kill.get((to, pid))})"


def subscribed(api: LocalBotAPI) -> set[int | str | None]:
    return {c.chat_id for c in api.sent_messages() if "Subscribed" in (c.shown_text or "")}


def test_cli_run_accepts_config_after_the_command(tmp_path: Path) -> None:
    """README and Makefile: `appealwatch run --config FILE`."""
    missing = tmp_path / "missing.toml"
    result = subprocess.run([sys.executable, "-m", "bot", "run", "--config", str(missing)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "unrecognized arguments" not in result.stderr, result.stderr
    assert result.returncode == 2 and "no such file" in result.stderr, result.stderr
