"""The access and hardening pieces on their own (no Telegram): text cleaning, highlights, CSV cells, the
channel-approval codec and gate, admin verdicts, rate limits, config keys, charts off the event loop."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from bot.access import ApprovedChannelsOnly, PerUserInterval, SeenOnce
from bot.callbacks import (
    ChannelApproval,
    DigestOriginals,
    Feedback,
    Mute,
    SearchPage,
    SettingsChoice,
    SubscriptionChoice,
)
from bot.charts import appeals_chart
from bot.config import AccessConfig, ConfigError, load_config
from bot.domain import IncomingPost
from bot.export import csv_cell, write_both, write_csv
from bot.messages import clean_text, html_text
from bot.storage import SearchQuery, Storage
from handlers.search import highlight
from models.taxonomy import Classification

# -- text that goes into HTML --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "clean"), [
    ("plain", "plain"),
    ("a\x00b\x01c\x02d\x03e\x07f\x1bg\x7fh\x85i\x9fj", "abcdefghij"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("windows\r\nmac\rline\u2028para\u2029", "windows\nmac\nline\npara\n"),
    ("lone \ud800 surrogate \ufffe\uffff", "lone  surrogate "),
    ("Сдавайтесь 🇺🇦 — «так»", "Сдавайтесь 🇺🇦 — «так»"),
])
def test_clean_text_strips_control_characters_only(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_html_text_cleans_then_escapes() -> None:
    assert html_text('<b>"x"</b> & \x02y\x03') == "&lt;b&gt;&quot;x&quot;&lt;/b&gt; &amp; y"


@pytest.mark.parametrize(("snippet", "html"), [
    ("a \x02b\x03 c", "a <b>b</b> c"),
    ("\x03stray close \x02open", "stray close <b>open</b>"),
    ("\x02\x02twice\x03\x03", "<b>twice</b>"),
    ("<i>\x02&\x03</i>", "&lt;i&gt;<b>&amp;</b>&lt;/i&gt;"),
    ("\x02\x03", ""),
    ("x\x00\x01y", "xy"),
])
def test_highlight_always_gives_balanced_html(snippet: str, html: str) -> None:
    out = highlight(snippet)
    assert out == html
    assert out.count("<b>") == out.count("</b>")
    assert not re.search("[\x00-\x08\x0b-\x1f]", out)


# -- CSV ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"), ("+380", "'+380"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("\rx", "'\rx"), ("a=b", "a=b"), ("", ""), (-0.5, -0.5), (3, 3), (None, None), (True, True),
])
def test_csv_cells_that_start_like_formulas_get_a_quote(value: object, cell: object) -> None:
    assert csv_cell(value) == cell


def _row(text: str) -> dict[str, object]:
    return {"permalink": "https://t.me/x/1", "channel": "x", "date": "2026-01-01T00:00:00+00:00", "language": "ru",
            "appeal": True, "labels": ["surrender"], "addressee": None, "score": 0.9, "text": text,
            "content_hash": "h", "first_seen": None, "edit_history": [{"text": text}], "story_id": None,
            "repost_count": 0}


async def test_csv_writers_neutralise_and_json_keeps_the_text() -> None:
    rows = [_row("=cmd|' /C calc'!A0"), _row("обычный текст")]

    async def agen() -> AsyncIterator[dict[str, object]]:
        for r in rows:
            yield r

    out = io.StringIO()
    assert await write_csv(agen(), out) == 2
    first = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert first["text"] == "'=cmd|' /C calc'!A0"
    c, j = io.StringIO(), io.StringIO()
    assert write_both(rows, c, j) == 2
    assert next(csv.DictReader(io.StringIO(c.getvalue())))["text"] == "'=cmd|' /C calc'!A0"
    assert '"=cmd|' in j.getvalue()


# -- callback codecs -----------------------------------------------------------------------------------------


def test_channel_approval_codec_round_trips_and_is_nobody_elses() -> None:
    for button, data in ((ChannelApproval("ok", 12), "chn:ok:12"), (ChannelApproval("no", 7), "chn:no:7")):
        assert button.encode() == data and ChannelApproval.decode(data) == button
        for other in (DigestOriginals, Feedback, Mute, SearchPage, SettingsChoice, SubscriptionChoice):
            assert re.match(other.PATTERN, data) is None
    for bad in ("chn:ok:", "chn:yes:1", "chn:ok:-1", "chn:ok:1" + "0" * 18, "chn:ok:1\n"):
        with pytest.raises(ValueError):
            ChannelApproval.decode(bad)


@pytest.mark.parametrize("data", [
    "fb:ok:" + "9" * 19, "mute:" + "9" * 19, "s:tok:" + "9" * 7, "dg:" + "9" * 13 + ":1",
])
def test_numbers_too_big_for_sqlite_match_no_codec(data: str) -> None:
    for codec in (Feedback, Mute, SearchPage, DigestOriginals):
        assert re.match(codec.PATTERN, data) is None


# -- storage: approval, the alert gate, digests, admin verdicts, the export count --------------------------------


def _cls(appeal: bool) -> Classification:
    return Classification(appeal=appeal, score=0.9 if appeal else 0.1, labels=("surrender",) if appeal else (),
                          label_scores={}, addressee=None, reasons=(), lang="ru", lang_confidence=0.9)


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    async def dispatch(self, post_ids: Sequence[int]) -> None:
        self.seen.append(list(post_ids))


async def test_posts_of_pending_channels_pass_the_gate_only_when_approved_and_seen_after(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "a.sqlite3", channels_need_approval=True)
    await storage.open()
    try:
        now = datetime.now(UTC)
        stored = await storage.store_posts([
            IncomingPost("strangers", 1, "Сдавайтесь!", now, "bot"),
            IncomingPost("forwarded_from", 1, "Сдавайтесь!", now, "forward"),
            IncomingPost("watched_web", 1, "Сдавайтесь!", now, "web"),
            IncomingPost("imported", 1, "Сдавайтесь!", now, "export"),
        ])
        ids = [r.post_id for r in stored]
        await storage.save_classifications([(i, _cls(True), np.ones(4, dtype=np.float32)) for i in ids])
        approvals = {k: (await storage.channel_access(key=k)).approval  # type: ignore[union-attr]
                     for k in ("strangers", "forwarded_from", "watched_web", "imported")}
        assert approvals == {"strangers": "pending", "forwarded_from": "pending", "watched_web": "approved",
                             "imported": "approved"}
        inner = _Recorder()
        gate = ApprovedChannelsOnly(storage, inner)
        await gate.dispatch(ids)
        assert inner.seen == [ids[2:]]
        counts = await storage.digest_counts(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        assert (counts["appeals"], counts["posts"]) == (2, 2)

        # approved now: the post stored while it waited stays unalerted, a new one passes; digests count both
        strangers = await storage.channel_access(key="strangers")
        assert strangers is not None
        await storage.set_channel_approval(strangers.id, "approved", by=1)
        await asyncio.sleep(1.05)
        [later] = await storage.store_posts([IncomingPost("strangers", 2, "Сдавайтесь!", now, "bot")])
        inner.seen.clear()
        await gate.dispatch([ids[0], later.post_id])
        assert inner.seen == [[later.post_id]]
        counts = await storage.digest_counts(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        assert counts["appeals"] == 3
        # an explicit decision sticks; rejecting unwatches
        await storage.set_channel_approval(strangers.id, "rejected", by=1)
        after = await storage.channel_access(key="strangers")
        assert after is not None and (after.approval, after.watched) == ("rejected", False)
        inner.seen.clear()
        await gate.dispatch([later.post_id])
        assert inner.seen == []
        # ensure_channel without approval= leaves a decision alone
        await storage.ensure_channel("strangers", source="bot", watched=True)
        assert (await storage.channel_access(key="strangers")).approval == "rejected"  # type: ignore[union-attr]
        assert await storage.count_export_rows(SearchQuery(), limit=100) == 5
        assert await storage.count_export_rows(SearchQuery(), limit=3) == 3
        assert len(list(storage.export_rows_blocking(SearchQuery(), limit=2))) == 2
        assert [r["permalink"] for r in storage.export_rows_blocking(SearchQuery())] == \
            [r["permalink"] async for r in storage.export_rows(SearchQuery())]
    finally:
        await storage.close()


async def test_without_admins_every_channel_is_approved_as_before(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.sqlite3")
    await storage.open()
    try:
        [r] = await storage.store_posts([IncomingPost("anyone", 1, "x", datetime.now(UTC), "bot")])
        assert await storage.alertable_posts([r.post_id]) == [r.post_id]
    finally:
        await storage.close()


async def test_an_admins_verdict_comes_last_whatever_its_time(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "c.sqlite3")
    await storage.open()
    try:
        [r] = await storage.store_posts([IncomingPost("chan", 1, "x", datetime.now(UTC), "bot")])
        await storage.add_feedback(1, 1, r.post_id, "correct")
        await storage.add_feedback(9, 9, r.post_id, "relabel", ["pow"], by_admin=True)
        await storage.add_feedback(2, 2, r.post_id, "not_appeal")
        rows = [(x["verdict"], x["by_admin"]) for x in await storage.feedback_rows()]
        assert rows == [("correct", 0), ("not_appeal", 0), ("relabel", 1)]
    finally:
        await storage.close()


# -- rate limits, config --------------------------------------------------------------------------------------


def test_per_user_interval_and_seen_once() -> None:
    limits = PerUserInterval(size=2)
    assert limits.wait(1, 60, now=100.0) == 0
    limits.take(1, now=100.0)
    assert limits.wait(1, 60, now=130.0) == 30.0
    assert limits.wait(1, 60, now=160.0) == 0
    assert limits.wait(2, 60, now=130.0) == 0
    limits.take(2, now=1.0)
    limits.take(3, now=1.0)
    assert limits.wait(1, 60, now=101.0) == 0  # forgotten: only the newest two are kept
    seen = SeenOnce(size=2)
    assert seen.first_time(5) and not seen.first_time(5)


def test_access_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[access]\nadmins = [1]\nexport = "allowed"\nexport_max_rows = 500\nexport_interval = 0\n',
                    encoding="utf-8")
    access = load_config(path, env={}).access
    assert (access.export, access.export_max_rows, access.export_interval) == ("allowed", 500, 0.0)
    assert access.may_export(1) and access.may_export(2)
    assert AccessConfig(admins=(1,)).may_export(1) and not AccessConfig(admins=(1,)).may_export(2)
    private = AccessConfig(admins=(1,), allowed_users=(2,), export="allowed")
    assert private.may_export(2) and not private.may_export(3)
    path.write_text('[access]\nexport = "everyone"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[access\] export"):
        load_config(path, env={})


# -- charts off the event loop ----------------------------------------------------------------------------------


async def test_charts_render_in_worker_threads_side_by_side() -> None:
    per_day = [("2026-03-01", "surrender", 3), ("2026-03-02", "pow", 1)]
    one = appeals_chart(per_day, [("a", 4)], "one")
    pngs = await asyncio.gather(*(asyncio.to_thread(appeals_chart, per_day, [("a", 4)], "one") for _ in range(4)))
    assert all(p == one for p in pngs)
