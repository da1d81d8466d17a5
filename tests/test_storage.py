"""Storage over real SQLite files: exactly-once posts, edits, classifications, search, digests,
migrations, archives, stories, embeddings and alert claims. No model, no Telegram."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
import pytest

from bot.domain import IncomingPost
from bot.storage import ArchivedPost, SearchQuery, Storage, content_hash
from bot.storage.pg_schema import PG_MIGRATIONS
from bot.storage.schema import MIGRATIONS, _m1_initial
from models.taxonomy import Classification

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def incoming(channel: str = "chan_one", mid: int = 1, text: str = "Сдавайтесь в плен, солдаты", *,
             date: datetime = T0, edit_date: datetime | None = None, views: int | None = None) -> IncomingPost:
    return IncomingPost(channel=channel, message_id=mid, text=text, date=date, source="web",
                        edit_date=edit_date, views=views)


def classification(labels: tuple[str, ...] = ("surrender",), *, score: float = 0.9, lang: str = "ru",
                   appeal: bool = True, addressee: str | None = "ru_military") -> Classification:
    return Classification(appeal=appeal, score=score, labels=labels, label_scores={lbl: score for lbl in labels},
                          addressee=addressee, reasons=("здавайтесь",), lang=lang, lang_confidence=0.99)


@pytest.fixture
async def storage(make_storage: Callable[..., Storage]) -> AsyncIterator[Storage]:
    s = make_storage("db.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def scalar(s: Storage, sql: str, args: tuple[Any, ...] = ()) -> Any:
    rows = list(await s.db.execute_fetchall(sql, args))
    return rows[0][0]


async def store_classified(s: Storage, channel: str, mid: int, text: str, c: Classification, *,
                           date: datetime = T0, vec: np.ndarray | None = None) -> int:
    pid = (await s.store_post(incoming(channel, mid, text, date=date))).post_id
    await s.save_classifications([(pid, c, vec)])
    return pid


async def export_all(s: Storage, q: SearchQuery | None = None) -> list[dict[str, Any]]:
    return [row async for row in s.export_rows(q or SearchQuery())]


# -- exactly once, edits ----------------------------------------------------------------------


async def test_a_post_is_stored_once_per_channel_and_message_id(storage: Storage) -> None:
    first = await storage.store_post(incoming("chan_one", 1))
    again = await storage.store_post(incoming("chan_one", 1))
    assert first.is_new and not first.edited
    assert again.post_id == first.post_id and not again.is_new and not again.edited
    other_mid = await storage.store_post(incoming("chan_one", 2))
    other_channel = await storage.store_post(incoming("chan_two", 1))
    assert other_mid.is_new and other_channel.is_new
    assert len({first.post_id, other_mid.post_id, other_channel.post_id}) == 3
    assert await storage.count_posts() == 3
    assert len(await storage.post_edits(first.post_id)) == 1  # the redelivery wrote no history


async def test_a_batch_with_the_same_delivery_twice_stores_it_once(storage: Storage) -> None:
    results = await storage.store_posts([incoming("chan_one", 7), incoming("chan_one", 7)])
    assert [r.is_new for r in results] == [True, False]
    assert results[0].post_id == results[1].post_id
    assert await storage.count_posts() == 1
    assert await storage.last_message_id("chan_one") == 7


async def test_a_redelivery_updates_views_without_an_edit(storage: Storage) -> None:
    pid = (await storage.store_post(incoming(views=10))).post_id
    r = await storage.store_post(incoming(views=250))
    assert not r.edited
    assert await scalar(storage, "SELECT views FROM posts WHERE id=?", (pid,)) == 250


async def test_a_changed_text_is_an_edit_with_its_history_kept(storage: Storage) -> None:
    pid = (await storage.store_post(incoming(text="Первая версия обращения"))).post_id
    await storage.save_classifications([(pid, classification(), None)])
    edited_at = T0 + timedelta(minutes=5)
    r = await storage.store_post(incoming(text="Вторая версия обращения", edit_date=edited_at))
    assert r.post_id == pid and r.edited and not r.is_new
    post = await storage.get_post(pid)
    assert post is not None and post.text == "Вторая версия обращения"
    history = await storage.post_edits(pid)
    assert [h[0] for h in history] == ["Первая версия обращения", "Вторая версия обращения"]
    assert history[1][1] == edited_at
    # the edited text must be classified again
    assert (pid, "new") in await storage.unfinished_posts()
    assert await scalar(storage, "SELECT content_hash FROM posts WHERE id=?", (pid,)) == content_hash("Вторая версия обращения")
    rows = await export_all(storage)
    assert len(rows) == 1
    assert [e["text"] for e in rows[0]["edit_history"]] == ["Первая версия обращения", "Вторая версия обращения"]
    assert rows[0]["edit_history"][1]["edit_date"] == edited_at.isoformat()
    assert rows[0]["text"] == "Вторая версия обращения"


async def test_an_edit_that_leaves_the_text_unchanged_is_ignored(storage: Storage) -> None:
    pid = (await storage.store_post(incoming(text="Одно и то же"))).post_id
    await storage.set_state([pid], "done")
    r = await storage.store_post(incoming(text="Одно и то же", edit_date=T0 + timedelta(hours=1)))
    assert not r.edited and not r.is_new
    assert len(await storage.post_edits(pid)) == 1
    assert await storage.unfinished_posts() == []  # not sent back to the classifier


async def test_the_search_index_follows_an_edit(storage: Storage) -> None:
    await storage.store_post(incoming(text="Перемирие объявлено"))
    await storage.store_post(incoming(text="Капитуляция объявлена"))
    old, n_old = await storage.search(SearchQuery(words="перемирие"))
    new, n_new = await storage.search(SearchQuery(words="капитуляция"))
    assert (n_old, len(old)) == (0, 0)
    assert n_new == 1 and new[0].text == "Капитуляция объявлена"


# -- classifications --------------------------------------------------------------------------


async def test_classifications_round_trip_through_get_post_and_find_post(storage: Storage) -> None:
    pid = (await storage.store_post(incoming("chan_one", 42, "Мамы, заберите сыновей домой"))).post_id
    c = classification(("family", "surrender"), score=0.87, lang="ru", addressee="ru_families")
    vec = np.linspace(-1, 1, 16, dtype=np.float32)
    await storage.save_classifications([(pid, c, vec)])
    for post in (await storage.get_post(pid), await storage.find_post("chan_one", 42)):
        assert post is not None
        assert post.id == pid and post.channel == "chan_one" and post.message_id == 42
        assert post.appeal is True
        assert post.labels == ("family", "surrender")
        assert post.addressee == "ru_families"
        assert post.score == pytest.approx(0.87)
        assert post.lang == "ru"
        assert post.reasons == ("здавайтесь",)
        assert post.date == T0
        assert post.permalink == "https://t.me/chan_one/42"
    assert await storage.find_post("chan_two", 42) is None
    assert await storage.find_post("chan_one", 43) is None
    assert await storage.get_post(pid + 100) is None
    emb = await storage.embedding_of(pid)
    assert emb is not None and emb.dtype == np.float32
    np.testing.assert_allclose(emb, vec, atol=1e-3)


async def test_reclassifying_replaces_labels_and_search_tokens(storage: Storage) -> None:
    pid = await store_classified(storage, "chan_one", 1, "Обращение к военным", classification(("surrender",), lang="ru"))
    await storage.save_classifications([(pid, classification(("pow",), lang="uk", score=0.7), None)])
    post = await storage.get_post(pid)
    assert post is not None and post.labels == ("pow",) and post.lang == "uk"
    assert (await storage.search(SearchQuery(labels=("surrender",))))[1] == 0
    assert (await storage.search(SearchQuery(labels=("pow",), lang="uk", channel="chan_one")))[1] == 1


async def test_a_post_without_classification_reads_as_unknown(storage: Storage) -> None:
    pid = (await storage.store_post(incoming())).post_id
    post = await storage.get_post(pid)
    assert post is not None
    assert post.appeal is None and post.score is None and post.labels == () and post.addressee is None


# -- search -----------------------------------------------------------------------------------

# (words, how many of the two posts match): no token ever reaches FTS5 as syntax
HOSTILE: list[tuple[str, int]] = [
    ('" OR NEAR( *', 0),
    ("", 2),
    ("   ", 2),
    ("🙏🇺🇦🔥", 2),  # no word characters: no words
    ("AND OR NOT", 0),
    ("NEAR(a b, 3)", 0),
    ("text : x", 0),
    ("search_meta : lbsurrender", 0),  # filter tokens can't be reached through the words
    ("isappeal", 0),
    ('""""', 2),
    ("*", 2),
    ("^начало", 0),
    ("col:value {a b}", 0),
    ("a" * 10_000, 0),
    ("сдавайтесь " * 1_000, 1),
    ("\x00\x01\x02", 2),
    ("'; DROP TABLE posts; --", 0),
]


