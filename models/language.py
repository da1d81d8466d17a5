"""Tell Russian from Ukrainian (and English from everything else) in Telegram posts.

Statistical detectors alone confuse Russian and Ukrainian on short posts, and they
raise on emoji- or URL-only text. The alphabets settle most cases: і ї є ґ occur
only in Ukrainian, ы э ъ ё only in Russian. So the decision is evidence-first:

1. strip what carries no language (links, mentions, emoji, digits);
2. Cyrillic text: count words with letters unique to each language and words from
   short lists of distinctive function words; a clear majority decides;
3. otherwise ask langdetect (seeded, so results are stable) restricted to the
   candidates the script allows;
4. Latin text: English by langdetect or English function words; Latin-script
   Russian/Ukrainian (transliteration) by small transliteration lexicons.

Nothing here raises: empty, emoji-only and URL-only text is ``("other", 0.0)``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from langdetect import DetectorFactory, detect_langs
from langdetect.lang_detect_exception import LangDetectException

DetectorFactory.seed = 0

_URL = re.compile(r"(?:https?://|www\.|t\.me/)\S+|\b\S+\.(?:com|ru|ua|org|net|me|io)\b\S*", re.IGNORECASE)
_MENTION = re.compile(r"[@#][\w_]+")
_WORD = re.compile(r"[^\W\d_]+(?:['’ʼ][^\W\d_]+)*", re.UNICODE)

UK_LETTERS = frozenset("іїєґІЇЄҐ")
RU_LETTERS = frozenset("ыэъёЫЭЪЁ")

# Frequent words spelled with letters common to both languages, that only one uses.
UK_WORDS = frozenset(
    """що це як та але або його вони ми ви від для коли цей ця ці ні немає буде бути треба можна дуже вже
    ще теж також лише тільки щоб бо тому після між зараз де чому тут хто всі усі весь вас нас вам нам
    вашого нашого наші ваші мене тебе себе свого своїх своїм свій своя своє ваш наш чи й із зі зараз
    сьогодні завтра вчора будь ласка дякую привіт добре так звернення здавайся здавайтеся додому мама синку
    росіяни російський російські солдате солдати війна війни України україни
    ми ти ви вона воно з де якщо завжди багато трохи разом будуть хочуть кажуть каже кажу чекаю чекати вдома
    мамо тату сину хлопче друже брате живий зброю зброя ворог ворога ворогу полон полону хвилюйся поки
    вибач пробач життя жити росія повертайся повертайтеся тримайся складайте""".split()
)
RU_WORDS = frozenset(
    """что это как но или его она они мы вы от для когда этот эта эти нет будет быть надо можно очень уже
    ещё тоже также только чтобы потому после между сейчас где почему здесь кто все весь вас нас вам нам
    вашего нашего наши ваши меня тебя себя своего своих своим свой своя своё ваш наш ли и со сегодня
    завтра вчера пожалуйста спасибо привет хорошо так обращение сдавайся сдавайтесь домой мама сынок
    россияне российский российские солдат солдаты война войны Украины украины
    да если всегда много вместе ребята жду ждём ждем конечно нужно жизнь оружие плен враг врага пока иди идите
    уходи уходите будут говорят хотят сынок мать волнуйся возвращайся держись""".split()
)
EN_WORDS = frozenset(
    """the and you your to of is are will not be this that with for from on in at we they he she it our
    their have has was were do don't can if or but all who what when where here there now soldier soldiers
    russian russians surrender lay down arms home hello hi please thanks thank yes no go stop mom mother son
    alive shoot leave come back stay""".split()
)
RU_TRANSLIT = frozenset(
    """chto shto eto kak ty vy my on ona oni privet spasibo pozhaluysta da net soldat soldaty sdavaysya
    sdavaytes domoy mama zhit khochu hochu rossiya rossii russkiy russkie vse tolko budet nado seychas
    segodnya tebya menya kogda gde pochemu zdes ochen horosho khorosho dela voyna voiny bratan nashi vashi
    vragi vrag rossiyane idite ukhodite uhodite plen zhivoy synok""".split()
)
UK_TRANSLIT = frozenset(
    """shcho scho yak tse ye dyakuyu diakuiu pryvit slava ukraini ukrayini heroyam heroiam bude treba duzhe
    vzhe chy zhyty zdavaysya zdavaisia dodomu viyna viina rosiyany""".split()
)

# A word in both lists is evidence for neither.
_SHARED = UK_WORDS & RU_WORDS
UK_WORDS = UK_WORDS - _SHARED - {"мама", "весь", "своя", "ваш", "наш", "так"}
RU_WORDS = RU_WORDS - _SHARED - {"мама", "весь", "своя", "ваш", "наш", "так"}

# Letters of other Cyrillic languages (Belarusian ў, Serbian and Macedonian letters).
OTHER_CYR_LETTERS = frozenset("ўЎђјљњћџЂЈЉЊЋЏѓќѕЃЌЅ")
# Bulgarian writes ъ as a vowel (път, държава, оръжие); Russian only before е ё ю я (подъезд).
# Without this, ъ made Bulgarian count as Russian.
_BG_HARD_SIGN = re.compile(r"ъ(?=[^еёюяЕЁЮЯ])", re.IGNORECASE)
BG_WORDS = frozenset("това тези са сме сте във със като които който която което защото трябва ние вие няма".split())
# An apostrophe inside a Cyrillic word (м'ясо, п'ять, сім'я) is Ukrainian spelling; Russian writes ъ or ь.
_UK_APOSTROPHE = re.compile(r"[^\W\d_]['’ʼ][^\W\d_]")


def _other_cyrillic(word: str) -> bool:
    return (
        any(ch in OTHER_CYR_LETTERS for ch in word)
        or bool(_BG_HARD_SIGN.search(word))
        or word.lower() in BG_WORDS
    )


def _strip_noise(text: str) -> str:
    text = _URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    return text


def _script_counts(words: list[str]) -> tuple[int, int]:
    cyr = lat = 0
    for w in words:
        for ch in w:
            name = unicodedata.name(ch, "")
            if name.startswith("CYRILLIC"):
                cyr += 1
            elif name.startswith("LATIN"):
                lat += 1
    return cyr, lat


@lru_cache(maxsize=4096)
def _langdetect(text: str) -> dict[str, float]:
    try:
        return {r.lang: r.prob for r in detect_langs(text)}
    except LangDetectException:
        return {}


def _decide_cyrillic(words: list[str], text: str) -> tuple[str, float]:
    other_words = sum(_other_cyrillic(w) for w in words)
    if other_words and other_words >= 0.2 * len(words):
        return "other", round(min(0.9, 0.5 + other_words / len(words)), 3)
    uk = ru = 0.0
    for w in words:
        lw = w.lower()
        has_uk = any(ch in UK_LETTERS for ch in w) or bool(_UK_APOSTROPHE.search(w))
        has_ru = any(ch in RU_LETTERS for ch in w) and not _BG_HARD_SIGN.search(w)
        if has_uk and not has_ru:
            uk += 1.0
        elif has_ru and not has_uk:
            ru += 1.0
        if lw in UK_WORDS:
            uk += 0.75
        if lw in RU_WORDS:
            ru += 0.75
    total = uk + ru
    if total >= 0.75:
        share = max(uk, ru) / total
        if share >= 0.7 or (total >= 4 and share >= 0.6):
            lang = "uk" if uk > ru else "ru"
            # confidence grows with the amount of evidence and with its agreement
            conf = min(0.99, 0.5 + 0.5 * share * min(1.0, total / 6.0))
            return lang, round(conf, 3)
    probs = _langdetect(text)
    p_uk, p_ru = probs.get("uk", 0.0), probs.get("ru", 0.0)
    if uk or ru:  # weak letter evidence plus the statistical model
        p_uk += uk / max(total, 1.0)
        p_ru += ru / max(total, 1.0)
    if p_uk == p_ru == 0.0:
        # langdetect saw Bulgarian or Macedonian in words both languages share; in these
        # channels that is Russian or Ukrainian far more often, and Russian is the base rate.
        return "ru", 0.34
    lang = "uk" if p_uk > p_ru else "ru"
    conf = max(p_uk, p_ru) / (p_uk + p_ru)
    return lang, round(min(0.95, conf * 0.9), 3)


def _decide_latin(words: list[str], text: str) -> tuple[str, float]:
    lower = [w.lower() for w in words]
    en_hits = sum(w in EN_WORDS for w in lower)
    ru_hits = sum(w in RU_TRANSLIT for w in lower)
    uk_hits = sum(w in UK_TRANSLIT for w in lower)
    probs = _langdetect(text)
    p_en = probs.get("en", 0.0)
    # A couple of English-looking words ("do", "was", "no") occur in Polish, German, Spanish...:
    # outside very short posts they count only when langdetect agrees or they are frequent.
    frequent = en_hits >= 2 and en_hits >= 0.3 * len(lower)
    if en_hits >= max(1, ru_hits + uk_hits) and (p_en > 0.2 or frequent or len(lower) <= 3):
        return "en", round(max(p_en, min(0.95, 0.5 + 0.1 * en_hits)), 3)
    if ru_hits + uk_hits >= 2 or (ru_hits + uk_hits >= 1 and len(lower) <= 3):
        lang = "uk" if uk_hits > ru_hits else "ru"
        return lang, round(min(0.8, 0.4 + 0.1 * max(ru_hits, uk_hits)), 3)
    if p_en >= 0.5:
        return "en", round(p_en, 3)
    best = max(probs.items(), key=lambda kv: kv[1], default=("other", 0.0))
    return "other", round(best[1], 3)


def detect_language(text: str | None) -> tuple[str, float]:
    """Return ``(lang, confidence)`` with lang in ``ru | uk | en | other``; never raises."""
    if not text:
        return "other", 0.0
    cleaned = _strip_noise(text)
    words = _WORD.findall(cleaned)
    if not words:
        return "other", 0.0
    cyr, lat = _script_counts(words)
    letters = cyr + lat
    if letters == 0:
        return "other", 0.0  # some other script: Georgian, Arabic, CJK...
    if cyr >= lat:
        cyr_words = [w for w in words if _script_counts([w])[0] > 0]
        return _decide_cyrillic(cyr_words, " ".join(cyr_words))
    lat_words = [w for w in words if _script_counts([w])[1] > 0]
    if lat < 0.5 * sum(len(w) for w in words):
        return "other", 0.0
    return _decide_latin(lat_words, " ".join(lat_words))
