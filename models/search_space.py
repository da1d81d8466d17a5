"""A language-neutral space for search: each language's centroid taken out of the embeddings.

Why: a multilingual encoder such as E5 places every text near the centre of *its own
language*. An English query's nearest posts are then English posts on any topic before
the Ukrainian post that answers it, and cross-language search fails. Subtracting each
language's mean embedding (Libovický et al., 2020, "On the Language Neutrality of
Pre-trained Multilingual Representations") removes most of that shared language
component and leaves the topic. On the judged query set (``bench/retrieval.py``), vector
recall@10 rose from 0.39 to 0.53 and cross-language recall@10 from 0.22 to 0.41.

Posts and queries get separate centroids: queries are a few words, posts are paragraphs,
and the encoder puts the two apart as well. A post's centroid is the mean of reference
posts in its language; a query's is the mean of *pseudo-queries*: random runs of two to
six words cut from those posts, so no real query (nor any judged relevance) is needed.
Fifty posts a language already give the same figures as a thousand, so the centroids
are computed once per encoder from the labelled posts shipped in ``models/data`` and
kept beside the model (``models/artifacts/search_space.npz`` for the offline E5; the
cache for any other encoder).

Only search and ``/similar`` use this space. Repost grouping keeps the raw embeddings,
whose cosine threshold was tuned on them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LANGS = ("ru", "uk", "en")
REFERENCE_POSTS = 300  # per language; 50 already give the same retrieval figures
FILE_NAME = "search_space.npz"
DATA_DIR = Path(__file__).resolve().parent / "data"  # the labelled posts (models/data)
_WORD = re.compile(r"[\w'’-]+")


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """Per-language centroids of post and of query embeddings, and the maps into the neutral space.

    A language outside ``ru``/``uk``/``en`` (or unknown) uses the mean of the three centroids.
    """

    encoder: str  # which encoder's embeddings these centroids belong to
    posts: Mapping[str, np.ndarray]
    queries: Mapping[str, np.ndarray]

    @property
    def dim(self) -> int:
        return int(next(iter(self.posts.values())).shape[0])

    def post_centroid(self, lang: str | None) -> np.ndarray:
        return _centroid(self.posts, lang)

    def query_centroid(self, lang: str | None) -> np.ndarray:
        return _centroid(self.queries, lang)

    def post_vectors(self, vectors: np.ndarray, langs: Sequence[str | None]) -> np.ndarray:
        """Posts' embeddings (n × dim) in the neutral space: centroid of each one's language out, unit length."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(langs), -1)
        return _unit(vectors - np.stack([self.post_centroid(lang) for lang in langs]))

    def query_vector(self, vector: np.ndarray, lang: str | None) -> np.ndarray:
        """A query's embedding in the neutral space."""
        return _unit(np.asarray(vector, dtype=np.float32).reshape(-1) - self.query_centroid(lang))

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {"encoder": np.array(self.encoder)}
        arrays |= {f"post_{k}": v for k, v in self.posts.items()} | {f"query_{k}": v for k, v in self.queries.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # a bot and a worker may build it at once
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> SearchSpace:
        with np.load(path, allow_pickle=False) as z:
            posts = {k.removeprefix("post_"): np.asarray(z[k], np.float32) for k in z.files if k.startswith("post_")}
            queries = {k.removeprefix("query_"): np.asarray(z[k], np.float32) for k in z.files if k.startswith("query_")}
            encoder = str(z["encoder"])
        if set(posts) != set(LANGS) or set(queries) != set(LANGS):
            raise ValueError(f"{path}: expected centroids for {', '.join(LANGS)}")
        return cls(encoder, posts, queries)


def _centroid(table: Mapping[str, np.ndarray], lang: str | None) -> np.ndarray:
    got = table.get(lang or "other")
    if got is not None:
        return got
    return np.asarray(np.mean([table[k] for k in LANGS], axis=0), dtype=np.float32)


def pseudo_queries(texts: Sequence[str], *, seed: int = 0) -> list[str]:
    """One run of two to six consecutive words from each text (texts with fewer than three words are skipped)."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        words = _WORD.findall(text)
        if len(words) < 3:
            continue
        n = rng.randint(2, 6)
        start = rng.randint(0, max(0, len(words) - n))
        out.append(" ".join(words[start : start + n]))
    return out


def build_search_space(embed: Callable[[list[str]], np.ndarray], texts: Mapping[str, Sequence[str]], *,
                       encoder: str, per_language: int = REFERENCE_POSTS, seed: int = 0) -> SearchSpace:
    """Centroids from reference posts by language (``texts``: lang → posts), embedded with ``embed``."""
    rng = random.Random(seed)
    posts: dict[str, np.ndarray] = {}
    queries: dict[str, np.ndarray] = {}
    for lang in LANGS:
        pool = list(texts.get(lang, ()))
        if not pool:
            raise ValueError(f"no reference posts in {lang!r}")
        sample = rng.sample(pool, min(per_language, len(pool)))
        posts[lang] = np.asarray(embed(sample), np.float32).mean(axis=0)
        queries[lang] = np.asarray(embed(pseudo_queries(sample, seed=seed)), np.float32).mean(axis=0)
    return SearchSpace(encoder, posts, queries)


def reference_texts(data_dir: Path = DATA_DIR) -> dict[str, list[str]]:
    """The labelled posts shipped with the project, by language (only "text" and "lang" are read).

    Read here rather than through ``models.training``: the running bot loads no training code.
    """
    out: dict[str, list[str]] = {lang: [] for lang in LANGS}
    for path in [*sorted(data_dir.glob("posts_*.jsonl")), *sorted((data_dir / "real").glob("real_*.jsonl"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            text, lang = row.get("text"), row.get("lang")
            if isinstance(text, str) and text.strip() and lang in out:
                out[lang].append(text)
    return out


def load_or_build(path: Path, embed: Callable[[list[str]], np.ndarray], *, encoder: str) -> SearchSpace:
    """The space stored at ``path`` if it belongs to ``encoder``; otherwise built now (about a minute) and saved."""
    if path.is_file():
        try:
            space = SearchSpace.load(path)
            if space.encoder == encoder:
                return space
            log.info("%s belongs to the encoder %r, not %r: building it again", path, space.encoder, encoder)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("could not read %s (%s): building it again", path, exc)
    log.info("building the language-neutral search space for %r from reference posts", encoder)
    space = build_search_space(embed, reference_texts(), encoder=encoder)
    space.save(path)
    return space
