"""Joint label/addressee decoding keeps every appeal consistent with the taxonomy."""

from __future__ import annotations

from models.decoding import decide_labels
from models.taxonomy import ADDRESSEES, LABELS

THRESHOLDS = dict.fromkeys(LABELS, 0.5)


def _scores(**on: float) -> dict[str, float]:
    return {name: on.get(name, 0.1) for name in LABELS}


def _addressees(**p: float) -> dict[str, float]:
    rest = (1.0 - sum(p.values())) / (len(ADDRESSEES) - len(p))
    return {name: p.get(name, rest) for name in ADDRESSEES}


def test_independent_decisions_stand_when_heads_agree() -> None:
    labels, addressee = decide_labels(_scores(surrender=0.9, threat=0.8), THRESHOLDS, _addressees(ru_military=0.9))
    assert (labels, addressee) == (("surrender", "threat"), "ru_military")


def test_an_appeal_to_the_public_carries_civilians() -> None:
    labels, addressee = decide_labels(_scores(desertion=0.9, civilians=0.4), THRESHOLDS, _addressees(ru_public=0.9))
    assert addressee == "ru_public"
    assert labels == ("desertion", "civilians")


def test_threat_is_dropped_for_families_and_family_added() -> None:
    labels, addressee = decide_labels(_scores(threat=0.6, family=0.45, desertion=0.8), THRESHOLDS,
                                      _addressees(ru_families=0.9))
    assert addressee == "ru_families"
    assert labels == ("desertion", "family")


def test_strong_label_evidence_moves_an_uncertain_addressee() -> None:
    # the addressee head hesitates between soldiers and mothers; the family head is sure
    labels, addressee = decide_labels(_scores(family=0.97, desertion=0.7), THRESHOLDS,
                                      _addressees(ru_military=0.45, ru_families=0.40))
    assert addressee == "ru_families"
    assert "family" in labels


def test_ukrainian_families_are_ua_public_with_family_not_civilians() -> None:
    labels, addressee = decide_labels(_scores(family=0.9, civilians=0.3, desertion=0.8), THRESHOLDS,
                                      _addressees(ua_public=0.8))
    assert addressee == "ua_public"
    assert labels == ("desertion", "family")


def test_thresholds_are_each_labels_own() -> None:
    low = {**THRESHOLDS, "pow": 0.3}
    labels, _ = decide_labels(_scores(pow=0.35, family=0.9), low, _addressees(ru_families=0.9))
    assert labels == ("family", "pow")
    labels, _ = decide_labels(_scores(pow=0.35, family=0.9), THRESHOLDS, _addressees(ru_families=0.9))
    assert labels == ("family",)


def test_every_appeal_gets_a_label() -> None:
    labels, addressee = decide_labels(_scores(), THRESHOLDS, _addressees(ua_military=0.9))
    assert addressee == "ua_military"
    assert len(labels) == 1 and labels[0] in ("surrender", "desertion", "pow", "threat")
