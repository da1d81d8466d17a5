"""A synthetic archive for the scale benches (search, research): built once into a file, reused.

Posts are synthesised from the labelled data's sentences (real Russian, Ukrainian and
English vocabulary), spread over 200 channels and a period; a tenth are appeals with
labels. With ``vectors=True`` every post carries a random unit embedding (float16, as the
pipeline stores them): the scale benches measure time and space, quality is
``bench/retrieval.py``'s job. Rows go in through ``Storage.load_archive``, the storage API.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bot.storage import ArchivedPost, Storage
from models.taxonomy import LABELS, Classification
from models.training.dataset import load_examples

DIM = 384


def synthetic_posts(n: int, *, start: datetime, days: int, vectors: bool, seed: int = 0) -> Iterator[ArchivedPost]:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    sentences = []
    for e in load_examples():
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", e.text) if len(s.strip()) > 20]
    t0 = int(start.timestamp())
    for i in tqdm(range(n), desc="synthesising posts", unit="post", mininterval=10):
        text = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 4)))
        channel = f"channel_{rng.randrange(200)}"
        date = datetime.fromtimestamp(t0 + rng.randrange(days * 86400), UTC)
        lang = rng.choice(["ru", "ru", "uk", "uk", "en"])
        appeal = rng.random() < 0.1
        labels = tuple(rng.sample(LABELS, rng.randint(1, 2))) if appeal else ()
        score = rng.uniform(0.6, 1) if appeal else rng.uniform(0, 0.4)
        vec = None
        if vectors:
            vec = nrng.standard_normal(DIM).astype(np.float32)
            vec /= np.linalg.norm(vec)
        if appeal or vectors:
            c = Classification(appeal, score, labels, {}, "ru_military" if appeal else None, (), lang)
        else:
            c = Classification(False, score, (), {}, None, (), lang)
        yield ArchivedPost(channel, i, text, date, lang, c, vec)


async def build_archive(db: Path, n: int, *, start: datetime, days: int, vectors: bool, seed: int = 0) -> int:
    storage = Storage(db)
    await storage.open()
    try:
        return await storage.load_archive(synthetic_posts(n, start=start, days=days, vectors=vectors, seed=seed))
    finally:
        await storage.close()
