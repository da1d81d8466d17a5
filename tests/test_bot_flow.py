"""The whole user flow, end to end: PTB over real HTTP to LocalBotAPI, SQLite in tmp_path, the real model.

Channel posts are published one at a time (each processed before the next) so that these
tests follow the user-visible flow; bursts of posts are tested in test_bot_faults.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from bot.app import AnyApp, services_of
from bot.domain import Filters
from bot.local_botapi import LocalBotAPI
from bot.storage import Storage
from handlers.menu import COMMANDS
from models.classifier import AppealClassifier
from models.taxonomy import LANG_NAMES, labels_text
from tests.botkit import (
    APPEALS,
    NOT_APPEALS,
    SHELLING_REPORTS,
    Channel,
    alert_post_id,
    alerts_for_link,
    alerts_to,
    button,
    callback_data,
    command,
    eventually,
    post_and_settle,
    press,
    quiet_hours_around_now,
    rows,
    running_bot,
    settle,
    shown,
    storage_of,
    subscribe,
)

USER = 1001  # Olena, the journalist this flow follows
WITNESS = 1002  # a second subscriber: proves an alert was sent where USER's is expected to be missing
GROUP = -4001234567
CHANNEL = Channel(-1001234500001, "front_voices_test", "Front Voices")
FORWARD_SOURCE = Channel(-1001555000222, "mriya_news_test", "Mriya News")

LINK_RE = re.compile(r'href="(https://t\.me/[^"]+/\d+)"')



async def test_full_user_flow(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)

        # /start, and the command menu
        reply = await command(api, USER, "/start")
        assert "/subscribe" in shown(reply)
        assert [c["command"] for c in api.commands()] == [c.name for c in COMMANDS]
        assert [c["description"] for c in api.commands()] == [c.what for c in COMMANDS]
        assert (await storage.chat_settings(USER)) is not None

        # /subscribe (USER and a witness)
        await subscribe(api, USER)
        await subscribe(api, WITNESS)
        settings = await storage.chat_settings(USER)
        assert settings is not None and settings.filters == Filters() and settings.active

        # the bot becomes an admin of a channel
        CHANNEL.add_bot(api, by_user_id=USER)
        await eventually(lambda: _watched(storage, CHANNEL.username), 10, "the channel was never registered")

        # eight posts: four clear appeals (ru, uk, en, ru) and four clear non-appeals
        appeals = {101 + i: APPEALS[i] for i in range(4)}
        non_appeals = {201 + i: NOT_APPEALS[i] for i in range(4)}
        stored = {}
        for mid, (_, _, text) in appeals.items():
            stored[mid] = await post_and_settle(api, app, CHANNEL, mid, text)
        for mid, (_, text) in non_appeals.items():
            stored[mid] = await post_and_settle(api, app, CHANNEL, mid, text)
        assert await storage.count_posts() == 8

        # alerts: exactly the stored appeals, once each, to each subscriber
        db_appeals = {r[0] for r in await rows(app, "SELECT post_id FROM classifications WHERE appeal=1")}
        for chat in (USER, WITNESS):
            alerts = alerts_to(api, chat)
            alerted = [alert_post_id(c) for c in alerts]
            assert len(alerted) == len(set(alerted)), f"duplicate alerts to {chat}: {alerted}"
            assert set(alerted) == db_appeals
        user_alerts = {alert_post_id(c): c for c in alerts_to(api, USER)}
        for mid in appeals:
            assert stored[mid].id in user_alerts, f"clear appeal {mid} was not alerted: {stored[mid].text[:60]}"
        for mid in non_appeals:
            assert stored[mid].id not in user_alerts, f"non-appeal {mid} was alerted: {stored[mid].text[:60]}"
            assert stored[mid].appeal is False

        # the content of each alert
        for mid, (lang, label, text) in appeals.items():
            post = stored[mid]
            alert = user_alerts[post.id]
            seen, html = shown(alert), alert.text or ""
            assert label in post.labels, f"post {mid}: labels {post.labels}, expected {label}"
            assert seen.startswith(f"🚨 Appeal: {labels_text(post.labels)}")
            assert f"🌐 {LANG_NAMES[lang]}" in seen, seen
            assert f'href="https://t.me/{CHANNEL.username}"' in html
            assert LINK_RE.findall(html) == [CHANNEL.link(mid)]
            assert "Because: «" in seen
            assert text[:60] in seen
            assert callback_data(alert) == [f"fb:ok:{post.id}", f"fb:no:{post.id}", f"mute:{post.id}"]
            labels = [str(b["text"]) for row in alert.buttons for b in row]
            assert [t[0] for t in labels] == ["✅", "❌", "🔕"]
            assert len(seen) <= 4096

        # /search: a Russian and a Ukrainian post, capitalised words searched in lower case
        ru = await command(api, USER, "/search женевской")
        assert CHANNEL.link(101) in LINK_RE.findall(ru.text or ""), shown(ru)
        assert "<b>Женевской</b>" in (ru.text or "") and "Russian" in shown(ru)
        uk = await command(api, USER, "/search кидайте")
        assert CHANNEL.link(102) in LINK_RE.findall(uk.text or ""), shown(uk)
        assert "<b>Кидайте</b>" in (uk.text or "") and "Ukrainian" in shown(uk)

        # pagination: seven matching reports → at least two pages; walk them with "Next ▶"
        reports = {301 + i: text for i, text in enumerate(SHELLING_REPORTS)}
        for mid, text in reports.items():
            await post_and_settle(api, app, CHANNEL, mid, text)
        first = await command(api, USER, "/search обстріл")
        m = re.search(r"(\d+) results? for .* · page 1/(\d+)", shown(first))
        assert m is not None, shown(first)
        total, pages = int(m.group(1)), int(m.group(2))
        assert total >= 7 and pages == (total + 4) // 5 and pages >= 2
        assert "◀ Prev" not in str(first.buttons)
        seen_pages = [LINK_RE.findall(first.text or "")]
        assert len(seen_pages[0]) == 5
        current = first
        for page in range(2, pages + 1):
            since = api.mark()
            await press(api, USER, current, button(current, "Next ▶"))
            edit = await api.wait_for(lambda c: c.method == "editMessageText" and c.chat_id == USER, 10, since=since)
            assert edit.ok, edit.describe()
            assert edit.params["message_id"] == first.result["message_id"]  # the same message, edited
            assert f"page {page}/{pages}" in shown(edit)
            assert any(str(b.get("text")) == "◀ Prev" for row in edit.buttons for b in row)
            seen_pages.append(LINK_RE.findall(edit.text or ""))
            current = edit
        assert "Next ▶" not in str(current.buttons)
        found = [link for links in seen_pages for link in links]
        assert len(found) == total and len(set(found)) == total  # every result once, on one page only
        assert {CHANNEL.link(mid) for mid in reports} <= set(found)

        # /digest 24h: counts and a PNG chart
        n_appeals = len(db_appeals)
        n_posts = await storage.count_posts()
        # The period ends at "now" truncated to the second and excludes its end, so a post dated this
        # very second is not counted yet (reported); step past it to count every post.
        [(last_date,)] = await rows(app, "SELECT MAX(date) FROM posts")
        await asyncio.sleep(max(0.0, last_date + 1.05 - time.time()))
        since = api.mark()
        digest = await command(api, USER, "/digest 24h")
        assert "digest" in shown(digest)
        assert f"{n_appeals} appeals" in shown(digest) and f"in {n_posts} posts" in shown(digest), shown(digest)
        photo = await api.wait_for(lambda c: c.method == "sendPhoto" and c.chat_id == USER, 30, since=since)
        assert photo.ok, photo.describe()
        assert photo.files["photo"].data.startswith(b"\x89PNG")

        # feedback buttons: ✅ on one alert, ❌ on another
        ok_post, no_post = stored[101].id, stored[103].id
        ok_answer = await press(api, USER, user_alerts[ok_post], f"fb:ok:{ok_post}")
        no_answer = await press(api, USER, user_alerts[no_post], f"fb:no:{no_post}")
        assert ok_answer.ok and "Thanks" in str(ok_answer.params.get("text"))
        assert no_answer.ok and "not an appeal" in str(no_answer.params.get("text"))
        feedback = [(r["post_id"], r["verdict"]) for r in await storage.feedback_rows()]
        assert feedback == [(ok_post, "correct"), (no_post, "not_appeal")]

        # 🔕 mutes the channel for this chat only
        mute_post = stored[102].id
        since = api.mark()
        await press(api, USER, user_alerts[mute_post], f"mute:{mute_post}")
        note = await api.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == USER, 10, since=since)
        assert "Muted" in shown(note)
        settings = await storage.chat_settings(USER)
        assert settings is not None and settings.muted == (CHANNEL.username,)
        since = api.mark()
        _, _, pow_text = APPEALS[4]
        muted = await post_and_settle(api, app, CHANNEL, 401, pow_text)
        assert muted.appeal is True
        assert [alert_post_id(c) for c in alerts_to(api, WITNESS, since)] == [muted.id]
        assert alerts_to(api, USER, since) == []
        assert muted.id not in [pid for pid, _ in await storage.alerts_for_chat(USER)]


async def _watched(storage: Storage, key: str) -> bool:
    return key in await storage.watched_channels()


async def _setup(api: LocalBotAPI, app: AnyApp, users: tuple[int, ...] = (USER,)) -> None:
    for user in users:
        await subscribe(api, user)
    CHANNEL.add_bot(api, by_user_id=USER)
    await eventually(lambda: _watched(storage_of(app), CHANNEL.username), 10, "the channel was never registered")


async def test_photo_caption_is_classified_and_media_without_text_is_skipped(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await _setup(api, app)
        _, _, text = APPEALS[6]
        photo = await post_and_settle(api, app, CHANNEL, 501, caption=text, photo=True)
        assert photo.text == text and photo.appeal is True
        assert [alert_post_id(c) for c in alerts_for_link(api, USER, CHANNEL.link(501))] == [photo.id]

        bare = await post_and_settle(api, app, CHANNEL, 502, photo=True)
        [(state, has_media, text_stored)] = await rows(app, "SELECT state, has_media, text FROM posts WHERE id=?",
                                                       (bare.id,))
        assert (state, has_media, text_stored) == ("skipped", 1, "")
        assert bare.appeal is None  # never classified
        assert alerts_for_link(api, USER, CHANNEL.link(502)) == []
        assert len(alerts_to(api, USER)) == 1


async def test_edited_channel_post_keeps_history_and_is_not_alerted_twice(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        await _setup(api, app)
        _, _, original = APPEALS[0]
        post = await post_and_settle(api, app, CHANNEL, 601, original)
        assert len(alerts_for_link(api, USER, CHANNEL.link(601))) == 1

        edited = original + " Обновлено: чат-бот отвечает круглосуточно."
        CHANNEL.edit(api, 601, edited)

        async def edit_processed() -> bool:
            p = await storage.get_post(post.id)
            return p is not None and p.text == edited and not await storage.unfinished_posts()

        await eventually(edit_processed, 30, "the edit was never stored and processed")
        await settle(app)
        assert await storage.count_posts() == 1
        assert [t for t, _, _ in await storage.post_edits(post.id)] == [original, edited]
        assert services_of(app).pipeline.stats.edits == 1
        [(classified,)] = await rows(app, "SELECT COUNT(*) FROM classifications WHERE post_id=?", (post.id,))
        assert classified == 1
        assert len(alerts_for_link(api, USER, CHANNEL.link(601))) == 1
        # the search index follows the edit
        found = await command(api, USER, "/search обновлено")
        assert LINK_RE.findall(found.text or "") == [CHANNEL.link(601)]


async def test_forwarded_channel_post_is_answered_and_stored_under_its_origin(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        await subscribe(api, USER)
        _, _, text = APPEALS[5]
        since = api.mark()
        api.forward_from_channel(USER, FORWARD_SOURCE.id, FORWARD_SOURCE.username, FORWARD_SOURCE.title, 77, text)
        answer = await api.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == USER, 60, since=since)
        assert answer.ok and shown(answer).startswith("🚨 appeal:"), answer.describe()
        post = await storage.find_post(FORWARD_SOURCE.username, 77)
        assert post is not None and post.appeal is True and post.text == text
        assert post.chat_id == FORWARD_SOURCE.id
        assert f"stored as post #{post.id}" in shown(answer)
        [(source,)] = await rows(app, "SELECT source FROM posts WHERE id=?", (post.id,))
        assert source == "forward"
        await settle(app)
        # the user already has the answer: no alert for the same post on top of it
        assert alerts_to(api, USER) == []

        _, news = NOT_APPEALS[2]
        since = api.mark()
        api.forward_from_channel(USER, FORWARD_SOURCE.id, FORWARD_SOURCE.username, FORWARD_SOURCE.title, 78, news)
        answer = await api.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == USER, 60, since=since)
        assert shown(answer).startswith("Not an appeal"), answer.describe()
        assert await storage.find_post(FORWARD_SOURCE.username, 78) is not None


async def test_group_chat_subscribes_and_gets_alerts(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        api.set_member(GROUP, USER, "creator")  # only a group's admins subscribe it
        await subscribe(api, USER, chat_id=GROUP, chat_type="group")
        settings = await storage.chat_settings(GROUP)
        assert settings is not None and settings.type == "group" and settings.filters is not None
        CHANNEL.add_bot(api, by_user_id=USER)
        await eventually(lambda: _watched(storage, CHANNEL.username), 10)
        _, _, text = APPEALS[1]
        post = await post_and_settle(api, app, CHANNEL, 701, text)
        assert [alert_post_id(c) for c in alerts_to(api, GROUP)] == [post.id]
        assert alerts_to(api, USER) == []  # the user subscribed the group, not the private chat


async def test_quiet_hours_hold_the_alert_until_they_end(tmp_path: Path, classifier: AppealClassifier) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        # the test delivers held alerts itself: stop the periodic job from doing it first
        assert app.job_queue is not None
        for job in app.job_queue.get_jobs_by_name("held-alerts"):
            job.schedule_removal()
        await _setup(api, app)
        start, end = quiet_hours_around_now(services_of(app).config).split("-")
        reply = await command(api, USER, f"/settings quiet {start}-{end}")
        assert f"Quiet hours: {start}–{end}" in shown(reply), shown(reply)

        _, _, text = APPEALS[3]
        post = await post_and_settle(api, app, CHANNEL, 801, text)
        assert await storage.alerts_for_chat(USER) == [(post.id, "held")]
        assert alerts_to(api, USER) == []
        assert await services_of(app).alerts.deliver_held() == 0  # still quiet

        reply = await command(api, USER, "/settings quiet off")
        assert "Quiet hours: off" in shown(reply)
        since = api.mark()
        assert await services_of(app).alerts.deliver_held() == 1
        assert [alert_post_id(c) for c in alerts_to(api, USER, since)] == [post.id]
        assert await storage.alerts_for_chat(USER) == [(post.id, "sent")]
        assert await services_of(app).alerts.deliver_held() == 0
