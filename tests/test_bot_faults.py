"""Faults between the bot and Telegram: flood waits, blocked users, a flaky getUpdates, repeats, bursts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.app import AnyApp, services_of
from bot.local_botapi import LocalBotAPI
from models.classifier import AppealClassifier
from tests.botkit import (
    APPEALS,
    NOT_APPEALS,
    Channel,
    alert_post_id,
    alerts_for_link,
    alerts_to,
    command,
    eventually,
    post_and_settle,
    quiet_hours_around_now,
    rows,
    running_bot,
    settle,
    storage_of,
    subscribe,
)

USER_A, USER_B, USER_C = 3001, 3002, 3003
CHANNEL = Channel(-1003234500001, "faults_test", "Faults")


async def _setup(api: LocalBotAPI, app: AnyApp, users: tuple[int, ...] = (USER_A,)) -> None:
    for user in users:
        await subscribe(api, user)
    CHANNEL.add_bot(api, by_user_id=users[0])

    async def watched() -> bool:
        return CHANNEL.username in await storage_of(app).watched_channels()

    await eventually(watched, 10, "the channel was never registered")


async def test_flood_wait_on_an_alert_is_retried_and_delivered(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, send_retries=3) as app:
        await _setup(api, app)
        since = api.mark()
        api.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, chat_id=USER_A)
        post = await post_and_settle(api, app, CHANNEL, 11, APPEALS[0][2])
        sends = [c for c in api.calls[since:] if c.method == "sendMessage" and c.chat_id == USER_A]
        assert [c.error_code for c in sends] == [429, None]  # refused once, then delivered
        assert sends[1].time - sends[0].time >= 1.0  # it waited retry_after
        assert [alert_post_id(c) for c in alerts_to(api, USER_A)] == [post.id]
        assert await storage_of(app).alerts_for_chat(USER_A) == [(post.id, "sent")]


async def test_a_blocked_chat_is_deactivated_and_the_others_still_get_alerts(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        await _setup(api, app, users=(USER_A, USER_B, USER_C))
        api.block_user(USER_B)
        since = api.mark()
        post = await post_and_settle(api, app, CHANNEL, 21, APPEALS[1][2])
        for chat in (USER_A, USER_C):
            assert [alert_post_id(c) for c in alerts_to(api, chat)] == [post.id]
        refused = [c for c in api.calls[since:] if c.method == "sendMessage" and c.chat_id == USER_B]
        assert [c.error_code for c in refused] == [403]
        settings = await storage.chat_settings(USER_B)
        assert settings is not None and settings.active is False
        assert await storage.alerts_for_chat(USER_B) == [(post.id, "failed")]
        assert services_of(app).alerts.stats.blocked == 1

        # the next appeal is not even tried on the blocked chat
        since = api.mark()
        second = await post_and_settle(api, app, CHANNEL, 22, APPEALS[3][2])
        for chat in (USER_A, USER_C):
            assert [alert_post_id(c) for c in alerts_to(api, chat, since)] == [second.id]
        assert [c for c in api.calls[since:] if c.chat_id == USER_B] == []

        # /subscribe again (the user pressed Restart) reactivates the chat
        api.unblock_user(USER_B)
        await subscribe(api, USER_B)
        settings = await storage.chat_settings(USER_B)
        assert settings is not None and settings.active is True


async def test_get_updates_failing_with_502_then_recovering(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        since = api.mark()
        api.fail("getUpdates", 502, "Bad Gateway", times=3)
        await api.wait_for(lambda c: c.method == "getUpdates" and c.error_code == 502, 10, since=since)
        asked = api.mark()
        api.send_user_message(USER_A, "/start")  # arrives while getUpdates is failing
        reply = await api.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == USER_A, 30, since=asked)
        assert reply.ok and "/subscribe" in (reply.shown_text or "")
        failed = [i for i, c in enumerate(api.calls) if i >= since and c.method == "getUpdates" and c.error_code == 502]
        assert len(failed) == 3
        assert api.calls.index(reply) > failed[-1]  # answered after the outage, not before it
        assert app.updater is not None and app.updater.running
        # and it keeps working
        again = await command(api, USER_A, "/help")
        assert "/search" in (again.shown_text or "")


async def test_the_same_update_delivered_twice_is_stored_and_alerted_once(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        await _setup(api, app)
        update = CHANNEL.post(api, 31, APPEALS[2][2])
        api.inject({"channel_post": update["channel_post"]})  # Telegram re-delivers the very same post
        await eventually(lambda: not api.pending_updates(), 10, "the bot never fetched the posts")
        await asyncio.sleep(1.0)  # both copies handled
        await settle(app, posts=1, timeout=20)
        [(n,)] = await rows(app, "SELECT COUNT(*) FROM posts p JOIN channels c ON c.id=p.channel_id "
                                 "WHERE c.key=? AND p.message_id=31", (CHANNEL.username,))
        assert n == 1
        post = await storage.find_post(CHANNEL.username, 31)
        assert post is not None and post.appeal is True
        assert len(alerts_for_link(api, USER_A, CHANNEL.link(31))) == 1
        assert services_of(app).pipeline.stats.duplicates == 1


async def test_a_burst_of_posts_in_one_batch_is_all_stored_and_alerted(tmp_path: Path, classifier: AppealClassifier) -> None:
    """Posts that arrive together (one getUpdates batch) are handled concurrently; none may be lost."""
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await _setup(api, app)
        texts = [APPEALS[0][2], NOT_APPEALS[1][1], APPEALS[6][2], NOT_APPEALS[2][1], APPEALS[8][2], NOT_APPEALS[3][1]]
        for i, text in enumerate(texts):
            CHANNEL.post(api, 41 + i, text)
        await eventually(lambda: not api.pending_updates(), 10, "the bot never fetched the posts")
        await asyncio.sleep(1.0)  # let the handlers run
        stored = {mid for (mid,) in await rows(app, "SELECT message_id FROM posts")}
        assert stored == {41 + i for i in range(len(texts))}
        await settle(app, posts=len(texts), timeout=20)
        appeals = {r[0] for r in await rows(app, "SELECT post_id FROM classifications WHERE appeal=1")}
        assert {alert_post_id(c) for c in alerts_to(api, USER_A)} == appeals
        assert len(appeals) == 3


async def test_held_alerts_are_delivered_once_even_if_delivery_runs_twice(tmp_path: Path, classifier: AppealClassifier) -> None:
    """deliver_held() is the held-alerts job; two runs at once must not send the same alert twice."""
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        assert app.job_queue is not None
        for job in app.job_queue.get_jobs_by_name("held-alerts"):
            job.schedule_removal()
        storage = storage_of(app)
        await _setup(api, app)
        await command(api, USER_A, f"/settings quiet {quiet_hours_around_now(services_of(app).config)}")
        post = await post_and_settle(api, app, CHANNEL, 51, APPEALS[4][2])
        assert await storage.alerts_for_chat(USER_A) == [(post.id, "held")]
        await storage.update_chat(USER_A, quiet_start=None, quiet_end=None)
        dispatcher = services_of(app).alerts
        await asyncio.gather(dispatcher.deliver_held(), dispatcher.deliver_held())
        assert len(alerts_for_link(api, USER_A, CHANNEL.link(51))) == 1
