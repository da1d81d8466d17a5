"""Full-text ranking over lemmas: every form of a word, all-words matches first, filters before the window.

Real SQLite files, no model: what ``/search`` answers in ``fts`` mode and feeds into the hybrid ranking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import IncomingPost
from bot.storage import ArchivedPost, SearchQuery, Storage
from bot.storage.terms import highlight_snippet, query_terms, text_terms
from models.taxonomy import Classification

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def post(mid: int, text: str, *, channel: str = "news", date: datetime = T0) -> IncomingPost:
    return IncomingPost(channel=channel, message_id=mid, text=text, date=date, source="web")


def archived(mid: int, text: str, date: datetime, *, lang: str = "ru", appeal: bool = False) -> ArchivedPost:
    c = Classification(appeal=appeal, score=0.9 if appeal else 0.01, labels=("surrender",) if appeal else (),
                       label_scores={}, addressee="ru_military" if appeal else None, reasons=(), lang=lang)
    return ArchivedPost("archive", mid, text, date, lang, c)


@pytest.fixture
async def storage(make_storage: Callable[..., Storage]) -> AsyncIterator[Storage]:
    s = make_storage("search.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def ids(storage: Storage, q: SearchQuery, limit: int = 50) -> list[int]:
    posts, _ = await storage.search(q, limit=limit)
    return [p.message_id for p in posts]


@pytest.mark.parametrize(("query", "text"), [
    ("полон", "Здавайтеся в полон, вам гарантують життя"),   # uk: полон / полоні / полону
    ("полоні", "Тисячі окупантів вже у полоні"),
    ("сдавайся", "Сдавайтесь, пока не поздно"),                # ru verb forms
    ("пленные", "Список пленных опубликован"),
    ("surrender", "Soldiers who surrendered are safe"),      # English stems
    ("амністія", "Оголошено АМНІСТІЮ для тих, хто здається"),
])
async def test_other_forms_of_a_word_are_found(storage: Storage, query: str, text: str) -> None:
    await storage.store_posts([post(1, text), post(2, "Погода у Харкові: мокрий сніг")])
    assert await ids(storage, SearchQuery(words=query)) == [1]


async def test_a_prefix_alone_no_longer_matches_unrelated_words(storage: Storage) -> None:
    # the old six-letter prefix made «амністія» match «амністувати»'s neighbours and «полонина» match «полон»
    await storage.store_posts([post(1, "Відпочинок на полонині в Карпатах"), post(2, "Вони здалися в полон")])
    assert await ids(storage, SearchQuery(words="полон")) == [2]


async def test_any_word_matches_with_all_words_ranked_first(storage: Storage) -> None:
    await storage.store_posts([
        post(1, "Amnesty for those who lay down arms"),
        post(2, "Surrender now and you will get an amnesty"),
        post(3, "Surrender hotline: call 688"),
        post(4, "Weather: sleet in Kharkiv"),
    ])
    got = await ids(storage, SearchQuery(words="surrender amnesty"))
    assert got[0] == 2 and set(got) == {1, 2, 3}


async def test_a_very_common_word_does_not_drag_in_the_archive(storage: Storage) -> None:
    filler = [post(i, f"Новости дня номер {i}: в городе тихо") for i in range(1, 700)]
    await storage.store_posts([*filler, post(700, "Сдавайтесь в плен"), post(701, "Плен лучше смерти")])
    got = await ids(storage, SearchQuery(words="в плен"))
    assert set(got) == {700, 701}  # «в» is in every post: alone it matches nothing
    assert got[0] == 700


async def test_a_date_range_finds_history_behind_five_thousand_newer_matches(storage: Storage) -> None:
    """100 posts from 2022 and 5,100 newer ones with the same word: the 2022 ones are found, all of them."""
    old = [archived(i, f"Сдавайся, солдат, пост {i}", datetime(2022, 5, 1, tzinfo=UTC) + timedelta(days=i))
           for i in range(100)]
    new = [archived(1000 + i, f"Сдавайся! Свежий призыв {i}", datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=i))
           for i in range(5100)]
    await storage.load_archive([*old, *new])
    q = SearchQuery(words="сдавайся", since=datetime(2022, 1, 1, tzinfo=UTC), until=datetime(2022, 12, 31, tzinfo=UTC))
    ranking = await storage.search_ranking(q)
    assert ranking.total == 100 and not ranking.capped
    assert {i for i in ranking.ids} == {p.id for p in await storage.posts_for(ranking.ids)}
    assert len(await ids(storage, q, limit=200)) == 100
    unfiltered = await storage.search_ranking(SearchQuery(words="сдавайся"))
    assert unfiltered.capped  # the unfiltered query says it saw only the newest window


async def test_a_date_range_outside_the_archive_is_empty_and_cheap(storage: Storage) -> None:
    await storage.store_posts([post(1, "Сдавайтесь")])
    q = SearchQuery(words="сдавайтесь", since=datetime(2030, 1, 1, tzinfo=UTC))
    assert await storage.search_ranking(q) == (await storage.search_ranking(q))
    assert (await storage.search_ranking(q)).total == 0
    far = SearchQuery(words="сдавайтесь", since=datetime(1970, 1, 2, tzinfo=UTC), until=datetime(9999, 12, 31, tzinfo=UTC))
    assert (await storage.search_ranking(far)).total == 1


async def test_the_period_ends_are_exact_inside_a_month(storage: Storage) -> None:
    days = [datetime(2024, 6, d, 10, tzinfo=UTC) for d in (1, 10, 20, 30)]
    await storage.store_posts([post(i, "Обращение к военным", date=d) for i, d in enumerate(days, 1)])
    q = SearchQuery(words="обращение", since=datetime(2024, 6, 10, tzinfo=UTC), until=datetime(2024, 6, 20, tzinfo=UTC))
    assert sorted(await ids(storage, q)) == [2]


async def test_language_filter_applies_before_the_window(storage: Storage) -> None:
    uk = [archived(i, f"Здавайся, окупанте {i}", T0 - timedelta(days=400 + i), lang="uk") for i in range(30)]
    ru = [archived(1000 + i, f"Здавайся {i}", T0 + timedelta(minutes=i), lang="ru") for i in range(5050)]
    await storage.load_archive([*uk, *ru])
    ranking = await storage.search_ranking(SearchQuery(words="здавайся", lang="uk"))
    assert ranking.total == 30 and not ranking.capped


def test_terms_are_the_same_for_a_post_and_a_query() -> None:
    for text in ("Здавайтеся в полон!", "Сдавайтесь в плен", "Soldiers surrendering", "Хочу жить 688"):
        indexed = set(text_terms(text).split())
        assert all(set(group) <= indexed for group in query_terms(text))


def test_snippets_mark_every_form_and_keep_the_original_text() -> None:
    text = "Новини. " * 40 + "Оголошено АМНІСТІЮ для тих, хто здасться в полон. " + "Кінець. " * 40
    terms = {t for g in query_terms("амністія полон") for t in g}
    snippet = highlight_snippet(text, terms)
    assert snippet is not None
    assert "\x02АМНІСТІЮ\x03" in snippet and "\x02полон\x03" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")
    assert snippet.replace("\x02", "").replace("\x03", "").strip("…") in text
    assert highlight_snippet("Погода", terms) is None


async def test_a_repost_finds_its_classified_twin(storage: Storage) -> None:
    import numpy as np

    first = (await storage.store_post(post(1, "Сдавайтесь в плен!", channel="a"))).post_id
    c = Classification(appeal=True, score=0.93, labels=("surrender",), label_scores={"surrender": 0.9},
                       addressee="ru_military", reasons=("Сдавайтесь",), lang="ru", lang_confidence=0.99)
    vec = np.linspace(-1, 1, 8, dtype=np.float32)
    await storage.save_classifications([(first, c, vec)])
    copy = (await storage.store_post(post(7, "Сдавайтесь в плен!", channel="b"))).post_id
    other = (await storage.store_post(post(8, "Совсем другой текст", channel="b"))).post_id
    twins = await storage.classified_twins([copy, other])
    assert set(twins) == {copy}
    got, got_vec = twins[copy]
    assert got == c
    assert got_vec is not None and np.allclose(got_vec, vec, atol=1e-2)
    assert await storage.classified_twins([first]) == {}  # an unclassified copy lends nothing
