"""At-least-once alerts: per-recipient claims with leases, retries of transient errors, the sweep,
deadlines, story suppression that only counts alerts that arrived, one lock for every write.

Unit tests run ``AlertDispatcher`` over a real SQLite file with a scripted sender; end-to-end tests
run the real bot against the local Bot API with faults injected on ``sendMessage`` (502s, timeouts),
and kill a real bot process at each step of a fan-out to 30 chats (``bot.crashpoints``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TimedOut

from bot.alerts import LATENCY_SAMPLES, AlertDispatcher, AlertStats, RetryPolicy, SendOutcome
from bot.app import services_of
from bot.domain import Filters, IncomingPost, StoredPost
from bot.local_botapi import Call, LocalBotAPI
from bot.messages import Rendered
from bot.shell.adapter import send_outcome
from bot.storage import Storage
from models.classifier import AppealClassifier
from models.taxonomy import Classification
from tests.botkit import APPEALS, Channel, alerts_for_link, command, eventually, running_bot, storage_of
from tests.test_restart import STARTUP_TIMEOUT, alert_statuses, kill, log_tail, start_bot_process, wait_until, write_config

APPEAL = "Российские военные! Сдавайтесь в плен — вам гарантированы жизнь, еда и медицинская помощь."
FAST = RetryPolicy(retries=3, base=0.01, cap=0.05)


class ScriptedSender:
    """An AlertSender whose answers per chat are scripted (then 'sent'); records every attempt."""

    def __init__(self, script: dict[int, list[SendOutcome]] | None = None) -> None:
        self.script = {chat: deque(outcomes) for chat, outcomes in (script or {}).items()}
        self.attempts: list[tuple[int, Rendered]] = []
        self.delivered: Counter[int] = Counter()
        self._next_id = 900

    async def send(self, chat_id: int, message: Rendered) -> SendOutcome:
        self.attempts.append((chat_id, message))
        queue = self.script.get(chat_id)
        if queue:
            return queue.popleft()
        self.delivered[chat_id] += 1
        self._next_id += 1
        return SendOutcome("sent", message_id=self._next_id)

    async def edit(self, chat_id: int, message_id: int, message: Rendered) -> None:
        return None

    def tries(self, chat_id: int) -> int:
        return sum(1 for chat, _ in self.attempts if chat == chat_id)


RETRY = SendOutcome("retry", error="NetworkError: Bad Gateway")


@pytest.fixture
async def storage(make_storage: Callable[..., Storage]) -> AsyncIterator[Storage]:
    s = make_storage("delivery.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def dispatcher(storage: Storage, sender: ScriptedSender, **kw: object) -> AlertDispatcher:
    options: dict[str, object] = {"retry": FAST, "default_tz": "UTC"}
    options.update(kw)
    return AlertDispatcher(storage, sender, min_score=0.6, story_window=timedelta(hours=48), **options)  # type: ignore[arg-type]


async def appeal(s: Storage, mid: int = 1, *, channel: str = "chan_one", age: timedelta = timedelta(minutes=1),
                 source: str = "bot", story: int | str | None = None, text: str = APPEAL) -> int:
    post = IncomingPost(channel=channel, message_id=mid, text=text, date=datetime.now(UTC) - age,
                        source=source)  # type: ignore[arg-type]
    pid = (await s.store_post(post)).post_id
    c = Classification(appeal=True, score=0.9, labels=("surrender",), label_scores={"surrender": 0.9},
                       addressee="ru_military", reasons=("сдавайтесь",), lang="ru", lang_confidence=0.99)
    await s.save_classifications([(pid, c, None)])
    if story == "new":
        await s.assign_story(pid, None)
    elif isinstance(story, int):
        await s.assign_story(pid, story)
    return pid


async def subscribers(s: Storage, *chat_ids: int) -> None:
    for chat in chat_ids:
        await s.ensure_chat(chat)
        await s.subscribe(chat, Filters())


async def status_of(s: Storage, chat: int, pid: int) -> str | None:
    return dict(await s.alerts_for_chat(chat)).get(pid)


# -- retries and the sweep ------------------------------------------------------------------------


async def test_transient_errors_are_retried_until_the_alert_is_delivered(storage: Storage) -> None:
    sender = ScriptedSender({11: [RETRY, RETRY]})
    d = dispatcher(storage, sender)
    await subscribers(storage, 11, 12)
    pid = await appeal(storage)
    await d.dispatch([pid])
    assert sender.tries(11) == 1 and await status_of(storage, 11, pid) == "pending"  # retrying in the background
    await d.drain()
    assert sender.tries(11) == 3 and sender.delivered == Counter({11: 1, 12: 1})
    assert await status_of(storage, 11, pid) == "sent"
    assert (d.stats.retried, d.stats.sent, d.stats.failed, d.stats.postponed) == (2, 2, 0, 0)


async def test_a_chat_that_keeps_failing_never_holds_up_the_next_posts_fan_out(storage: Storage) -> None:
    sender = ScriptedSender({13: [RETRY]})
    d = dispatcher(storage, sender, retry=RetryPolicy(retries=3, base=1.0, cap=1.0))
    await subscribers(storage, 13, 14)
    first, second = await appeal(storage, 1), await appeal(storage, 2, text=APPEAL + " Второе.")
    started = asyncio.get_running_loop().time()
    await d.dispatch([first])
    await d.dispatch([second])
    assert asyncio.get_running_loop().time() - started < 0.4  # chat 13's backoff (0.5-1 s) runs aside
    assert sender.delivered == Counter({13: 1, 14: 2})  # 13 already got the second post, not yet the first
    await d.drain()
    assert sender.delivered == Counter({13: 2, 14: 2})
    assert [await status_of(storage, 13, pid) for pid in (first, second)] == ["sent", "sent"]


async def test_permanent_refusals_fail_at_once_and_only_they_are_failed(storage: Storage) -> None:
    blocked = SendOutcome("blocked", error="Forbidden: bot was blocked by the user")
    not_found = SendOutcome("failed", error="BadRequest: Chat not found")
    sender = ScriptedSender({21: [blocked], 22: [not_found], 23: [RETRY]})
    d = dispatcher(storage, sender)
    await subscribers(storage, 21, 22, 23)
    pid = await appeal(storage)
    await d.dispatch([pid])
    await d.drain()
    assert (sender.tries(21), sender.tries(22), sender.tries(23)) == (1, 1, 2)  # only the transient one again
    assert [await status_of(storage, c, pid) for c in (21, 22, 23)] == ["failed", "failed", "sent"]
    assert (d.stats.blocked, d.stats.failed) == (1, 1)
    chat = await storage.chat_settings(21)
    assert chat is not None and not chat.active


async def test_a_round_that_keeps_failing_stays_pending_and_the_sweep_delivers_it_later(storage: Storage) -> None:
    sender = ScriptedSender({31: [RETRY] * (FAST.retries + 1)})
    d = dispatcher(storage, sender)
    await subscribers(storage, 31)
    pid = await appeal(storage)
    await d.dispatch([pid])
    await d.drain()
    assert sender.tries(31) == FAST.retries + 1 and not sender.delivered
    assert await status_of(storage, 31, pid) == "pending" and d.stats.postponed == 1
    [row] = list(await storage.db.execute_fetchall(
        "SELECT attempts, error FROM alerts WHERE chat_id=31 AND post_id=?", (pid,)))
    attempts, error = row[0], row[1]
    assert attempts == 1 and "Bad Gateway" in error
    assert await d.resend_due() == 0  # postponed: not due before RetryPolicy.later(0), a minute
    await storage.release_leases()  # what a restart does (and what a minute does)
    assert await d.resend_due() == 1
    await d.drain()
    assert sender.delivered[31] == 1 and await status_of(storage, 31, pid) == "sent"
    assert await d.resend_due() == 0


async def test_two_sweeps_at_once_send_a_due_alert_once(storage: Storage) -> None:
    sender = ScriptedSender()
    d = dispatcher(storage, sender)
    await subscribers(storage, 41, 42, 43)
    pid = await appeal(storage)
    now = datetime.now(UTC)
    # claimed by a process that died before sending: the lease is over
    await storage.claim_alerts(pid, None, [41, 42, 43], "pending", lease_until=now - timedelta(seconds=1),
                               deliver_by=now + timedelta(hours=6))
    sent = await asyncio.gather(d.resend_due(), d.resend_due())
    assert sum(sent) == 3 and sender.delivered == Counter({41: 1, 42: 1, 43: 1})


async def test_a_live_lease_is_not_sent_again_and_a_claim_past_its_deadline_expires(storage: Storage) -> None:
    sender = ScriptedSender()
    d = dispatcher(storage, sender)
    await subscribers(storage, 51, 52)
    pid = await appeal(storage)
    now = datetime.now(UTC)
    await storage.claim_alerts(pid, None, [51], "pending", lease_until=now + timedelta(minutes=5),
                               deliver_by=now + timedelta(hours=6))
    await storage.claim_alerts(pid, None, [52], "pending", lease_until=now - timedelta(hours=7),
                               deliver_by=now - timedelta(hours=1))
    assert await d.resend_due() == 0
    assert not sender.attempts
    assert await status_of(storage, 51, pid) == "pending" and await status_of(storage, 52, pid) == "expired"
    assert d.stats.expired == 1


async def test_a_chat_that_unsubscribed_after_the_claim_is_not_sent_the_alert(storage: Storage) -> None:
    sender = ScriptedSender()
    d = dispatcher(storage, sender)
    await subscribers(storage, 61)
    pid = await appeal(storage)
    await storage.claim_alerts(pid, None, [61], "pending", deliver_by=datetime.now(UTC) + timedelta(hours=1))
    await storage.unsubscribe(61)
    assert await d.resend_due() == 0
    assert not sender.attempts and await status_of(storage, 61, pid) == "skipped"


def test_backoff_doubles_with_jitter_up_to_its_cap_and_respects_flood_waits() -> None:
    policy = RetryPolicy(retries=5, base=0.5, cap=4.0)
    for retry, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(full * 0.5 <= x <= full for x in delays), (retry, min(delays), max(delays))
        assert max(delays) - min(delays) > full * 0.1  # jittered, not lockstep
    assert policy.delay(1, retry_after=7.0) == 7.0
    assert RetryPolicy.later(0) == timedelta(minutes=1) and RetryPolicy.later(9) == timedelta(minutes=30)
    default = RetryPolicy()
    assert sum(min(default.cap, default.base * 2 ** (n - 1)) for n in range(1, default.retries + 1)) == 15.5


def test_alert_stats_keep_a_bounded_window_of_latencies() -> None:
    stats = AlertStats()
    for i in range(LATENCY_SAMPLES + 500):
        stats.latencies.append(float(i))
    assert len(stats.latencies) == LATENCY_SAMPLES and stats.latencies[0] == 500.0


# -- stories: only alerts that arrived mute reposts ------------------------------------------------


async def test_a_lost_or_failed_alert_never_mutes_the_storys_reposts(storage: Storage) -> None:
    sender = ScriptedSender({72: [SendOutcome("failed", error="BadRequest: chat not found")]})
    d = dispatcher(storage, sender)
    await subscribers(storage, 71, 72)
    first = await appeal(storage, 1, channel="chan_one", story="new")
    story = (await storage.story_and_hash(first) or (None, ""))[0]
    assert story is not None
    await d.dispatch([first])
    assert [await status_of(storage, c, first) for c in (71, 72)] == ["sent", "failed"]
    # 73's claim was lost in a crash: pending, its lease over, never sent
    await subscribers(storage, 73)
    await storage.claim_alerts(first, story, [73], "pending", lease_until=datetime.now(UTC) - timedelta(seconds=5),
                               deliver_by=datetime.now(UTC) + timedelta(hours=6))
    repost = await appeal(storage, 2, channel="chan_two", story=story, text=APPEAL + " Подписывайтесь!")
    await d.dispatch([repost])
    assert await status_of(storage, 71, repost) == "skipped"  # 71 has the story: its alert is updated instead
    assert await status_of(storage, 72, repost) == "sent"     # the failed alert muted nothing
    assert await status_of(storage, 73, repost) == "sent"     # nor did the lost claim


# -- history -----------------------------------------------------------------------------------------


async def test_old_posts_and_imported_ones_alert_nobody(storage: Storage) -> None:
    heard: list[StoredPost] = []
    sender = ScriptedSender()
    d = dispatcher(storage, sender, max_age=timedelta(hours=6), on_history=heard.append)
    await subscribers(storage, 81)
    old = await appeal(storage, 1, age=timedelta(days=3))
    imported = await appeal(storage, 2, source="export", age=timedelta(minutes=5))
    fresh = await appeal(storage, 3, age=timedelta(hours=5, minutes=50))
    await d.dispatch([old, imported, fresh])
    assert [m.html for _, m in sender.attempts if "chan_one/3" in m.html] and len(sender.attempts) == 1
    assert await storage.alerts_for_chat(81) == [(fresh, "sent")]
    assert d.stats.history == 2 and [p.id for p in heard] == [old]  # an import is no news


# -- Telegram's errors, sorted ---------------------------------------------------------------------


@pytest.mark.parametrize(("error", "status"), [
    (Forbidden("Forbidden: bot was blocked by the user"), "blocked"),
    (Forbidden("Forbidden: bot was kicked from the group chat"), "blocked"),
    (BadRequest("Chat not found"), "failed"),
    (ChatMigrated(-100123), "failed"),
    (InvalidToken("Unauthorized"), "failed"),
    (NetworkError("Bad Gateway"), "retry"),
    (NetworkError("Internal Server Error (500)"), "retry"),
    (TimedOut("Timed out"), "retry"),
    (RetryAfter(7), "retry"),
])
def test_send_errors_are_sorted_into_transient_and_permanent(error: Exception, status: str) -> None:
    outcome = send_outcome(error, forwarded=True)  # type: ignore[arg-type]
    assert outcome.status == status
    if status == "retry":
        assert outcome.forwarded  # a retry must not forward the original again
    if isinstance(error, RetryAfter):
        assert outcome.retry_after == 7.0


# -- one lock for every write -----------------------------------------------------------------------


async def test_a_single_write_never_joins_another_coroutines_transaction(storage: Storage) -> None:
    entered = asyncio.Event()

    async def failing_transaction() -> None:
        async def statements() -> None:
            await storage.db.execute("INSERT INTO meta(key, value) VALUES ('tx', 'rolled back')")
            entered.set()
            await asyncio.sleep(0.1)  # another coroutine writes now
            raise RuntimeError("the transaction fails")

        await storage._tx(statements)

    async def single_write() -> None:
        await entered.wait()
        await storage.set_meta("other", "kept")

    results = await asyncio.gather(failing_transaction(), single_write(), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert await storage.get_meta("tx") is None        # the transaction rolled back
    assert await storage.get_meta("other") == "kept"   # the plain write was not rolled back with it


# -- end to end: faults on sendMessage ----------------------------------------------------------------

FAULTS_CHANNEL = Channel(-1007234500001, "delivery_faults", "Delivery Faults")
FAULT_CHATS = tuple(range(7001, 7031))


async def test_502s_and_timeouts_on_a_share_of_send_message_every_alert_is_delivered(
    tmp_path: Path, classifier: AppealClassifier
) -> None:
    async with LocalBotAPI(seed=7) as api, running_bot(tmp_path, api, classifier, transient_retries=8,
                                                        retry_delay=0.2) as app:
        for chat in FAULT_CHATS:
            api.send_user_message(chat, "/subscribe")
        await api.wait_for_count("sendMessage", len(FAULT_CHATS), timeout=60, ok_only=True)
        FAULTS_CHANNEL.add_bot(api, by_user_id=FAULT_CHATS[0])
        await eventually(lambda: _watched(app), 10)
        since = api.mark()
        api.fail("sendMessage", 502, "Bad Gateway", times=None, share=0.3)
        api.fail("sendMessage", 504, "Gateway Timeout", times=None, share=0.1, stall=6.0)  # > PTB's 5 s read timeout
        for mid, (_, _, text) in ((11, APPEALS[0]), (12, APPEALS[1])):
            FAULTS_CHANNEL.post(api, mid, text)

        def delivered() -> bool:
            return all(len(alerts_for_link(api, chat, FAULTS_CHANNEL.link(mid), since)) >= 1
                       for chat in FAULT_CHATS for mid in (11, 12))

        await eventually(delivered, 120, lambda: f"{len([c for c in api.calls[since:] if c.ok])} delivered")
        api.clear_faults()
        for chat in FAULT_CHATS:
            for mid in (11, 12):  # a refused or timed-out call delivered nothing, so exactly once each
                assert len(alerts_for_link(api, chat, FAULTS_CHANNEL.link(mid), since)) == 1
        refused = Counter(c.error_code for c in api.calls[since:] if c.method == "sendMessage" and not c.ok)
        assert refused[502] >= 5 and refused[504] >= 1, refused
        stats = services_of(app).alerts.stats
        assert stats.failed == 0 and stats.retried >= refused[502]
        statuses = Counter(st for (st,) in await _rows(app, "SELECT status FROM alerts"))
        assert statuses == Counter({"sent": 2 * len(FAULT_CHATS)})
        status = await command(api, FAULT_CHATS[0], "/status")
        assert f"delivery, last 24 h: {2 * len(FAULT_CHATS)} sent, 0 pending" in (status.shown_text or "")
        assert "0 failed for good" in (status.shown_text or "")


async def _watched(app: object) -> bool:
    return FAULTS_CHANNEL.username in await storage_of(app).watched_channels()  # type: ignore[arg-type]


async def _rows(app: object, sql: str) -> list[sqlite3.Row]:
    return list(await storage_of(app).db.execute_fetchall(sql))  # type: ignore[arg-type]


# -- end to end: SIGKILL at each step of a fan-out to 30 chats -----------------------------------------

KILL_CHANNEL = Channel(-1007234500002, "delivery_kill", "Delivery Kill")
KILL_CHATS = tuple(range(7101, 7131))


@pytest.mark.parametrize("crash_at", ["alert_claimed", "alert_recorded:10", "alert_sent:1"])
async def test_a_fan_out_killed_at_each_step_reaches_every_chat_after_restart(
    tmp_path: Path, model_cache: Path, crash_at: str
) -> None:
    """Killed after the claims (nothing sent), after ten recorded sends, or between a send and its
    record: after a restart every chat has the alert; a duplicate only for a message in flight."""
    log = tmp_path / "bot.log"
    proc: subprocess.Popen[bytes] | None = None
    async with LocalBotAPI() as api:
        config, db = write_config(tmp_path, api, model_cache)
        for chat in KILL_CHATS:
            api.send_user_message(chat, "/subscribe")
        api.set_latency("sendMessage", 0.05)
        link = KILL_CHANNEL.link(21)
        try:
            proc = start_bot_process(config, log, tmp_path, APPEALWATCH_CRASH_AT=crash_at)
            await wait_until(lambda: len(_subscribed(api)) == len(KILL_CHATS), STARTUP_TIMEOUT,
                             "the queued /subscribe commands were answered", proc, log)
            KILL_CHANNEL.add_bot(api, by_user_id=KILL_CHATS[0])
            KILL_CHANNEL.post(api, 21, APPEALS[0][2])
            await asyncio.wait_for(asyncio.to_thread(proc.wait, STARTUP_TIMEOUT), STARTUP_TIMEOUT + 5)
            assert proc.returncode == -9, f"the bot did not kill itself at {crash_at}:\n{log_tail(log)}"
            await asyncio.sleep(0.3)  # requests it had sent are answered: they were in flight
            before = Counter(c.chat_id for c in _alerts(api, link))
            at_kill = alert_statuses(db)

            proc = start_bot_process(config, log, tmp_path)
            await wait_until(lambda: set(Counter(c.chat_id for c in _alerts(api, link))) >= set(KILL_CHATS)
                             and "pending" not in alert_statuses(db).values(), STARTUP_TIMEOUT,
                             "every chat got the alert after the restart", proc, log)
        finally:
            kill(proc)

    assert len(at_kill) == len(KILL_CHATS) and set(at_kill.values()) <= {"pending", "sent"}
    in_flight = {chat for (chat, _), st in at_kill.items() if st == "pending" and before[chat]}
    got = Counter(c.chat_id for c in _alerts(api, link))
    duplicates = {chat for chat, n in got.items() if n > 1}
    assert all(n in (1, 2) for n in got.values()), got
    assert duplicates <= in_flight, f"duplicates not in flight at the crash: {duplicates - in_flight}"
    assert set(alert_statuses(db).values()) == {"sent"}
    recorded = sum(1 for st in at_kill.values() if st == "sent")
    if crash_at == "alert_claimed":
        assert not before and recorded == 0 and not duplicates
    elif crash_at == "alert_recorded:10":
        assert recorded == 10  # recorded ones are never sent again
        assert all(got[chat] == 1 for (chat, _), st in at_kill.items() if st == "sent")
    else:
        assert recorded == 0 and len(duplicates) >= 1  # the send that returned but was not recorded


def _subscribed(api: LocalBotAPI) -> set[int | str | None]:
    return {c.chat_id for c in api.sent_messages() if "Subscribed" in (c.shown_text or "")}


def _alerts(api: LocalBotAPI, link: str) -> list[Call]:
    return [c for c in api.sent_messages() if (c.shown_text or "").startswith("🚨 Appeal:") and link in (c.text or "")]
