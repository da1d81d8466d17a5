"""Full-text search helpers: filter tokens indexed beside the text, and user words made safe.

User input never reaches FTS5 as syntax (sqlite-utils' ``quote_fts``): every token is quoted,
so ``"OR NEAR( *`` is just words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def meta_tokens(channel: str, lang: str | None = None, labels: Iterable[str] = (), appeal: bool = False) -> str:
    """Filters as FTS tokens, so `lang:` `label:` `channel:` narrow the index instead of a scan.

    Tokens are alphanumeric only (the tokenizer splits on ``_`` and ``:``); the channel
    is hex-encoded so no two channels can share a token.
    """
    return " ".join(["ch" + channel.encode().hex(), *filter_tokens(lang, labels, appeal)])


def filter_tokens(lang: str | None = None, labels: Iterable[str] = (), appeal: bool = False) -> list[str]:
    out = ["lg" + lang] if lang else []
    out += ["lb" + lbl for lbl in labels]
    if appeal:
        out.append("isappeal")
    return out


def _stem(token: str) -> str:
    """A crude inflection-tolerant prefix: амністія/амністію/амністії all share «амніст».

    At most 6 characters, matching the FTS prefix indexes (4, 5, 6), so a prefix query
    reads one index entry instead of merging every word that starts with it.
    """
    n = len(token)
    if n >= 8:
        return token[:6]
    if n >= 6:
        return token[: n - 2]
    return token


def quote_fts(words: str, *, prefix: bool = True) -> str:
    """Every token a quoted string: user input can never be FTS5 syntax (OR, NEAR(, *, ").

    Long words become quoted prefixes (``"амніст"*``) so Russian and Ukrainian case
    endings still match; short words must match whole.
    """
    tokens = [t for t in re.findall(r"\w+", words, re.UNICODE)][:32]
    out = []
    for t in tokens:
        stem = _stem(t) if prefix and not t.isdigit() else t
        quoted = '"' + stem.replace('"', '""') + '"'
        out.append(quoted + "*" if stem != t else quoted)
    return " ".join(out)
