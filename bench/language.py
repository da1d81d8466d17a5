"""Language detection: ours vs plain langdetect vs lingua, on the labelled posts and on edge cases.

    .venv/bin/python bench/language.py [--repeats 3]

Prints accuracy and ru↔uk confusion (the share of Russian or Ukrainian items called the
other one) per method on every split of models/data, on all of it, and on ~60 short edge
cases written for this bench; plus the mean latency of one call.

* ours: ``models.language.detect_language`` (letters, word lists, then langdetect);
* langdetect: ``langdetect.detect`` seeded, its answer mapped to ru/uk/en, else other,
  and an exception (emoji, URL-only) counted as other;
* lingua: lingua-language-detector restricted to English, Russian, Ukrainian and the
  neighbours that could be confused with them (Belarusian, Bulgarian, Serbian,
  Macedonian, Polish, German), mapped the same way; "unsure" (None) is other.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

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


def ours() -> Callable[[str], str]:
    from models.language import detect_language

    return lambda text: detect_language(text)[0]


def plain_langdetect() -> Callable[[str], str]:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0

    def run(text: str) -> str:
        try:
            code = detect(text)
        except LangDetectException:
            return "other"
        return code if code in ("ru", "uk", "en") else "other"

    return run


def lingua() -> Callable[[str], str]:
    from lingua import Language, LanguageDetectorBuilder

    langs = [Language.ENGLISH, Language.RUSSIAN, Language.UKRAINIAN, Language.BELARUSIAN, Language.BULGARIAN,
             Language.SERBIAN, Language.MACEDONIAN, Language.POLISH, Language.GERMAN]
    detector = LanguageDetectorBuilder.from_languages(*langs).with_preloaded_language_models().build()
    mapping = {Language.ENGLISH: "en", Language.RUSSIAN: "ru", Language.UKRAINIAN: "uk"}

    def run(text: str) -> str:
        found = detector.detect_language_of(text)
        return mapping.get(found, "other") if found is not None else "other"

    return run


def score(predict: Callable[[str], str], items: Sequence[tuple[str, str]]) -> tuple[float, float, list[str]]:
    wrong: list[str] = []
    ruuk = confused = 0
    for text, expected in items:
        got = predict(text)
        if got != expected:
            wrong.append(f"{expected}→{got}: {text[:50]!r}")
        if expected in ("ru", "uk"):
            ruuk += 1
            confused += {got, expected} == {"ru", "uk"}
    return 1 - len(wrong) / len(items), confused / max(1, ruuk), wrong


def latency(predict: Callable[[str], str], texts: Sequence[str], repeats: int, reset: Callable[[], None]) -> float:
    """Median over repeats of the mean seconds per call (caches cleared before each repeat)."""
    runs = []
    for _ in range(repeats):
        reset()
        start = time.perf_counter()
        for t in texts:
            predict(t)
        runs.append((time.perf_counter() - start) / len(texts))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--show-errors", action="store_true", help="list every wrong edge case")
    args = parser.parse_args()

    from models.training.dataset import load_examples

    examples = load_examples()
    data = {split: [(e.text, e.lang) for e in examples if e.split == split] for split in ("train", "dev", "test")}
    data["all"] = [(e.text, e.lang) for e in examples]
    short = [(e.text, e.lang) for e in examples if len(e.text.split()) <= 12]

    def reset_ours() -> None:
        from models import language

        language._langdetect.cache_clear()

    t0 = time.perf_counter()
    methods = {"ours": ours(), "langdetect": plain_langdetect()}
    t1 = time.perf_counter()
    methods["lingua"] = lingua()
    t2 = time.perf_counter()
    setup = {"ours": t1 - t0, "langdetect": 0.0, "lingua": t2 - t1}
    resets = {"ours": reset_ours, "langdetect": lambda: None, "lingua": lambda: None}

    print(f"labelled posts: {len(examples)} (train {len(data['train'])}, dev {len(data['dev'])}, "
          f"test {len(data['test'])}); posts of ≤ 12 words: {len(short)}; edge cases: {len(EDGE_CASES)}")
    print("acc = accuracy over ru/uk/en/other; conf = ru↔uk confusion among ru and uk items\n")
    cols = ["train", "dev", "test", "all", "short"]
    header = f"{'method':<11}" + "".join(f"{c + ' acc':>11}{'conf':>7}" for c in cols)
    header += f"{'edge acc':>10}{'conf':>7}{'µs/call':>10}{'setup s':>9}"
    print(header)
    print("-" * len(header))
    errors: dict[str, list[str]] = {}
    for name, predict in methods.items():
        row = f"{name:<11}"
        for c in cols:
            acc, conf, _ = score(predict, short if c == "short" else data[c])
            row += f"{acc:>11.4f}{conf:>7.3f}"
        acc, conf, wrong = score(predict, EDGE_CASES)
        errors[name] = wrong
        us = latency(predict, [t for t, _ in data["all"]], args.repeats, resets[name]) * 1e6
        row += f"{acc:>10.3f}{conf:>7.3f}{us:>10.0f}{setup[name]:>9.2f}"
        print(row)
    print()
    for name, wrong in errors.items():
        shown = wrong if args.show_errors else wrong[:8]
        more = "" if args.show_errors or len(wrong) <= 8 else f" (+{len(wrong) - 8} more, --show-errors)"
        print(f"{name}: {len(wrong)} edge cases wrong{more}")
        for w in shown:
            print(f"    {w}")


if __name__ == "__main__":
    main()