@pytest.mark.parametrize(("words", "expected"), HOSTILE, ids=range(len(HOSTILE)))
async def test_search_never_raises_on_hostile_words(storage: Storage, words: str, expected: int) -> None:
    await store_classified(storage, "chan_one", 1, "Сдавайтесь в плен, солдаты", classification())
    await store_classified(storage, "chan_two", 2, "Weather in Kharkiv: sleet", classification((), appeal=False, lang="en"))
    posts, total = await storage.search(SearchQuery(words=words), limit=5)
    assert total == len(posts) == expected
    filtered, n = await storage.search(SearchQuery(words=words, lang="ru", labels=("surrender",), appeals_only=True))
    assert n == len(filtered) == min(expected, 1)
    assert len([r async for r in storage.export_rows(SearchQuery(words=words))]) == expected
    assert await storage.count_posts() == 2  # nothing was dropped


async def test_search_treats_fts_operators_as_words(storage: Storage) -> None:
    await storage.store_post(incoming(mid=1, text="Plain text without operators"))
    await storage.store_post(incoming(mid=2, text="They said NEAR the river OR the bridge"))
    posts, total = await storage.search(SearchQuery(words="NEAR OR"))
    assert total == 1 and posts[0].message_id == 2


async def test_search_with_no_words_and_no_filters_lists_newest_first(storage: Storage) -> None:
    for i in range(3):
        await storage.store_post(incoming(mid=i + 1, text=f"пост {i}", date=T0 + timedelta(hours=i)))
    posts, total = await storage.search(SearchQuery(), limit=2)
    assert total == 3
    assert [p.message_id for p in posts] == [3, 2]
    page2, _ = await storage.search(SearchQuery(), limit=2, offset=2)
    assert [p.message_id for p in page2] == [1]


