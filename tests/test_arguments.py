"""What users type after /search, /subscribe and /digest: typed values, or a UsageError that says what was wrong."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from bot.arguments import MAX_QUERY_CHARS, UsageError, parse_filters, parse_label, parse_period, parse_search
from bot.domain import Filters
from bot.storage import quote_fts
from models.taxonomy import LABELS

NOW = datetime(2026, 3, 15, 10, 30, tzinfo=UTC)


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


# -- parse_label ------------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "label"), [
    ("surrender", "surrender"), ("  Surrender ", "surrender"), ("POW", "pow"), ("families", "family"),
    ("prisoners", "pow"), ("prisoner", "pow"), ("civilian", "civilians"), ("threats", "threat"),
    ("deserters", "desertion"), ("desert", "desertion"),
])
def test_parse_label_accepts_labels_and_aliases(typed: str, label: str) -> None:
    assert parse_label(typed) == label


@pytest.mark.parametrize("typed", ["", "surrendr", "здача", "lb:surrender", "surrender,family"])
def test_parse_label_rejects_unknown_labels_and_lists_the_known_ones(typed: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_label(typed)
    msg = str(exc.value)
    assert msg.startswith("Unknown label") and f"“{typed}”" in msg
    assert all(lbl in msg for lbl in LABELS)


def test_every_label_parses_as_itself() -> None:
    assert [parse_label(lbl) for lbl in LABELS] == list(LABELS)


# -- parse_search -----------------------------------------------------------------------------


def test_parse_search_reads_words_and_every_filter() -> None:
    q = parse_search("амністія lang:uk label:surrender channel:@Some_Channel since:2026-01-01 until:2026-02-01")
    assert q.words == "амністія"
    assert q.lang == "uk"
    assert q.labels == ("surrender",)
    assert q.channel == "some_channel"
    assert q.since == day(2026, 1, 1)
    assert q.until == day(2026, 2, 2)  # until: includes the whole day
    assert not q.appeals_only


def test_parse_search_keys_are_case_insensitive_and_have_aliases() -> None:
    q = parse_search("Сдавайтесь LANG:RU Labels:Families,prisoners,family FROM:2026-01-01 To:2026-01-01")
    assert q.words == "Сдавайтесь"
    assert q.lang == "ru"
    assert q.labels == ("family", "pow")  # aliases resolved, duplicates dropped, order kept
    assert (q.since, q.until) == (day(2026, 1, 1), day(2026, 1, 2))  # one day is a valid period


def test_parse_search_channel_accepts_links() -> None:
    assert parse_search("x channel:https://t.me/s/Some_Channel/12").channel == "some_channel"
    assert parse_search("x channel:t.me/Other_Channel").channel == "other_channel"


def test_parse_search_keeps_mixed_cyrillic_and_latin_words_in_order() -> None:
    q = parse_search("  Здавайтесь   surrender  «Хочу жить»  lang:ru ")
    assert q.words == "Здавайтесь surrender «Хочу жить»"
    assert q.lang == "ru"


def test_parse_search_with_only_filters_is_a_query() -> None:
    q = parse_search("lang:uk label:pow")
    assert q.words == "" and q.lang == "uk" and q.labels == ("pow",)
    assert parse_search("since:2026-01-01").since == day(2026, 1, 1)


@pytest.mark.parametrize("typed", [
    '" OR NEAR( *',
    'NEAR(сдача плен, 5) AND "quoted"',
    "surrender OR desertion NOT family",
    "col:value",
    "min:0.5",
    "score:0.9",
    "язык:ru",
    "lang:",
])
def test_parse_search_treats_quotes_operators_and_unknown_keys_as_words(typed: str) -> None:
    q = parse_search(typed)
    assert q.words == " ".join(typed.split())
    assert q.lang is None and q.labels == () and q.channel is None and q.since is None and q.until is None
    # the words reach FTS5 only as quoted tokens
    expr = quote_fts(q.words)
    assert expr
    # outside the quoted strings only our own AND / OR and brackets remain
    outside = re.sub(r'"(?:[^"]|"")*"', " ", expr)
    assert set(re.sub(r"[()]", " ", outside).split()) <= {"AND", "OR"}


@pytest.mark.parametrize("typed", ["", "   ", "!!! ???", "🙏🇺🇦", '" * ('])
def test_parse_search_without_words_or_filters_asks_for_words(typed: str) -> None:
    with pytest.raises(UsageError, match="Give some words to look for"):
        parse_search(typed)


def test_parse_search_limits_the_query_length() -> None:
    assert parse_search("а" * MAX_QUERY_CHARS).words == "а" * MAX_QUERY_CHARS
    with pytest.raises(UsageError) as exc:
        parse_search("а" * (MAX_QUERY_CHARS + 1))
    assert f"{MAX_QUERY_CHARS + 1} characters" in str(exc.value) and str(MAX_QUERY_CHARS) in str(exc.value)


@pytest.mark.parametrize(("typed", "message"), [
    ("x label:nonsense", "Unknown label “nonsense”"),
    ("x label:surrender,bogus", "Unknown label “bogus”"),
    ("x lang:de", "Unknown language “de”"),
    ("x lang:русский", "Unknown language “русский”"),
    ("x since:2026-13-01", "since: expected a date like 2026-03-01, got “2026-13-01”"),
    ("x since:yesterday", "since: expected a date like 2026-03-01, got “yesterday”"),
    ("x until:2026-02-30", "until: expected a date like 2026-03-01, got “2026-02-30”"),
    ("x from:01.03.2026", "since: expected a date"),
    ("x since:2026-02-02 until:2026-02-01", "since: must be before until:"),
    ("x channel:@abc", "channel: “@abc” is not a public channel name"),
    ("x channel:@канал_новин", "is not a public channel name"),
])
def test_parse_search_explains_bad_filters(typed: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_search(typed)
    assert message in str(exc.value)


def test_a_usage_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_search("x lang:xx")


# -- parse_filters ----------------------------------------------------------------------------


def test_parse_filters_reads_labels_languages_channels_and_min_score() -> None:
    f = parse_filters(["surrender,families", "pow", "lang:ru,UK", "channel:@Chan_One,t.me/chan_two", "min:0.8"])
    assert f == Filters(labels=("surrender", "family", "pow"), languages=("ru", "uk"),
                        channels=("chan_one", "chan_two"), min_score=0.8)


def test_parse_filters_with_nothing_is_everything() -> None:
    f = parse_filters([])
    assert f == Filters() and f.min_score is None


def test_parse_filters_drops_duplicates_and_keeps_the_last_min() -> None:
    f = parse_filters(["label:pow", "prisoners", "lang:ru", "language:ru", "score:0.5", "min:1"])
    assert f.labels == ("pow",) and f.languages == ("ru",) and f.min_score == 1.0


def test_parse_filters_min_score_bounds_are_inclusive() -> None:
    assert parse_filters(["min:0"]).min_score == 0.0
    assert parse_filters(["min:1.0"]).min_score == 1.0


@pytest.mark.parametrize(("args", "message"), [
    (["bogus"], "Unknown label “bogus”"),
    (["foo:bar"], "Unknown label “foo:bar”"),  # an unknown key reads as a label
    (["lang:de"], "Unknown language “de”"),
    (["min:high"], "min: expected a number between 0 and 1, got “high”"),
    (["min:1.5"], "min: expected a number between 0 and 1, got 1.5"),
    (["min:-0.1"], "min: expected a number between 0 and 1, got -0.1"),
    (["min:"], "“min:” has no value"),
    (["lang:,"], "“lang:,” has no value"),
    ([","], "“,” has no value"),
    (["since:2026-01-01"], "“since:2026-01-01” is not a filter here"),
    (["until:2026-01-01"], "is not a filter here"),
    (["channel:@ab"], "channel: “@ab” is not a public channel name"),
])
def test_parse_filters_explains_bad_input(args: list[str], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_filters(args)
    assert message in str(exc.value)


def test_parse_filters_rejects_nan_as_a_min_score() -> None:
    with pytest.raises(UsageError, match="min:"):
        parse_filters(["min:nan"])


# -- parse_period -----------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "delta", "label"), [
    (None, timedelta(hours=24), "last 24h"),
    ("", timedelta(hours=24), "last 24h"),
    ("24h", timedelta(hours=24), "last 24h"),
    ("7d", timedelta(days=7), "last 7d"),
    (" 30D ", timedelta(days=30), "last 30d"),
    ("2w", timedelta(weeks=2), "last 2w"),
    ("1h", timedelta(hours=1), "last 1h"),
    ("3660d", timedelta(days=3660), "last 3660d"),
])
def test_parse_period_reads_relative_periods(typed: str | None, delta: timedelta, label: str) -> None:
    p = parse_period(typed, now=NOW)
    assert (p.since, p.until, p.label) == (NOW - delta, NOW, label)


def test_parse_period_defaults_to_now() -> None:
    before = datetime.now(UTC)
    p = parse_period("1h")
    after = datetime.now(UTC)
    assert before <= p.until <= after and p.until - p.since == timedelta(hours=1)


def test_parse_period_reads_a_date_range_including_its_last_day() -> None:
    p = parse_period("2026-03-01..2026-03-31", now=NOW)
    assert (p.since, p.until) == (day(2026, 3, 1), day(2026, 4, 1))
    assert p.label == "2026-03-01 – 2026-03-31"
    one = parse_period("2026-03-01..2026-03-01", now=NOW)
    assert (one.since, one.until) == (day(2026, 3, 1), day(2026, 3, 2))


@pytest.mark.parametrize(("typed", "message"), [
    ("0d", "between 1h and 10 years"),
    ("0h", "between 1h and 10 years"),
    ("3661d", "between 1h and 10 years"),
    ("9999w", "between 1h and 10 years"),
    ("10000d", "Use /digest 24h"),
    ("7 d", "Use /digest 24h"),
    ("-7d", "Use /digest 24h"),
    ("week", "Use /digest 24h"),
    ("тиждень", "Use /digest 24h"),
    ("2026-03-01", "Use /digest 24h"),
    ("2026-03-01...2026-03-02", "Use /digest 24h"),
    ("2026-03-31..2026-03-01", "The first date must not be after the second"),
    ("2026-02-30..2026-03-01", "from: expected a date like 2026-03-01, got “2026-02-30”"),
    ("2026-03-01..2026-13-01", "to: expected a date like 2026-03-01, got “2026-13-01”"),
])
def test_parse_period_explains_bad_periods(typed: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_period(typed, now=NOW)
    assert message in str(exc.value)


# -- found while testing: the last representable day overflows instead of a UsageError ---------


def test_parse_search_answers_an_out_of_range_until_with_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse_search("x until:9999-12-31")


def test_parse_period_answers_an_out_of_range_end_with_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse_period("2026-01-01..9999-12-31", now=NOW)
