"""Full-text search helpers: filter tokens indexed beside the terms, and user words made safe.

User input never reaches FTS5 as syntax (sqlite-utils' ``quote_fts``): every term is quoted,
so ``"OR NEAR( *`` is just words.

Filters are tokens in the ``search_meta`` column, so `lang:` `label:` `channel:` and dates
narrow the index itself, *before* the newest matches are ranked: with 5,100 recent posts
saying "сдавайся", ``since:2022-01-01 until:2022-12-31`` still finds the 2022 ones, because
the query asks the index for posts carrying 2022's month tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

REPOST_TOKEN = "rp"  # a post that repeats a story someone else opened (one result per story)
_META_KEEP = ("ch", "ym", REPOST_TOKEN)  # tokens a (re)classification leaves alone


def meta_tokens(channel: str, date: int | None = None, lang: str | None = None, labels: Iterable[str] = (),
                appeal: bool = False) -> str:
    """Filters as FTS tokens, so filters narrow the index instead of a scan.

    Tokens are alphanumeric only (the tokenizer splits on ``_`` and ``:``); the channel
    is hex-encoded so no two channels can share a token; ``date`` (unix seconds) gives the
    post's month, ``ym202203``.
    """
    head = ["ch" + channel.encode().hex()]
    if date is not None:
        head.append(month_token(date))
    return " ".join([*head, *filter_tokens(lang, labels, appeal)])


def filter_tokens(lang: str | None = None, labels: Iterable[str] = (), appeal: bool = False) -> list[str]:
    out = ["lg" + lang] if lang else []
    out += ["lb" + lbl for lbl in labels]
    if appeal:
        out.append("isappeal")
    return out


def reclassified_meta(old: str, lang: str | None, labels: Iterable[str], appeal: bool) -> str:
    """A post's meta after (re)classification: channel, month and repost tokens kept, the rest replaced."""
    kept = [t for t in old.split() if t.startswith(_META_KEEP) and not t.startswith(("lb", "lg"))]
    return " ".join([*kept, *filter_tokens(lang, labels, appeal)])


def month_token(ts: int) -> str:
    d = datetime.fromtimestamp(ts, UTC)
    return f"ym{d.year:04d}{d.month:02d}"


def month_tokens(lo: int, hi: int, *, limit: int = 1200) -> list[str]:
    """The month tokens from the month of ``lo`` to that of ``hi`` (unix seconds, inclusive)."""
    a, b = datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)
    y, m = a.year, a.month
    out: list[str] = []
    while (y, m) <= (b.year, b.month) and len(out) < limit:
        out.append(f"ym{y:04d}{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def quote(term: str) -> str:
    """One term as an FTS5 string: never syntax, whatever it holds."""
    return '"' + term.replace('"', '""') + '"'


def any_of(terms: Sequence[str]) -> str:
    quoted = [quote(t) for t in terms if t.strip()]
    if not quoted:
        return ""
    return quoted[0] if len(quoted) == 1 else "(" + " OR ".join(quoted) + ")"


def quote_fts(words: str) -> str:
    """All of the query's words (each by any of its terms), as a safe FTS5 expression."""
    from bot.storage.terms import query_terms

    return " AND ".join(filter(None, (any_of(g) for g in query_terms(words))))