async def test_search_matches_cyrillic_case_and_inflection(storage: Storage) -> None:
    await storage.store_post(incoming(mid=1, text="Оголошено АМНІСТІЮ для тих, хто здається"))
    await storage.store_post(incoming(mid=2, text="Погода у Харкові"))
    posts, total = await storage.search(SearchQuery(words="амністія"))
    assert total == 1 and posts[0].message_id == 1
    assert posts[0].snippet is not None and "\x02" in posts[0].snippet  # the match is highlighted


@pytest.fixture
async def three_appeals(storage: Storage) -> dict[str, int]:
    """A: ru surrender @chan_one day 1; B: uk family @chan_two day 2; C: en pow @chan_one day 3; D: not an appeal."""
    return {
        "A": await store_classified(storage, "chan_one", 1, "Сдавайтесь, обращение к солдатам",
                                    classification(("surrender",), lang="ru"), date=T0),
        "B": await store_classified(storage, "chan_two", 1, "Звернення до родин солдатів",
                                    classification(("family",), lang="uk", addressee="ru_families"),
                                    date=T0 + timedelta(days=1)),
        "C": await store_classified(storage, "chan_one", 2, "An appeal from prisoners of war to soldiers",
                                    classification(("pow",), lang="en"), date=T0 + timedelta(days=2)),
        "D": await store_classified(storage, "chan_two", 2, "Weather report for soldiers on leave",
                                    classification((), appeal=False, lang="en", score=0.1, addressee=None),
                                    date=T0 + timedelta(days=2)),
    }


async def found(s: Storage, q: SearchQuery) -> set[int]:
    posts, total = await s.search(q, limit=50)
    assert total == len(posts)
    return {p.id for p in posts}


async def test_search_filters_narrow_results(storage: Storage, three_appeals: dict[str, int]) -> None:
    a, b, c, d = (three_appeals[k] for k in "ABCD")
    assert await found(storage, SearchQuery(lang="uk")) == {b}
    assert await found(storage, SearchQuery(lang="en")) == {c, d}
    assert await found(storage, SearchQuery(labels=("surrender",))) == {a}
    assert await found(storage, SearchQuery(labels=("surrender", "pow"))) == {a, c}
    assert await found(storage, SearchQuery(channel="chan_two")) == {b, d}
    assert await found(storage, SearchQuery(appeals_only=True)) == {a, b, c}
    assert await found(storage, SearchQuery(since=T0 + timedelta(days=1))) == {b, c, d}
    assert await found(storage, SearchQuery(until=T0 + timedelta(days=1))) == {a}  # until is exclusive
    assert await found(storage, SearchQuery(since=T0 + timedelta(days=1), until=T0 + timedelta(days=2))) == {b}
    assert await found(storage, SearchQuery(words="soldiers", lang="en", appeals_only=True)) == {c}
    assert await found(storage, SearchQuery(words="soldiers", channel="chan_two")) == {d}
    assert await found(storage, SearchQuery(lang="ru", channel="chan_two")) == set()


