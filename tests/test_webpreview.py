"""The t.me/s source: parsing saved pages, then polling a real local HTTP server.

The server (aiohttp on 127.0.0.1, port 0) serves the hand-written pages in
``tests/fixtures/tme`` the way t.me does: ``/s/<name>`` for a preview,
``?before=N`` for older pages, a redirect to the contact page ``/<name>`` for a
name without a preview. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.channels import channel_name
from bot.domain import IncomingPost
from bot.sources.webpreview import (
    ChannelUnavailable,
    ParsedPage,
    TokenBucket,
    WebPreviewSettings,
    WebPreviewSource,
    parse_page,
    parse_views,
)

FIXTURES = Path(__file__).parent / "fixtures" / "tme"
CHANNEL = "frontline_appeals"
PAGE1_IDS = [*range(4101, 4114), *range(4115, 4122)]
PAGE2_IDS = [i for i in range(4083, 4101) if i != 4090]
MEDIA_IDS = {4102, 4103, 4111, 4113, 4115, 4118}
FIXED_NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page1() -> ParsedPage:
    return parse_page(fixture("channel_page.html"), CHANNEL)


def by_id(page: ParsedPage) -> dict[int, IncomingPost]:
    return {p.post.message_id: p.post for p in page.posts}


# --------------------------------------------------------------------------- parsing


def test_channel_page_has_its_twenty_posts_oldest_first(page1: ParsedPage) -> None:
    assert page1.is_channel_page
    assert page1.title == "Звернення з фронту | Appeals from the front"
    assert [p.post.message_id for p in page1.posts] == PAGE1_IDS
    assert page1.before == 4101 and page1.has_more
    for parsed in page1.posts:
        post = parsed.post
        assert post.source == "web" and post.channel == CHANNEL
        assert post.channel_title == page1.title
        assert post.date.tzinfo is not None and post.date.utcoffset() == UTC.utcoffset(None)
    assert page1.posts[0].post.date == datetime(2024, 5, 20, 6, 15, 2, tzinfo=UTC)


def test_text_keeps_line_breaks_bold_and_useful_links(page1: ParsedPage) -> None:
    posts = by_id(page1)
    assert posts[4101].text == (
        "Российские солдаты, сдавайтесь!\n\n"
        "Горячая линия «Хочу жить»: звоните или пишите в чат-бот, вас встретят живыми.\n"
        "Чат-бот: @hochu_zhit_demo_bot\n"
        "Сайт: hochuzhit.example"
    )
    assert posts[4108].text == (
        "Важно: у сдающихся в плен сохраняются права по Третьей Женевской конвенции "
        "(https://ihl-databases.icrc.org/ru/ihl-treaties/gciii-1949). Оригинал: https://news.example.org/doc\n"
        "Перешлите это сообщение знакомым военным."
    )
    assert posts[4112].text == "Новини дня #новини #полонені\nДжерело: @ukr_pow_hq_demo"
    assert posts[4116].text.endswith("напишите на poisk@example.org.")
    assert posts[4110].text.startswith("Ukraine's Coordination Headquarters")
    assert '"I Want to Live"' in posts[4120].text
    assert posts[4119].text.splitlines() == [
        "Що робити, якщо ви потрапили в полон:",
        "1. Не чиніть опору.",
        "2. Назвіть ім'я та номер військового квитка.",
        "Полонені мають право на зв'язок з родиною.",
        "Джерело: Координаційний штаб",
    ]


def test_emoji_are_kept_as_characters(page1: ParsedPage) -> None:
    assert by_id(page1)[4107].text == (
        "🇺🇦 Слава Україні! Збір на дрони для бригади закрито 🔥💪\nДякуємо кожному, хто долучився ❤"
    )


def test_reply_quote_does_not_leak_into_the_text(page1: ParsedPage) -> None:
    post = by_id(page1)[4105]
    assert post.text == "Оновлення: лінія працює цілодобово, також через WhatsApp і Signal."
    assert post.reply_to == 4101


def test_link_preview_does_not_leak_into_the_text(page1: ParsedPage) -> None:
    post = by_id(page1)[4106]
    assert post.text == (
        "Подробнее о гарантиях для сдавшихся в плен: читать (https://news.example.org/geneva-guarantees)"
    )
    assert not post.has_media  # the preview's picture belongs to the linked site


def test_media_posts_photo_video_document_album_sticker_and_too_big(page1: ParsedPage) -> None:
    posts = by_id(page1)
    assert {i for i, p in posts.items() if p.has_media} == MEDIA_IDS
    assert posts[4102].text.startswith("Сьогодні вранці")  # a photo's caption is its text
    assert posts[4103].text == "Звернення полоненого до матері (повне відео, 1,2 ГБ)"  # "Media is too big"
    assert posts[4118].text == ""  # a sticker alone


def test_forwarded_views_and_edited(page1: ParsedPage) -> None:
    posts = by_id(page1)
    assert posts[4104].forwarded_from == "Хочу жить | I want to live"
    assert [i for i, p in posts.items() if p.forwarded_from] == [4104]
    assert posts[4112].views == 956
    assert posts[4121].views == 1200
    assert posts[4113].views == 27_000
    assert posts[4115].views == 3_400_000
    assert [p.post.message_id for p in page1.posts if p.edited] == [4109]


def test_older_page_uses_min_id_cursor_and_skips_service_messages() -> None:
    page = parse_page(fixture("channel_page2.html"), CHANNEL)
    assert [p.post.message_id for p in page.posts] == PAGE2_IDS
    assert page.skipped_service == 1  # "Channel created"
    assert page.before == 4082 and not page.has_more  # the data-after link is not a cursor
    assert by_id(page)[4093].forwarded_from == "Координаційний штаб"


@pytest.mark.parametrize(
    ("name", "reason_part"),
    [("contact_page.html", "no public channel"), ("no_preview.html", "without a public web preview")],
)
def test_pages_without_history_are_not_channel_pages(name: str, reason_part: str) -> None:
    page = parse_page(fixture(name), "Some_Channel")
    assert not page.is_channel_page
    assert page.posts == () and page.before is None
    assert page.unavailable_reason is not None and reason_part in page.unavailable_reason
    assert "@some_channel" in page.unavailable_reason


def test_empty_history_is_a_channel_page_without_posts() -> None:
    page = parse_page(fixture("channel_empty.html"), CHANNEL)
    assert page.is_channel_page and page.posts == () and page.before is None


def test_a_broken_post_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    broken = (
        fixture("channel_page.html")
        .replace('datetime="2024-05-21T11:45:12+00:00"', 'datetime="yesterday"')
        .replace(f'data-post="{CHANNEL}/4116"', f'data-post="{CHANNEL}/oops"')
    )
    with caplog.at_level(logging.WARNING, logger="bot.sources.webpreview"):
        page = parse_page(broken, "FrontLine_Appeals")
    assert len(page.posts) == 18 and page.failed == 2
    assert 4110 not in by_id(page)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"{CHANNEL}/4110" in messages and f"{CHANNEL}/oops" in messages and f"t.me/s/{CHANNEL}" in messages


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("956", 956), ("1.2K", 1200), ("12.5K", 12_500), ("3.4M", 3_400_000), ("27K", 27_000), ("", None), ("x", None)],
)
def test_parse_views(raw: str, expected: int | None) -> None:
    assert parse_views(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["@FrontLine_Appeals", "frontline_appeals", "https://t.me/s/FrontLine_Appeals", "t.me/frontline_appeals/4101"],
)
def test_channel_names_are_normalised(raw: str) -> None:
    assert channel_name(raw) == CHANNEL


# --------------------------------------------------------------------------- a local t.me


class MemorySink:
    """An in-memory PostSink: records batches and fetch reports."""

    def __init__(self, last: dict[str, int] | None = None) -> None:
        self.batches: list[list[IncomingPost]] = []
        self.last = dict(last or {})
        self.fetches: list[tuple[str, bool, str | None]] = []

    @property
    def posts(self) -> list[IncomingPost]:
        return [p for batch in self.batches for p in batch]

    async def ingest(self, posts: Sequence[IncomingPost]) -> None:
        self.batches.append(list(posts))

    async def last_message_id(self, channel: str) -> int | None:
        return self.last.get(channel)

    async def record_fetch(
        self, channel: str, *, ok: bool, error: str | None = None, when: datetime | None = None
    ) -> None:
        self.fetches.append((channel, ok, error))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse] | web.StreamResponse]


@dataclass
class FakeTme:
    """Routes /s/<name> to per-channel handlers; unknown names redirect to a contact page."""

    base_url: str = ""
    channels: dict[str, Handler] = field(default_factory=dict)
    log: list[tuple[float, str]] = field(default_factory=list)

    def requests_for(self, fragment: str) -> list[tuple[float, str]]:
        return [entry for entry in self.log if fragment in entry[1]]

    async def preview(self, request: web.Request) -> web.StreamResponse:
        self.log.append((time.monotonic(), request.path_qs))
        handler = self.channels.get(request.match_info["name"])
        if handler is None:
            raise web.HTTPFound(f"/{request.match_info['name']}")
        result = handler(request)
        return await result if isinstance(result, Awaitable) else result

    async def contact(self, request: web.Request) -> web.StreamResponse:
        self.log.append((time.monotonic(), request.path_qs))
        name = request.match_info["name"]
        page = "no_preview.html" if name == "zakrytyi_kanal_demo" else "contact_page.html"
        return web.Response(text=fixture(page), content_type="text/html")


def html_response(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/html")


def serve_fixture_channel(request: web.Request) -> web.Response:
    """frontline_appeals as t.me would serve it: newest page, ?before=4101, then nothing older."""
    before = request.query.get("before")
    if before is None:
        return html_response(fixture("channel_page.html"))
    if int(before) == 4101:
        return html_response(fixture("channel_page2.html"))
    return html_response(fixture("channel_empty.html"))


POST_TEMPLATE = (
    '<div class="tgme_widget_message_wrap js-widget_message_wrap">'
    '<div class="tgme_widget_message js-widget_message" data-post="{name}/{mid}">'
    '<div class="tgme_widget_message_bubble">'
    '<div class="tgme_widget_message_text js-message_text" dir="auto">{text}</div>'
    '<div class="tgme_widget_message_footer"><div class="tgme_widget_message_info">'
    '<span class="tgme_widget_message_views">1</span><span class="tgme_widget_message_meta">'
    '<a class="tgme_widget_message_date" href="https://t.me/{name}/{mid}">'
    '<time datetime="2024-05-20T10:00:00+00:00" class="time">10:00</time></a></span>'
    "</div></div></div></div></div>"
)


def render_page(name: str, posts: Sequence[tuple[int, str]]) -> str:
    """A minimal page in t.me/s markup for generated channels (newest 20 posts)."""
    shown = list(posts)[-20:]
    more = ""
    if len(posts) > len(shown):
        first = shown[0][0]
        more = (
            f'<a href="/s/{name}?before={first}" class="tme_messages_more js-messages_more" data-before="{first}"></a>'
        )
    items = "".join(POST_TEMPLATE.format(name=name, mid=mid, text=html.escape(text)) for mid, text in shown)
    return (
        f'<html><body><main class="tgme_main"><section class="tgme_channel_history js-message_history">{more}{items}'
        "</section></main></body></html>"
    )


@pytest.fixture
async def tme() -> Any:
    server = FakeTme()
    app = web.Application()
    app.router.add_get("/s/{name}", server.preview)
    app.router.add_get("/{name}", server.contact)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base_url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


def settings(server: FakeTme, **overrides: Any) -> WebPreviewSettings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "min_interval": 0.05,
        "initial_interval": 0.05,
        "max_interval": 0.4,
        "requests_per_second": 200.0,
        "burst": 10,
        "base_backoff": 0.2,
        "max_backoff": 2.0,
        "total_timeout": 5.0,
        "jitter": 0.0,
    }
    values.update(overrides)
    return WebPreviewSettings(**values)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def run_for(source: WebPreviewSource, channels: list[str], until: Callable[[], bool], within: float) -> None:
    task = asyncio.create_task(source.run(lambda: channels))
    try:
        await wait_until(until, within)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):  # a run() that ignores cancel fails here instead of hanging
                await task


# --------------------------------------------------------------------------- fetching


async def test_backfill_walks_before_pages_to_the_start(tme: FakeTme) -> None:
    tme.channels[CHANNEL] = serve_fixture_channel
    sink = MemorySink()
    async with WebPreviewSource(sink, settings(tme)) as source:
        delivered = await source.backfill("@FrontLine_Appeals", since_id=None, limit=1000)
    assert delivered == len(PAGE1_IDS) + len(PAGE2_IDS)
    assert [p.message_id for p in sink.posts] == PAGE2_IDS + PAGE1_IDS  # oldest first, one batch
    assert [path for _, path in tme.log] == [
        f"/s/{CHANNEL}",
        f"/s/{CHANNEL}?before=4101",
        f"/s/{CHANNEL}?before=4082",
    ]


async def test_backfill_stops_at_since_id_and_at_limit(tme: FakeTme) -> None:
    tme.channels[CHANNEL] = serve_fixture_channel
    sink = MemorySink()
    async with WebPreviewSource(sink, settings(tme)) as source:
        assert await source.backfill(CHANNEL, since_id=4095) == 25
        assert [p.message_id for p in sink.posts] == [4096, 4097, 4098, 4099, 4100, *PAGE1_IDS]
        assert len(tme.log) == 2  # the page holding 4095 ends the walk
        sink.batches.clear()
        assert await source.backfill(CHANNEL, limit=22) == 22
        assert [p.message_id for p in sink.posts] == [4099, 4100, *PAGE1_IDS]  # the newest 22


async def test_poll_delivers_new_posts_with_media_flags_and_fills_gaps(tme: FakeTme) -> None:
    tme.channels[CHANNEL] = serve_fixture_channel
    sink = MemorySink(last={CHANNEL: 4095})
    async with WebPreviewSource(sink, settings(tme)) as source:
        result = await source.poll_once(CHANNEL)
        assert (result.new, result.edited, result.requests, result.last_message_id) == (25, 0, 2, 4121)
        delivered = {p.message_id: p for p in sink.posts}
        assert {i for i, p in delivered.items() if p.has_media} == MEDIA_IDS
        assert [p.message_id for p in sink.posts] == sorted(delivered)
        again = await source.poll_once(CHANNEL)
        assert (again.new, again.edited, again.requests) == (0, 0, 1)
    assert sink.fetches == [(CHANNEL, True, None), (CHANNEL, True, None)]


async def test_edit_between_two_polls_is_redelivered_with_edit_date(tme: FakeTme) -> None:
    state = {"edited": False}
    old = "Не передавайте окупантам дані про себе."
    new = "Не передавайте окупантам жодних даних про себе та рідних."

    def handler(request: web.Request) -> web.Response:
        page = fixture("channel_page.html")
        return html_response(page.replace(old, new) if state["edited"] else page)

    tme.channels[CHANNEL] = handler
    sink = MemorySink()
    async with WebPreviewSource(sink, settings(tme, backfill_limit=20), now=lambda: FIXED_NOW) as source:
        first = await source.poll_once(CHANNEL)
        assert first.new == 20 and all(p.edit_date is None for p in sink.posts)
        state["edited"] = True
        second = await source.poll_once(CHANNEL)
        assert (second.new, second.edited) == (0, 1)
        edited = sink.batches[-1]
        assert [(p.message_id, p.edit_date) for p in edited] == [(4117, FIXED_NOW)]
        assert new in edited[0].text and old not in edited[0].text
        third = await source.poll_once(CHANNEL)
        assert (third.new, third.edited) == (0, 0)
    assert len(sink.batches) == 2


async def test_missing_channel_is_reported_once(tme: FakeTme) -> None:
    sink = MemorySink()
    told: list[tuple[str, str]] = []
    async with WebPreviewSource(sink, settings(tme), on_unavailable=lambda c, r: told.append((c, r))) as source:
        for _ in range(3):
            with pytest.raises(ChannelUnavailable) as excinfo:
                await source.poll_once("no_such_channel_demo")
            assert "no public channel @no_such_channel_demo" in excinfo.value.reason
        with pytest.raises(ChannelUnavailable, match="without a public web preview"):
            await source.poll_once("zakrytyi_kanal_demo")
        with pytest.raises(ChannelUnavailable, match="not a public channel username"):
            await source.poll_once("c:2048611355")
    assert [c for c, _ in told] == ["no_such_channel_demo", "zakrytyi_kanal_demo", "c:2048611355"]
    assert [(c, ok) for c, ok, _ in sink.fetches] == [(c, False) for c, _ in told]
    # The contact page is read once, for the reason; later polls stop at the redirect.
    assert [path for _, path in tme.log if "no_such" in path] == [
        "/s/no_such_channel_demo",
        "/no_such_channel_demo",
        "/s/no_such_channel_demo",
        "/s/no_such_channel_demo",
    ]
    assert sink.posts == []


async def test_scheduler_reports_a_missing_channel_once_while_rechecking(tme: FakeTme) -> None:
    tme.channels[CHANNEL] = serve_fixture_channel
    sink = MemorySink()
    told: list[str] = []

    async def on_unavailable(channel: str, reason: str) -> None:
        told.append(channel)

    source = WebPreviewSource(sink, settings(tme, unavailable_recheck=0.05), on_unavailable=on_unavailable)
    async with source:
        await run_for(
            source,
            [CHANNEL, "no_such_channel_demo"],
            lambda: len(tme.requests_for("/s/no_such_channel_demo")) >= 4,
            within=5,
        )
    assert told == ["no_such_channel_demo"]
    reports = [f for f in sink.fetches if f[0] == "no_such_channel_demo"]
    assert len(reports) == 1 and reports[0][1] is False
    assert reports[0][2] == source.status("no_such_channel_demo").unavailable
    assert {p.message_id for p in sink.posts} >= set(PAGE1_IDS)


async def test_429_honours_retry_after_then_succeeds(tme: FakeTme) -> None:
    calls = {"n": 0}

    def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "1"})
        return html_response(fixture("channel_page.html"))

    tme.channels[CHANNEL] = handler
    sink = MemorySink(last={CHANNEL: 4120})
    async with WebPreviewSource(sink, settings(tme, base_backoff=0.05)) as source:
        await run_for(source, [CHANNEL], lambda: bool(sink.posts), within=5)
    (t1, _), (t2, _) = tme.log[:2]
    assert t2 - t1 >= 0.95
    assert [p.message_id for p in sink.posts] == [4121]
    assert sink.fetches[0][1] is False and "429" in (sink.fetches[0][2] or "")
    assert sink.fetches[1] == (CHANNEL, True, None)


async def test_500_backs_off_exponentially_then_succeeds(tme: FakeTme) -> None:
    calls = {"n": 0}

    def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return web.Response(status=500, text="Internal Server Error")
        return html_response(fixture("channel_page.html"))

    tme.channels[CHANNEL] = handler
    sink = MemorySink(last={CHANNEL: 4120})
    async with WebPreviewSource(sink, settings(tme, base_backoff=0.2)) as source:
        await run_for(source, [CHANNEL], lambda: bool(sink.posts), within=5)
        assert source.status(CHANNEL).failures == 0
    times = [t for t, _ in tme.log[:3]]
    assert times[1] - times[0] >= 0.19  # first backoff: base
    assert times[2] - times[1] >= 0.39  # second: doubled
    assert [ok for _, ok, _ in sink.fetches[:3]] == [False, False, True]
    assert "HTTP 500" in (sink.fetches[0][2] or "")


async def test_global_request_budget_holds_across_channels(tme: FakeTme) -> None:
    names = [f"budget_chan_{i:02d}" for i in range(30)]
    for name in names:
        tme.channels[name] = lambda request: html_response(fixture("channel_page.html"))
    sink = MemorySink(last=dict.fromkeys(names, 4121))
    rate, burst, duration = 10.0, 2, 1.5
    source = WebPreviewSource(sink, settings(tme, requests_per_second=rate, burst=burst, max_concurrency=8))
    async with source:
        task = asyncio.create_task(source.run(lambda: names))
        await asyncio.sleep(duration)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await task
    times = [t for t, _ in tme.log]
    assert len(times) >= 8  # it did work...
    assert len(times) <= burst + rate * duration + 1  # ...within the budget
    window = 0.5
    worst = max(sum(1 for u in times if t <= u < t + window) for t in times)
    assert worst <= burst + rate * window + 1


async def test_token_bucket_with_a_fake_clock() -> None:
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(5.0, burst=5, clock=lambda: now[0], sleep=fake_sleep)
    stamps = []
    for _ in range(25):
        await bucket.acquire()
        stamps.append(now[0])
    assert stamps[:5] == [0.0] * 5  # the burst
    assert stamps[-1] == pytest.approx(4.0)  # then 5 per second
    bucket.pause(10)
    await bucket.acquire()
    assert now[0] >= 14.0


async def test_interval_adapts_to_channel_activity(tme: FakeTme) -> None:
    posts = [(i, f"post {i}") for i in range(1, 6)]
    tme.channels["busychan"] = lambda request: html_response(render_page("busychan", posts))
    sink = MemorySink()
    cfg = settings(tme, min_interval=1.0, initial_interval=8.0, max_interval=32.0)
    async with WebPreviewSource(sink, cfg) as source:
        intervals = [await source.poll_and_schedule("busychan")]  # 5 new posts
        for _ in range(4):  # quiet
            intervals.append(await source.poll_and_schedule("busychan"))
        for step in range(5):  # busy
            posts.append((100 + step, f"new {step}"))
            intervals.append(await source.poll_and_schedule("busychan"))
        assert source.status("busychan").interval == 1.0
    assert intervals == [4.0, 8.0, 16.0, 32.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0]
    assert [p.message_id for p in sink.posts] == [1, 2, 3, 4, 5, 100, 101, 102, 103, 104]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        WebPreviewSettings(min_interval=10, initial_interval=5)
    with pytest.raises(ValueError):
        WebPreviewSettings(requests_per_second=0)


async def test_a_gap_larger_than_the_limit_keeps_the_newest_and_says_so(
    tme: FakeTme, caplog: pytest.LogCaptureFixture
) -> None:
    tme.channels[CHANNEL] = serve_fixture_channel
    sink = MemorySink(last={CHANNEL: 4083})
    async with WebPreviewSource(sink, settings(tme, backfill_limit=25)) as source:
        with caplog.at_level(logging.WARNING, logger="bot.sources.webpreview"):
            result = await source.poll_once(CHANNEL)
    assert result.new == 25 and [p.message_id for p in sink.posts][:3] == [4096, 4097, 4098]
    assert "older ones are skipped" in caplog.text
