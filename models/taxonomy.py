"""The taxonomy's vocabulary (``../shared/TAXONOMY.md``) and the one result type of the model.

The model package owns its labels, as detoxify reads its class names from its checkpoint:
``bot/`` imports them from here, never the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LABELS: tuple[str, ...] = ("surrender", "desertion", "family", "pow", "civilians", "threat")
ADDRESSEES: tuple[str, ...] = ("ru_military", "ru_families", "ru_public", "ua_military", "ua_public")
LANGUAGES: tuple[str, ...] = ("ru", "uk", "en", "other")

# What users read in alerts, digests and search results.
LABEL_NAMES: dict[str, str] = {
    "surrender": "surrender",
    "desertion": "desertion",
    "family": "families",
    "pow": "prisoners speak",
    "civilians": "civilians",
    "threat": "threat",
}
ADDRESSEE_NAMES: dict[str, str] = {
    "ru_military": "Russian soldiers",
    "ru_families": "Russian soldiers' families",
    "ru_public": "Russian public",
    "ua_military": "Ukrainian soldiers",
    "ua_public": "Ukrainian public",
}
LANG_NAMES: dict[str, str] = {"ru": "Russian", "uk": "Ukrainian", "en": "English", "other": "other"}


def labels_text(labels: Sequence[str]) -> str:
    """Labels as users read them; an appeal with no label is still an appeal."""
    return ", ".join(LABEL_NAMES.get(lbl, lbl) for lbl in labels) or "appeal"


@dataclass(frozen=True, slots=True)
class Classification:
    """What the model says about one text."""

    appeal: bool
    score: float
    labels: tuple[str, ...]
    label_scores: dict[str, float]
    addressee: str | None
    reasons: tuple[str, ...]
    lang: str = "other"
    lang_confidence: float = 0.0