async def test_a_channel_filter_does_not_match_a_channel_whose_name_contains_it(storage: Storage) -> None:
    await store_classified(storage, "chan_one", 1, "Обращение", classification())
    await store_classified(storage, "chan_one_more", 1, "Обращение", classification())
    assert len(await found(storage, SearchQuery(channel="chan_one"))) == 1
    assert len(await found(storage, SearchQuery(words="обращение", channel="chan_one_more"))) == 1


async def test_export_rows_apply_filters_and_carry_evidence(storage: Storage, three_appeals: dict[str, int]) -> None:
    rows = await export_all(storage, SearchQuery(lang="uk"))
    assert len(rows) == 1
    row = rows[0]
    assert row["channel"] == "chan_two" and row["permalink"] == "https://t.me/chan_two/1"
    assert row["labels"] == ["family"] and row["addressee"] == "ru_families" and row["appeal"] is True
    assert row["content_hash"] == content_hash("Звернення до родин солдатів")
    assert row["date"] == (T0 + timedelta(days=1)).isoformat()
    assert len(await export_all(storage)) == 4
    assert len([r async for r in storage.export_rows(SearchQuery(), chunk=1)]) == 4  # chunks are stitched
    # the worker-thread variant (its own connection) gives the same rows, edit history included
    blocking = await asyncio.to_thread(lambda: list(storage.export_rows_blocking(SearchQuery(lang="uk"), chunk=1)))
    assert blocking == rows and isinstance(blocking[0]["edit_history"], list) and len(blocking[0]["edit_history"]) == 1


# -- digests ----------------------------------------------------------------------------------


async def test_digest_counts_and_top_appeals_include_the_last_second(storage: Storage) -> None:
    until = T0 + timedelta(microseconds=500_000)  # "now" has a fraction of a second
    since = until - timedelta(days=1)
    inside = await store_classified(storage, "chan_one", 1, "Обращение в последнюю секунду",
                                    classification(("surrender", "pow")), date=T0)
    early = await store_classified(storage, "chan_two", 1, "Звернення на початку", classification(("family",), lang="uk"),
                                   date=T0 - timedelta(hours=23))
    await store_classified(storage, "chan_one", 2, "Слишком рано", classification(), date=since - timedelta(seconds=2))
    await store_classified(storage, "chan_one", 3, "Слишком поздно", classification(), date=T0 + timedelta(seconds=1))
    await store_classified(storage, "chan_one", 4, "Не обращение", classification((), appeal=False), date=T0)
    counts = await storage.digest_counts(since, until)
    assert counts["appeals"] == 2 and counts["stories"] == 2
    assert counts["posts"] == 3  # the non-appeal counts as a post
    assert dict(counts["by_label"]) == {"surrender": 1, "pow": 1, "family": 1}
    assert dict(counts["by_lang"]) == {"ru": 1, "uk": 1}
    assert dict(counts["by_channel"]) == {"chan_one": 1, "chan_two": 1}
    top = await storage.top_appeals(since, until, limit=5)
    assert {p.id for p in top} == {inside, early}


async def test_digest_period_end_is_exclusive_on_a_whole_second(storage: Storage) -> None:
    await store_classified(storage, "chan_one", 1, "Ровно на границе", classification(), date=T0)
    counts = await storage.digest_counts(T0 - timedelta(days=1), T0)
    assert counts["appeals"] == 0
    assert await storage.top_appeals(T0 - timedelta(days=1), T0) == []
    assert (await storage.digest_counts(T0, T0 + timedelta(days=1)))["appeals"] == 1


