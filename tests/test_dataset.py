"""The labelled data keeps the shape issue #2 asks for, whenever posts are added.

Adding posts is how the model gets better, so these checks guard what is easy to break
while doing it: the language mix, the share of hard negatives, the labels in both
directions, and, above all, no test post with a near-twin in training.
"""

from __future__ import annotations

from collections import Counter

import pytest

from models.taxonomy import LABELS
from models.training.dataset import Example, load_examples, near_duplicate_groups, read_split


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return load_examples()


def test_size_and_language_mix(examples: list[Example]) -> None:
    langs = Counter(e.lang for e in examples)
    assert len(examples) >= 800
    assert langs["ru"] / len(examples) >= 0.40
    assert langs["uk"] / len(examples) >= 0.35
    assert set(langs) == {"ru", "uk", "en"}


def test_about_half_are_appeals_and_enough_hard_negatives(examples: list[Example]) -> None:
    appeals = sum(e.appeal for e in examples)
    assert 0.4 <= appeals / len(examples) <= 0.6
    hard = [e for e in examples if not e.appeal and e.kind in ("news_about", "own_side", "everyday", "other_negative")]
    assert len(hard) >= 250


def test_every_label_in_both_directions(examples: list[Example]) -> None:
    seen = {(label, (e.addressee or "").split("_")[0]) for e in examples for label in e.labels}
    for label in LABELS:
        assert (label, "ru") in seen, label
        assert (label, "ua") in seen, label


def test_split_is_frozen_and_later_posts_train(examples: list[Example]) -> None:
    split = read_split()
    assert {e.split for e in examples} == {"train", "dev", "test"}
    assert all(e.split == "train" for e in examples if e.id not in split)
    assert all(ident in {e.id for e in examples} for ident in split)  # no post vanished from the split


def test_no_near_duplicates_across_splits(examples: list[Example]) -> None:
    for group in near_duplicate_groups(examples):
        splits = {examples[i].split for i in group}
        assert len(splits) == 1, [(examples[i].id, examples[i].split) for i in group]
