"""Parse what users type after /search, /subscribe, /digest and /export into typed values.

Every failure is a :class:`UsageError` whose message is shown to the user verbatim, so
it says what was wrong and gives an example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from bot.channels import normalise_channel
from bot.domain import Filters
from bot.storage import SearchQuery
from models.taxonomy import LABELS, LANGUAGES

MAX_QUERY_CHARS = 500

LABEL_ALIASES = {
    "families": "family", "prisoners": "pow", "prisoner": "pow", "pows": "pow", "civilian": "civilians",
    "threats": "threat", "desert": "desertion", "deserters": "desertion",
}


class UsageError(ValueError):
    """Bad input from a user; the message is their answer."""


def parse_label(value: str) -> str:
    v = value.lower().strip()
    v = LABEL_ALIASES.get(v, v)
    if v not in LABELS:
        raise UsageError(f"Unknown label “{value}”. Labels: {', '.join(LABELS)}.")
    return v


def _lang(value: str) -> str:
    v = value.lower().strip()
    if v not in LANGUAGES:
        raise UsageError(f"Unknown language “{value}”. Use one of: ru, uk, en, other.")
    return v


def _day(value: str, key: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError as exc:
        raise UsageError(f"{key}: expected a date like 2026-03-01, got “{value}”.") from exc


def _day_end(value: str, key: str) -> datetime:
    """The exclusive end of a day the user named (the next midnight); the last representable day is refused."""
    try:
        return _day(value, key) + timedelta(days=1)
    except OverflowError as exc:
        raise UsageError(f"{key}: “{value}” is too far in the future.") from exc


def _channel(value: str) -> str:
    try:
        return normalise_channel(value)
    except ValueError as exc:
        raise UsageError(f"channel: “{value}” is not a public channel name like @example_channel.") from exc


_FILTER = re.compile(r"^(lang|language|label|labels|channel|since|until|from|to|min|score):(.*)$", re.IGNORECASE)


def parse_search(text: str) -> SearchQuery:
    """``амністія lang:uk label:surrender channel:@x since:2026-01-01 until:2026-02-01``."""
    if len(text) > MAX_QUERY_CHARS:
        raise UsageError(f"That query is {len(text)} characters; keep it under {MAX_QUERY_CHARS}.")
    words: list[str] = []
    lang = channel = None
    labels: list[str] = []
    since = until = None
    for token in text.split():
        m = _FILTER.match(token)
        if not m or not m.group(2):
            words.append(token)
            continue
        key, value = m.group(1).lower(), m.group(2)
        if key in ("lang", "language"):
            lang = _lang(value)
        elif key in ("label", "labels"):
            labels.extend(parse_label(v) for v in value.split(",") if v)
        elif key == "channel":
            channel = _channel(value)
        elif key in ("since", "from"):
            since = _day(value, "since")
        elif key in ("until", "to"):
            until = _day_end(value, "until")
        else:
            words.append(token)
    if since and until and since >= until:
        raise UsageError("since: must be before until:.")
    q = SearchQuery(words=" ".join(words), lang=lang, labels=tuple(dict.fromkeys(labels)), channel=channel,
                    since=since, until=until)
    if not re.search(r"\w", q.words) and not (q.lang or q.labels or q.channel or q.since or q.until):
        raise UsageError("Give some words to look for, e.g. /search амністія lang:uk")
    return q


def parse_filters(args: list[str]) -> Filters:
    """``/subscribe surrender,family lang:ru,uk channel:@x min:0.8`` (bare words are labels)."""
    labels: list[str] = []
    langs: list[str] = []
    channels: list[str] = []
    min_score: float | None = None
    for token in args:
        m = _FILTER.match(token)
        key, value = (m.group(1).lower(), m.group(2)) if m else ("label", token)
        parts = [v for v in value.split(",") if v]
        if not parts:
            raise UsageError(f"“{token}” has no value. Example: /subscribe surrender lang:ru min:0.8")
        if key in ("label", "labels"):
            labels.extend(parse_label(v) for v in parts)
        elif key in ("lang", "language"):
            langs.extend(_lang(v) for v in parts)
        elif key == "channel":
            channels.extend(_channel(v) for v in parts)
        elif key in ("min", "score"):
            try:
                min_score = float(parts[0])
            except ValueError as exc:
                raise UsageError(f"min: expected a number between 0 and 1, got “{parts[0]}”.") from exc
            if not 0.0 <= min_score <= 1.0:
                raise UsageError(f"min: expected a number between 0 and 1, got {min_score}.")
        else:
            raise UsageError(f"“{token}” is not a filter here. Example: /subscribe surrender lang:ru min:0.8")
    return Filters(tuple(dict.fromkeys(labels)), tuple(dict.fromkeys(langs)), tuple(dict.fromkeys(channels)), min_score)


@dataclass(frozen=True, slots=True)
class Period:
    since: datetime
    until: datetime
    label: str


def parse_period(arg: str | None, now: datetime | None = None) -> Period:
    """``24h``, ``7d``, ``30d``, ``2w`` or ``YYYY-MM-DD..YYYY-MM-DD`` (default 24h)."""
    now = now or datetime.now(UTC)
    value = (arg or "24h").strip().lower()
    m = re.fullmatch(r"(\d{1,4})([hdw])", value)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
        if n == 0 or delta > timedelta(days=3660):
            raise UsageError("Choose a period between 1h and 10 years, e.g. /digest 7d")
        return Period(now - delta, now, f"last {n}{unit}")
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", value)
    if m:
        since, until = _day(m.group(1), "from"), _day_end(m.group(2), "to")
        if since >= until:
            raise UsageError("The first date must not be after the second, e.g. /digest 2026-03-01..2026-03-31")
        return Period(since, until, f"{m.group(1)} – {m.group(2)}")
    raise UsageError("Use /digest 24h, /digest 7d, /digest 30d or /digest 2026-03-01..2026-03-31")