async def test_digest_counts_a_story_once(storage: Storage) -> None:
    p1 = await store_classified(storage, "chan_one", 1, "Сдавайтесь!", classification(), date=T0)
    p2 = await store_classified(storage, "chan_two", 1, "Сдавайтесь!", classification(), date=T0)
    sid = await storage.assign_story(p1, None)
    await storage.assign_story(p2, sid)
    counts = await storage.digest_counts(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert counts["appeals"] == 2 and counts["stories"] == 1
    top = await storage.top_appeals(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert [p.id for p in top] == [p1] and top[0].repost_count == 1


# -- migrations -------------------------------------------------------------------------------


async def migration_names(s: Storage) -> list[str]:
    return [str(r[0]) for r in await s.db.execute_fetchall("SELECT name FROM _migrations ORDER BY name")]


async def columns(s: Storage, table: str) -> set[str]:
    if s.backend == "postgresql":
        return {str(r[0]) for r in await s.db.execute_fetchall(
            "SELECT column_name FROM information_schema.columns WHERE table_schema=current_schema() AND table_name=?",
            (table,))}
    return {str(r[1]) for r in await s.db.execute_fetchall(f"PRAGMA table_info({table})")}


async def test_a_fresh_database_records_every_migration(storage: Storage) -> None:
    names = [name for name, _ in MIGRATIONS]
    assert names[:2] == ["0001_initial", "0002_drop_label_mask"] and names == sorted(names)
    assert [name for name, _ in PG_MIGRATIONS] == names  # one list of migrations, by name, for both engines
    assert await migration_names(storage) == names
    assert "label_mask" not in await columns(storage, "classifications")


async def test_opening_twice_applies_nothing_new(tmp_path: Path) -> None:
    path = tmp_path / "twice.sqlite3"
    s = Storage(path)
    await s.open()
    pid = (await s.store_post(incoming())).post_id
    await s.close()
    s = Storage(path)
    await s.open()
    try:
        assert await s.migrate() == []
        assert await migration_names(s) == [name for name, _ in MIGRATIONS]
        assert (await s.get_post(pid)) is not None
    finally:
        await s.close()


async def test_a_database_from_migration_0001_upgrades_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("BEGIN")  # one transaction: one fsync instead of one per statement
        await db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
        await _m1_initial(db)
        await db.execute("INSERT INTO _migrations VALUES ('0001_initial', ?)", (int(time.time()),))
        await db.execute("INSERT INTO channels(id, key, added_at) VALUES (1, 'old_channel', 0)")
        text = "Старое обращение: сдавайтесь"
        await db.execute(
            "INSERT INTO posts(id, channel_id, message_id, text, date, first_seen, source, content_hash, lang, state, "
            "search_meta) VALUES (1, 1, 77, ?, ?, ?, 'web', ?, 'ru', 'done', ?)",
            (text, int(T0.timestamp()), int(T0.timestamp()), content_hash(text),
             "ch" + b"old_channel".hex() + " lgru lbsurrender isappeal"))
        await db.execute(
            "INSERT INTO classifications(post_id, appeal, score, labels, label_scores, addressee, reasons, classified_at, "
            "label_mask) VALUES (1, 1, 0.93, '[\"surrender\"]', '{\"surrender\": 0.93}', 'ru_military', '[\"сдавайтесь\"]', 0, 1)")
        await db.execute("COMMIT")
        cols = {str(r[1]) for r in await db.execute_fetchall("PRAGMA table_info(classifications)")}
        assert "label_mask" in cols
    finally:
        await db.close()

    s = Storage(path)
    await s.open()
    try:
        assert await migration_names(s) == [name for name, _ in MIGRATIONS]
        assert "label_mask" not in await columns(s, "classifications")
        post = await s.find_post("old_channel", 77)
        assert post is not None
        assert post.appeal is True and post.labels == ("surrender",) and post.score == pytest.approx(0.93)
        assert post.addressee == "ru_military" and post.reasons == ("сдавайтесь",)
        assert await found(s, SearchQuery(words="сдавайтесь", labels=("surrender",), lang="ru")) == {post.id}
        # migration 0005 lemmatised the old post and gave it its month: other forms and date filters find it
        day = timedelta(days=1)
        assert await found(s, SearchQuery(words="сдавайся", since=T0 - day, until=T0 + day)) == {post.id}
        assert await found(s, SearchQuery(words="сдавайтесь", since=T0 + timedelta(days=40))) == set()
        # the upgraded table takes new classifications
        pid = (await s.store_post(incoming("old_channel", 78, "Новое обращение"))).post_id
        await s.save_classifications([(pid, classification(("pow",)), None)])
        new = await s.get_post(pid)
        assert new is not None and new.labels == ("pow",)
    finally:
        await s.close()


# -- archives ---------------------------------------------------------------------------------


def archived(channel: str, mid: int, text: str, *, c: Classification | None = None, lang: str | None = "ru",
             vec: np.ndarray | None = None) -> ArchivedPost:
    return ArchivedPost(channel=channel, message_id=mid, text=text, date=T0 + timedelta(minutes=mid), lang=lang,
                        classification=c, embedding=vec)


async def test_load_archive_stores_new_rows_and_skips_existing_ones(storage: Storage) -> None:
    vec = np.ones(8, dtype=np.float32)
    first = [
        archived("arch_one", 1, "Архивное обращение один", c=classification(("surrender",)), vec=vec),
        archived("arch_one", 2, "Архивный пост без классификации"),
        archived("arch_two", 1, "Архівне звернення", c=classification(("family",), lang="uk"), lang="uk"),
    ]
    assert await storage.load_archive(first, batch=2) == 3
    second = [
        archived("arch_one", 1, "Другой текст того же поста", c=classification(("pow",))),
        archived("arch_two", 1, "Архівне звернення"),
        archived("arch_two", 2, "Нове звернення", c=classification(("civilians",), lang="uk"), lang="uk"),
    ]
    assert await storage.load_archive(second, batch=2) == 1
    assert await storage.count_posts() == 4
    kept = await storage.find_post("arch_one", 1)
    assert kept is not None and kept.text == "Архивное обращение один" and kept.labels == ("surrender",)
    unclassified = await storage.find_post("arch_one", 2)
    assert unclassified is not None and unclassified.appeal is None
    assert await scalar(storage, "SELECT state FROM posts WHERE id=?", (unclassified.id,)) == "new"
    assert await scalar(storage, "SELECT state FROM posts WHERE id=?", (kept.id,)) == "done"
    assert await storage.embedding_of(kept.id) is not None
    # archived posts are searchable by their filters
    new = await storage.find_post("arch_two", 2)
    assert new is not None
    assert await found(storage, SearchQuery(labels=("civilians",), lang="uk")) == {new.id}
    assert await found(storage, SearchQuery(channel="arch_one", appeals_only=True)) == {kept.id}
    assert len(await storage.post_edits(kept.id)) == 1
    assert await storage.load_archive([]) == 0


# -- stories, embeddings -------------------------------------------------------------------------


async def test_stories_read_back_what_was_stored(storage: Storage) -> None:
    text = "Сдавайтесь, вам гарантирована жизнь"
    p1 = await store_classified(storage, "chan_one", 1, text, classification())
    p2 = await store_classified(storage, "chan_two", 5, text + " 👉 @chan_two", classification())
    p3 = await store_classified(storage, "chan_three", 9, "Другое", classification())
    assert await storage.story_and_hash(p1) == (None, content_hash(text))
    assert await storage.story_and_hash(99_999) is None
    sid = await storage.assign_story(p1, None)
    assert await storage.assign_story(p2, sid) == sid
    other = await storage.assign_story(p3, None)
    assert other != sid
    assert await storage.story_and_hash(p2) == (sid, content_hash(text))  # mention stripped: same words
    first = await storage.story_first_post(sid)
    assert first is not None and first.id == p1 and first.repost_count == 1
    assert await storage.story_first_post(other + 100) is None
    assert await storage.story_channels(sid) == ["chan_one", "chan_two"]
    repost = await storage.get_post(p2)
    assert repost is not None and repost.story_id == sid and repost.repost_count == 1
    posts, total = await storage.search(SearchQuery(words="сдавайтесь"))
    assert total == 1 and [p.id for p in posts] == [p1]  # one row per story


async def test_vector_rows_page_through_every_post_with_a_vector(storage: Storage) -> None:
    vecs = [np.full(4, i, dtype=np.float32) for i in range(4)]
    p1 = await store_classified(storage, "chan_one", 1, "Обращение 1", classification(), vec=vecs[1])
    p2 = await store_classified(storage, "chan_one", 2, "Не обращение", classification((), appeal=False), vec=vecs[2])
    await store_classified(storage, "chan_one", 3, "Обращение без вектора", classification())
    p4 = await store_classified(storage, "chan_one", 4, "Обращение 4", classification(("pow",), lang="uk"), vec=vecs[3])
    got = await storage.vector_rows()
    assert [r.post_id for r in got] == [p1, p2, p4]  # appeals or not; only posts with a vector
    np.testing.assert_array_equal(np.frombuffer(got[0].embedding, dtype=np.float16), vecs[1].astype(np.float16))
    assert (got[0].meta.appeal, got[1].meta.appeal) == (True, False)
    assert got[2].meta.labels == ("pow",) and got[2].meta.lang == "uk" and got[2].meta.story_first
    assert got[2].meta.date == int(T0.timestamp()) and got[0].meta.channel_id == got[2].meta.channel_id
    assert [r.post_id for r in await storage.vector_rows(after_id=p1)] == [p2, p4]
    assert [r.post_id for r in await storage.vector_rows(limit=1)] == [p1]
    assert [r.post_id for r in await storage.vector_rows(ids=[p4, p1 + 2, 99_999])] == [p4]
    assert await storage.vector_rows(ids=[]) == []
    e4 = await storage.embedding_of(p4)
    assert e4 is not None and e4.tolist() == [3.0] * 4
    assert await storage.embedding_of(p1 + 2) is None  # classified without a vector
    assert await storage.embedding_of(99_999) is None


async def test_channel_appeals_lists_only_that_channels_appeals(storage: Storage) -> None:
    await store_classified(storage, "chan_one", 1, "А", classification(("surrender", "pow"), lang="ru"))
    await store_classified(storage, "chan_one", 2, "Б", classification(("family",), lang="uk"))
    await store_classified(storage, "chan_one", 3, "В", classification((), appeal=False))
    await store_classified(storage, "chan_two", 1, "Г", classification(("threat",)))
    got = sorted(await storage.channel_appeals("chan_one"), key=lambda r: r[0] or "")
    assert got == [("ru", ("surrender", "pow")), ("uk", ("family",))]
    assert await storage.channel_appeals("nobody_here") == []


# -- alert claims -----------------------------------------------------------------------------


async def test_claim_alerts_returns_each_chat_once(storage: Storage) -> None:
    pid = await store_classified(storage, "chan_one", 1, "Обращение", classification())
    claimed = await storage.claim_alerts(pid, None, [11, 12, 11, 13], "pending")
    assert claimed == {11, 12, 13}
    assert await storage.claim_alerts(pid, None, [11, 12, 13], "pending") == set()
    assert await storage.claim_alerts(pid, None, [13, 14], "held") == {14}
    assert await storage.claim_alerts(pid, None, [], "pending") == set()
    assert not await storage.claim_alert(12, pid, None)
    assert await storage.alerts_for_chat(14) == [(pid, "held")]
    assert await storage.alerts_for_chat(11) == [(pid, "pending")]
    # a different post is a different claim
    other = await store_classified(storage, "chan_one", 2, "Обращение 2", classification())
    assert await storage.claim_alerts(other, None, [11], "pending") == {11}


async def test_finish_alerts_and_release_held(storage: Storage) -> None:
    pid = await store_classified(storage, "chan_one", 1, "Обращение", classification())
    await storage.claim_alerts(pid, None, [21], "pending")
    await storage.claim_alerts(pid, None, [22], "held")
    await storage.finish_alerts([(21, pid, "sent", 555, None)])
    assert await storage.alerts_for_chat(21) == [(pid, "sent")]
    assert await storage.held_alerts() == [(22, pid)]
    assert await storage.release_held(22, pid)
    assert not await storage.release_held(22, pid)  # only one caller releases it
    assert await storage.held_alerts() == []


# -- the work queue: classification workers claim posts with a lease -----------------------------------------


async def test_workers_claim_disjoint_posts_and_take_over_an_expired_lease(storage: Storage) -> None:
    ids = [(await storage.store_post(incoming(mid=i, text=f"пост номер {i}"))).post_id for i in range(1, 6)]
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    a = await storage.claim_posts("worker-a", 3, lease=60, now=t0)
    b = await storage.claim_posts("worker-b", 10, lease=3600, now=t0)
    assert a == ids[:3] and b == ids[3:]  # oldest first, never the same post twice
    assert await storage.claim_posts("worker-c", 10, lease=60, now=t0) == []
    # worker-a dies: after its lease, its posts go to the next worker that asks
    c = await storage.claim_posts("worker-c", 10, lease=60, now=t0 + timedelta(seconds=61))
    assert c == ids[:3]
    # the late worker-a cannot write what worker-c now holds; worker-c can, once
    assert await storage.save_classifications([(ids[0], classification(), None)], worker="worker-a") == []
    assert await storage.save_classifications([(ids[0], classification(), None)], worker="worker-c") == [ids[0]]
    assert await storage.save_classifications([(ids[0], classification(), None)], worker="worker-c") == []
    assert (await storage.get_post(ids[0])) is not None and (await storage.get_post(ids[1])).appeal is None  # type: ignore[union-attr]
    assert await storage.release_claims("worker-c") == 2  # a clean stop gives back the rest at once
    assert await storage.claim_posts("worker-d", 10, lease=60, now=t0 + timedelta(seconds=62)) == ids[1:3]


async def test_an_edited_post_goes_back_to_the_queue_unclaimed(storage: Storage) -> None:
    pid = (await storage.store_post(incoming(mid=7, text="первый текст"))).post_id
    assert await storage.claim_posts("w", 5, lease=600) == [pid]
    await storage.save_classifications([(pid, classification(), None)], worker="w")
    assert await storage.claim_posts("w", 5, lease=600) == []
    await storage.store_post(incoming(mid=7, text="исправленный текст"))
    assert await storage.claim_posts("other", 5, lease=600) == [pid]


async def test_web_channels_are_shared_fairly_and_each_is_polled_by_one_process(storage: Storage) -> None:
    for i in range(10):
        await storage.ensure_channel(f"web_{i}", source="web", watched=True)
    await storage.ensure_channel("bot_side", source="bot", watched=True)  # updates bring its posts: never polled
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    alone = await storage.lease_channels("bot", lease=180, now=t0)
    assert alone == [f"web_{i}" for i in range(10)]  # one process: every web channel
    # a worker joins: it finds nothing free until the bot sheds what exceeds its share at its next refresh
    assert await storage.lease_channels("w1", lease=180, now=t0 + timedelta(seconds=1)) == []
    bot = await storage.lease_channels("bot", lease=180, now=t0 + timedelta(seconds=60))
    w1 = await storage.lease_channels("w1", lease=180, now=t0 + timedelta(seconds=61))
    assert len(bot) == len(w1) == 5 and not set(bot) & set(w1) and set(bot) | set(w1) == set(alone)
    assert await storage.lease_channels("w1", lease=180, now=t0 + timedelta(seconds=120)) == w1  # renewed, kept
    # w1 dies: once its leases run out, the bot polls everything again
    assert await storage.lease_channels("bot", lease=180, now=t0 + timedelta(seconds=200)) == bot
    assert await storage.lease_channels("bot", lease=180, now=t0 + timedelta(seconds=301)) == alone
    await storage.set_watched("web_3", False)  # an admin stops watching: nobody polls it
    assert "web_3" not in await storage.lease_channels("bot", lease=180, now=t0 + timedelta(seconds=330))


async def test_a_post_whose_worker_keeps_dying_ends_in_error_instead_of_looping(storage: Storage) -> None:
    pid = (await storage.store_post(incoming(mid=9, text="пост, который роняет воркер"))).post_id
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    for n in range(3):  # three workers take it and die with it
        now = t0 + timedelta(seconds=100 * n)
        assert await storage.claim_posts(f"w{n}", 5, lease=60, max_attempts=3, now=now) == ([pid] if n < 3 else [])
    assert await storage.claim_posts("w3", 5, lease=60, max_attempts=3, now=t0 + timedelta(seconds=300)) == []
    [failed] = await storage.failed_posts()
    assert failed.id == pid and "stopped before writing" in failed.error


async def test_a_slow_worker_renews_its_lease_and_a_release_is_not_a_failure(storage: Storage) -> None:
    ids = [(await storage.store_post(incoming(mid=i, text=f"медленный пост {i}"))).post_id for i in (1, 2)]
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    assert await storage.claim_posts("slow", 5, lease=60, now=t0) == ids
    assert await storage.renew_claims("slow", ids, lease=60, now=t0 + timedelta(seconds=40)) == 2
    later = t0 + timedelta(seconds=70)  # past the first lease, within the renewed one
    assert await storage.claim_posts("other", 5, lease=60, now=later) == []
    assert await storage.release_claims("slow", [ids[0]]) == 1
    assert await storage.claim_posts("other", 5, lease=60, now=later) == [ids[0]]
    attempts = [int(r[0]) for r in await storage.db.execute_fetchall("SELECT attempts FROM posts ORDER BY id")]
    assert attempts == [0, 0]


async def test_an_edit_during_the_fan_out_is_not_marked_done(storage: Storage) -> None:
    pid = (await storage.store_post(incoming(mid=3, text="первый текст"))).post_id
    await storage.save_classifications([(pid, classification(), None)])
    await storage.store_post(incoming(mid=3, text="исправленный текст"))  # back to 'new' while alerts go out
    await storage.finish_posts([pid])
    assert [str(r[0]) for r in await storage.db.execute_fetchall("SELECT state FROM posts")] == ["new"]


async def test_concurrent_alert_claims_for_one_post_never_both_win(storage: Storage) -> None:
    pid = (await storage.store_post(incoming(mid=4))).post_id
    chats = list(range(1000, 1600))  # more than one INSERT's worth of rows
    for chat in chats[:10]:
        await storage.ensure_chat(chat)
    a, b = await asyncio.gather(storage.claim_alerts(pid, None, chats, "pending"),
                                storage.claim_alerts(pid, None, chats[::-1], "pending"))
    assert a.isdisjoint(b) and a | b == set(chats)
    assert await storage.claim_alerts(pid, None, chats, "pending") == set()
