"""Search terms: the lemmas a post is indexed under, so /search finds every form of a word.

Russian and Ukrainian inflect heavily (полон, полону, полоні; сдавайся, сдаться, сдались):
a full-text index over surface words misses most of them, and the old prefix trick
(``"амніст"*``) matched unrelated words sharing six letters. SQLite's FTS5 cannot load a
stemming tokenizer from Python (no extension loading), so the lemmas are computed here, in
Python, and indexed as their own column (``posts.search_terms``), next to filter tokens.

* Cyrillic words go through pymorphy3's Russian and Ukrainian dictionaries (the language
  detector loads the same ones): a word one dictionary knows gets that lemma; a word both
  know, or neither, gets both lemmas (прогноз → one term; a word spelt the same in both
  languages, or slang no dictionary has, is findable from either side).
* Latin words get the Snowball English stem (snowballstemmer), so "surrendering" finds
  "surrender".
* Numbers and other tokens are kept as they are (frequencies, short numbers, @bot names).

The query goes through the same function, so a query word and a post word meet when they
share any term.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

_WORD = re.compile(r"\w+(?:['’ʼ-]\w+)*", re.UNICODE)
_APOSTROPHES = str.maketrans({"’": "'", "ʼ": "'", "`": "'"})
_UK_ONLY = frozenset("іїєґ'")
_RU_ONLY = frozenset("ыэъё")
_CYRILLIC = re.compile(r"[а-яёіїєґ]")
_LATIN = re.compile(r"[a-z]")
MAX_TERM_WORDS = 20_000  # a huge post is indexed by its first 20,000 words

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _analyzers() -> tuple[Any, Any, Any]:
    """(Russian, Ukrainian) pymorphy3 analyzers and the English stemmer, loaded once."""
    import logging

    import pymorphy3
    import snowballstemmer

    logging.getLogger("pymorphy3").setLevel(logging.WARNING)
    with _lock:
        return (pymorphy3.MorphAnalyzer(lang="ru"), pymorphy3.MorphAnalyzer(lang="uk"),
                snowballstemmer.stemmer("english"))


def _lemma(morph: Any, word: str) -> str:
    return str(morph.parse(word)[0].normal_form).replace("ё", "е")


@lru_cache(maxsize=400_000)
def word_terms(word: str) -> tuple[str, ...]:
    """The terms one (lower-case) word is indexed under; cached, since words repeat across posts."""
    if _CYRILLIC.search(word):
        ru, uk, _ = _analyzers()
        letters = set(word)
        if letters & _UK_ONLY:
            return (_lemma(uk, word),)
        if letters & _RU_ONLY:
            return (_lemma(ru, word),)
        in_ru, in_uk = ru.word_is_known(word), uk.word_is_known(word)
        if in_ru and not in_uk:
            return (_lemma(ru, word),)
        if in_uk and not in_ru:
            return (_lemma(uk, word),)
        return tuple(dict.fromkeys((_lemma(ru, word), _lemma(uk, word))))
    if _LATIN.search(word) and word.isascii():
        return (str(_analyzers()[2].stemWord(word)),)
    return (word,)


def fold_token(term: str) -> str:
    """A term as FTS5's ``unicode61 remove_diacritics 2`` tokenizer stores it (й→и, ї→і): to look it up in the vocabulary."""
    decomposed = unicodedata.normalize("NFD", term.lower())
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def words_of(text: str) -> Iterator[re.Match[str]]:
    """The words of a text (apostrophes and hyphens inside a word kept), with their spans."""
    return _WORD.finditer(text.translate(_APOSTROPHES))


def text_terms(text: str) -> str:
    """The ``search_terms`` column of a post: its words' terms, in order, space-separated."""
    out: list[str] = []
    for n, m in enumerate(words_of(text.lower())):
        if n >= MAX_TERM_WORDS:
            break
        out.extend(word_terms(m.group()))
    return " ".join(out)


def query_terms(words: str, limit: int = 32) -> list[tuple[str, ...]]:
    """Each query word's terms (any one of them matches), duplicates dropped, at most ``limit`` words."""
    out: list[tuple[str, ...]] = []
    seen: set[tuple[str, ...]] = set()
    for m in words_of(words.lower()):
        terms = word_terms(m.group())
        if terms not in seen:
            seen.add(terms)
            out.append(terms)
        if len(out) >= limit:
            break
    return out


def highlight_snippet(text: str, terms: set[str], width: int = 24) -> str | None:
    """A window of about ``width`` words around the densest run of matches, matches marked \\x02…\\x03.

    FTS5's snippet() would highlight only surface forms in an indexed text column; the index
    holds lemmas, so the marking is done here with the same lemmatisation. None when no word matches.
    """
    if not terms:
        return None
    folded = text.translate(_APOSTROPHES)
    spans = [(m.start(), m.end(), bool(terms.intersection(word_terms(m.group().lower()))))
             for m in _WORD.finditer(folded[:200_000])]
    hits = [i for i, s in enumerate(spans) if s[2]]
    if not hits:
        return None
    best = max(hits, key=lambda i: sum(1 for j in hits if i <= j < i + width))
    lo = max(0, best - width // 4)
    hi = min(len(spans), lo + width)
    start, end = spans[lo][0], spans[hi - 1][1]
    parts: list[str] = ["…" if lo > 0 else ""]
    cursor = start
    for a, b, hit in spans[lo:hi]:
        parts.append(text[cursor:a])
        parts.append(f"\x02{text[a:b]}\x03" if hit else text[a:b])
        cursor = b
    parts.append(text[cursor:end])
    parts.append("…" if hi < len(spans) else "")
    return "".join(parts)
