"""Bad, odd and oversized input: every case gets a clear answer and nothing reaches the error handler."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.app import AnyApp
from bot.config import ConfigError, load_config
from bot.local_botapi import LocalBotAPI
from models.classifier import AppealClassifier
from tests.botkit import (
    APPEALS,
    NOT_APPEALS,
    SHELLING_REPORTS,
    Channel,
    alert_post_id,
    alerts_for_link,
    alerts_to,
    button,
    command,
    eventually,
    post_and_settle,
    press,
    quiet,
    rows,
    running_bot,
    shown,
    storage_of,
    subscribe,
)

USER = 2001
ADMIN = 2009
CHANNEL = Channel(-1002234500001, "odd_input_test", "Odd Input")
STRANGER = Channel(-1002234500002, "never_added_test", "Never Added")

SOMETHING_WRONG = "Something went wrong"




async def _setup(api: LocalBotAPI, app: AnyApp) -> None:
    await subscribe(api, USER)
    CHANNEL.add_bot(api, by_user_id=USER)

    async def watched() -> bool:
        return CHANNEL.username in await storage_of(app).watched_channels()

    await eventually(watched, 10, "the channel was never registered")


async def test_search_with_query_syntax_and_odd_queries(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await _setup(api, app)
        await post_and_settle(api, app, CHANNEL, 11, APPEALS[0][2])  # «Сдавайтесь», Russian
        await post_and_settle(api, app, CHANNEL, 12, NOT_APPEALS[1][1])  # air-raid alert, Ukrainian

        search_answer = "🔍"  # results or "Nothing found": a search ran, whatever it matched
        cases = {
            '/search "': "Give some words",
            "/search *": "Give some words",
            "/search OR": search_answer,
            "/search NEAR(": search_answer,
            '/search NEAR("тривога" OR *': search_answer,
            "/search": "Usage:",
            "/search    ": "Usage:",
            "/search " + "а" * 5000: "keep it under 500",
            "/search lang:xx": "Unknown language",
            "/search since:2026-02-30": "expected a date",
        }
        for text, expected in cases.items():
            reply = await command(api, USER, text)
            assert expected in shown(reply), f"{text[:40]!r} → {shown(reply)[:200]!r}"
            assert SOMETHING_WRONG not in shown(reply)

        # quoting never breaks a real search: an unbalanced quote or markup around a real word still finds it
        reply = await command(api, USER, '/search "сдавайтесь')
        assert CHANNEL.link(11) in (reply.text or ""), shown(reply)
        reply = await command(api, USER, "/search <тривога>")
        assert CHANNEL.link(12) in (reply.text or ""), shown(reply)
        assert "&lt;тривога&gt;" in (reply.text or "")  # the query is echoed escaped


async def test_digest_and_subscribe_with_nonsense_get_usage(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        for text, expected in {
            "/digest nonsense": "Use /digest 24h",
            "/digest 0h": "between 1h and 10 years",
            "/digest 99999d": "Use /digest 24h",
            "/digest 2026-03-31..2026-03-01": "must not be after",
            "/digest 2026-02-30..2026-03-01": "expected a date",
        }.items():
            reply = await command(api, USER, text)
            assert expected in shown(reply), f"{text!r} → {shown(reply)!r}"
        assert api.calls_of("sendPhoto") == []

        for text, expected in {
            "/subscribe nonsense": "Unknown label",
            "/subscribe lang:xx": "Unknown language",
            "/subscribe min:7": "between 0 and 1",
            "/subscribe min:abc": "expected a number",
            "/subscribe lang:": "has no value",
            "/subscribe channel:@@!": "not a public channel",
        }.items():
            reply = await command(api, USER, text)
            assert expected in shown(reply), f"{text!r} → {shown(reply)!r}"
            assert "Subscribed" not in shown(reply)
        settings = await storage.chat_settings(USER)
        assert settings is None or settings.filters is None  # nothing was subscribed


async def test_unknown_command(tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier):
        reply = await command(api, USER, "/frobnicate now")
        assert shown(reply).startswith("I don't know /frobnicate")
        reply = await command(api, USER, "hello there")
        assert "/help" in shown(reply)


async def test_post_over_4096_characters_is_stored_whole_and_alert_fits(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    appeal = APPEALS[5][2]
    news = [
        f"Зведення за добу № {i}: ворог здійснив {i + 3} обстрілів прикордоння; R&D-центр <Техно> працює, "
        f"енергетики відновили живлення для {100 + i * 7} абонентів, рятувальники ліквідували {i % 5 + 1} пожежі."
        for i in range(1, 25)
    ]
    text = "\n\n".join([appeal, *news])
    assert len(text) > 4096
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await _setup(api, app)
        post = await post_and_settle(api, app, CHANNEL, 21, text)
        assert post.text == text  # whole, not truncated
        assert post.appeal is True
        [alert] = alerts_for_link(api, USER, CHANNEL.link(21))
        assert len(shown(alert)) <= 4096
        assert await storage_of(app).alerts_for_chat(USER) == [(post.id, "sent")]


async def test_emoji_only_post_is_stored_and_not_alerted(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await _setup(api, app)
        post = await post_and_settle(api, app, CHANNEL, 31, "🔥🔥🔥 🇺🇦🇺🇦 💪💪")
        assert post.text == "🔥🔥🔥 🇺🇦🇺🇦 💪💪"
        assert post.appeal is False
        assert alerts_to(api, USER) == []
        # the bot is alive and alerting: a real appeal right after it is alerted
        appeal = await post_and_settle(api, app, CHANNEL, 32, APPEALS[6][2])
        assert [alert_post_id(c) for c in alerts_to(api, USER)] == [appeal.id]


async def test_post_from_a_channel_that_never_added_the_bot_is_stored(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        post = await post_and_settle(api, app, STRANGER, 41, NOT_APPEALS[2][1])
        assert post.text == NOT_APPEALS[2][1] and post.appeal is False
        assert post.chat_id == STRANGER.id
        [(source,)] = await rows(app, "SELECT source FROM channels WHERE key=?", (STRANGER.username,))
        assert source == "bot"


async def test_watch_is_for_admins_and_shows_in_channels(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,)) as app:
        storage = storage_of(app)
        reply = await command(api, USER, "/watch @watched_news_test")
        assert "Only admins" in shown(reply)
        assert "watched_news_test" not in await storage.watched_channels()

        reply = await command(api, ADMIN, "/watch not a channel!")
        assert "Usage: /watch" in shown(reply)
        reply = await command(api, ADMIN, "/watch https://t.me/s/Watched_News_Test")
        assert "Watching @watched_news_test" in shown(reply), shown(reply)
        assert "watched_news_test" in await storage.watched_channels()

        listing = await command(api, USER, "/channels")
        assert "@watched_news_test" in shown(listing)


async def test_channels_list_with_many_channels_fits_in_a_message(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    """/channels shows up to 60 channels; a message over 4096 characters would be refused by Telegram."""
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(ADMIN,)) as app:
        storage = storage_of(app)
        for i in range(60):
            await storage.ensure_channel(f"frontline_monitoring_channel_{i:03d}", source="web", watched=True)
        reply = await command(api, ADMIN, "/channels", ok=False)
        assert reply.ok, f"/channels with 60 channels: {reply.describe()}"
        assert "@frontline_monitoring_channel_000" in shown(reply)


async def test_settings_with_bad_timezone_or_quiet_hours(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        storage = storage_of(app)
        for text, expected in {
            "/settings timezone Mars/Olympus": "Unknown time zone",
            "/settings timezone Europe": "Unknown time zone",  # a folder of the tz database, not a zone
            "/settings timezone ../../etc/passwd": "Unknown time zone",
            "/settings timezone": "Unknown time zone",
            "/settings quiet 25:00-07:00": "Quiet hours look like 23:00-07:00",
            "/settings quiet tonight": "Quiet hours look like 23:00-07:00",
            "/settings quiet 23:00-": "Quiet hours look like 23:00-07:00",
            "/settings digest hourly": "Digest is off, daily or weekly",
            "/settings digest daily 8pm": "is not a time like 08:00",
            "/settings volume 11": "Unknown setting",
        }.items():
            reply = await command(api, USER, text)
            assert expected in shown(reply), f"{text!r} → {shown(reply)!r}"
        settings = await storage.chat_settings(USER)
        assert settings is not None
        assert (settings.timezone, settings.quiet_start, settings.quiet_end, settings.digest_mode) == (
            None, None, None, "off")


async def test_pressing_the_current_page_button_is_harmless(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    """The middle «1/2» button re-renders the same page: Telegram refuses an edit that changes nothing."""
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        await _setup(api, app)
        for i, text in enumerate(SHELLING_REPORTS[:6]):
            await post_and_settle(api, app, CHANNEL, 51 + i, text)
        results = await command(api, USER, "/search обстріл")
        assert "page 1/2" in shown(results)
        since = api.mark()
        answer = await press(api, USER, results, button(results, "1/2"))
        assert answer.ok
        await quiet(api)  # let the handler finish
        # (the edit may be refused as "not modified"; what matters is that the user sees no error)
        assert not any(SOMETHING_WRONG in shown(c) for c in api.calls[since:] if c.method == "sendMessage"), \
            [c.describe() for c in api.calls[since:] if c.method != "getUpdates"]


async def test_pressing_a_settings_button_that_changes_nothing_is_harmless(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier):
        settings = await command(api, USER, "/settings")
        since = api.mark()
        answer = await press(api, USER, settings, "set:q:off")  # quiet hours are already off
        assert answer.ok
        await quiet(api)
        # (the edit may be refused as "not modified"; what matters is that the user sees no error)
        assert not any(SOMETHING_WRONG in shown(c) for c in api.calls[since:] if c.method == "sendMessage"), \
            [c.describe() for c in api.calls[since:] if c.method != "getUpdates"]


async def test_digest_period_includes_a_post_from_its_last_second(
    tmp_path: Path, classifier: AppealClassifier, errors: pytest.LogCaptureFixture
) -> None:
    """/digest ends its period at "now" (with a fraction of a second); a post dated this second is inside it."""
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier) as app:
        date = int(time.time()) - 5
        post = await post_and_settle(api, app, CHANNEL, 61, APPEALS[0][2], date=date)
        assert post.appeal is True and int(post.date.timestamp()) == date
        until = datetime.fromtimestamp(date + 0.5, UTC)  # as if /digest ran half a second after the post
        counts = await storage_of(app).digest_counts(until - timedelta(hours=24), until)
        assert (counts["posts"], counts["appeals"]) == (1, 1)
        top = await storage_of(app).top_appeals(until - timedelta(hours=24), until)
        assert [p.id for p in top] == [post.id]


def test_config_timezone_that_is_a_folder_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[digest]\ntimezone = "Europe"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_config(path, env={})
