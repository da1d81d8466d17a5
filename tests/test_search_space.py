"""The language-neutral search space (models.search_space) and the vector index that holds it.

Synthetic embeddings with a known structure: topic + language offset. In raw space a query
meets same-language posts on any topic first; with the centroids out, the same topic in
another language comes first. The real encoder's figures are in tests/test_search_hybrid.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from bot.vector_index import VectorIndex, VectorMeta
from models.search_space import LANGS, SearchSpace, build_search_space, load_or_build, pseudo_queries

DIM = 32
RNG = np.random.default_rng(7)
LANG_OFFSET = {lang: 3.0 * RNG.standard_normal(DIM).astype(np.float32) for lang in LANGS}
QUERY_OFFSET = 2.0 * RNG.standard_normal(DIM).astype(np.float32)  # short texts sit apart from long ones


def _topic(name: str) -> np.ndarray:
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _fake_embed(texts: list[str]) -> np.ndarray:
    """'<lang>:<topic>' → topic + language offset (+ the query offset for texts of under 7 words)."""
    out = []
    for t in texts:
        lang, _, topic = t.partition(":")
        v = _topic(topic.split()[0] if topic.split() else "") + LANG_OFFSET.get(lang, 0)
        if len(t.split()) < 7:
            v = v + QUERY_OFFSET
        out.append(_unit(v))
    return np.stack(out).astype(np.float32)


def _meta(lang: str | None) -> VectorMeta:
    return VectorMeta(date=0, lang=lang, labels=(), appeal=True, channel_id=1, story_first=True)


@pytest.fixture()
def space() -> SearchSpace:
    texts = {lang: [f"{lang}:t{i} " + " ".join(f"w{j}" for j in range(12)) for i in range(200)] for lang in LANGS}
    return build_search_space(_fake_embed, texts, encoder="fake", per_language=150)


def test_centroids_remove_the_language_and_keep_the_topic(space: SearchSpace) -> None:
    posts = [f"{lang}:{topic} a b c d e f g h" for topic in ("surrender", "weather") for lang in LANGS]
    langs = [p.split(":")[0] for p in posts]
    raw = _fake_embed(posts)
    query_raw = _fake_embed(["en:surrender now"])[0]
    # raw space: the English weather post beats the Ukrainian and Russian surrender posts
    raw_order = [posts[i] for i in np.argsort(-(raw @ query_raw))]
    assert raw_order.index("en:weather a b c d e f g h") < raw_order.index("uk:surrender a b c d e f g h")
    neutral = space.post_vectors(raw, langs)
    np.testing.assert_allclose(np.linalg.norm(neutral, axis=1), 1.0, rtol=1e-5)
    q = space.query_vector(query_raw, "en")
    top3 = {posts[i] for i in np.argsort(-(neutral @ q))[:3]}
    assert top3 == {f"{lang}:surrender a b c d e f g h" for lang in LANGS}


def test_unknown_language_uses_the_mean_centroid(space: SearchSpace) -> None:
    mean = np.mean([space.posts[lang] for lang in LANGS], axis=0)
    np.testing.assert_allclose(space.post_centroid("other"), mean, rtol=1e-6)
    np.testing.assert_allclose(space.post_centroid(None), mean, rtol=1e-6)
    np.testing.assert_allclose(space.query_centroid("de"), np.mean([space.queries[lang] for lang in LANGS], axis=0),
                               rtol=1e-6)


def test_pseudo_queries_are_short_runs_of_a_post() -> None:
    texts = ["Русский солдат, сдавайся — останешься жив, звони 149.200", "два слова", "one two three four"]
    got = pseudo_queries(texts, seed=3)
    assert len(got) == 2  # "два слова" has fewer than three words
    for q, text in zip(got, [texts[0], texts[2]], strict=True):
        words = q.split()
        assert 2 <= len(words) <= 6
        assert all(w in text for w in words)
    assert pseudo_queries(texts, seed=3) == got  # seeded


def test_saved_space_is_reused_only_for_its_encoder(space: SearchSpace, tmp_path: Path) -> None:
    path = tmp_path / "space.npz"
    space.save(path)
    back = SearchSpace.load(path)
    assert back.encoder == "fake"
    for lang in LANGS:
        np.testing.assert_array_equal(back.posts[lang], space.posts[lang])
        np.testing.assert_array_equal(back.queries[lang], space.queries[lang])
    calls: list[int] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return _fake_embed(texts)

    assert load_or_build(path, counting, encoder="fake").encoder == "fake" and not calls
    rebuilt = load_or_build(path, counting, encoder="other-model")  # the project's labelled posts, embedded
    assert rebuilt.encoder == "other-model" and calls
    assert SearchSpace.load(path).encoder == "other-model"
    path.write_bytes(b"not an npz")
    calls.clear()
    assert load_or_build(path, counting, encoder="other-model").encoder == "other-model" and calls


def _vectors(n: int) -> tuple[np.ndarray, list[str]]:
    langs = [LANGS[i % 3] for i in range(n)]
    vecs = np.stack([_unit(RNG.standard_normal(DIM).astype(np.float32) + LANG_OFFSET[lang]) for lang in langs])
    return vecs.astype(np.float32), langs


@pytest.mark.parametrize("fetch", [False, True])
def test_index_with_centroids_ranks_by_neutral_cosine(space: SearchSpace, fetch: bool) -> None:
    vecs, langs = _vectors(600)
    stored = {i + 1: vecs[i].astype(np.float16).astype(np.float32) for i in range(len(vecs))}
    # rescore 10: the codes alone choose the candidates, so they must be codes of the neutral vectors
    index = VectorIndex(DIM, centroids=space.posts, fit_size=256, chunk_rows=256, rescore=10,
                        fetch_vectors=(lambda ids: {i: stored[i] for i in ids if i in stored}) if fetch else None)
    assert index.language_neutral
    index.extend([(i + 1, vecs[i], _meta(langs[i])) for i in range(len(vecs))])
    q = space.query_vector(RNG.standard_normal(DIM).astype(np.float32), "ru")
    expected = space.post_vectors(np.stack(list(stored.values())), langs) @ q
    hits = index.search(q, 10)
    assert [pid for pid, _ in hits] == [int(i) + 1 for i in np.argsort(-expected)[:10]]
    assert all(abs(sim - expected[pid - 1]) < 2e-3 for pid, sim in hits)
    got = index.vector_of(5)
    assert got is not None
    np.testing.assert_allclose(got, space.post_vectors(stored[5][None, :], [langs[4]])[0], atol=2e-3)
    many = index.vectors_of([5, 7, 10_000])
    assert set(many) == {5, 7}
    np.testing.assert_allclose(many[5], got, atol=1e-6)


@pytest.mark.parametrize("fetch", [False, True])
def test_rows_before_the_quantiser_is_fitted_are_neutral_too(space: SearchSpace, fetch: bool) -> None:
    vecs, langs = _vectors(40)
    stored = {i + 1: vecs[i] for i in range(len(vecs))}
    index = VectorIndex(DIM, centroids=space.posts, fit_size=1000,
                        fetch_vectors=(lambda ids: {i: stored[i] for i in ids if i in stored}) if fetch else None)
    index.extend([(i + 1, vecs[i], _meta(langs[i])) for i in range(len(vecs))])
    q = space.query_vector(RNG.standard_normal(DIM).astype(np.float32), "uk")
    expected = space.post_vectors(vecs, langs) @ q
    assert [pid for pid, _ in index.search(q, 5)] == [int(i) + 1 for i in np.argsort(-expected)[:5]]


def test_a_post_of_unknown_language_loses_the_mean_centroid(space: SearchSpace) -> None:
    index = VectorIndex(DIM, centroids=space.posts)
    vec = _unit(RNG.standard_normal(DIM).astype(np.float32))
    for lang in (None, "other"):
        np.testing.assert_allclose(index.neutral(vec, [lang]), space.post_vectors(vec[None, :], [lang])[0], atol=1e-6)
    with pytest.raises(ValueError):
        index.neutral(np.zeros(DIM + 1, np.float32), ["ru"])
    with pytest.raises(ValueError):
        index.neutral(np.zeros((2, DIM), np.float32), ["ru"])


def test_feedback_needs_several_hits_above_the_floor() -> None:
    """One chance hit must not pull its neighbours over the floor; several real ones may."""
    from bot.search import FEEDBACK_MIN_HITS, _vector_hits

    q = _unit(RNG.standard_normal(DIM).astype(np.float32))
    other = _unit(RNG.standard_normal(DIM).astype(np.float32))
    other = _unit(other - (other @ q) * q)  # orthogonal to the query

    def mix(a: float) -> np.ndarray:  # cosine a to the query, the rest along `other`, a little noise
        return _unit(a * q + np.sqrt(1 - a * a) * other + 0.05 * RNG.standard_normal(DIM).astype(np.float32))

    def index_of(n_hits: int) -> VectorIndex:
        index = VectorIndex(DIM)
        rows = [mix(0.5) for _ in range(n_hits)] + [mix(0.2) for _ in range(6)]  # 6 neighbours under the floor
        for pid, v in enumerate(rows, 1):
            index.add(pid, v, _meta("ru"))
        return index

    one = _vector_hits(index_of(1), q, 30, None, 0.3, 5)
    assert one == [1]
    several = _vector_hits(index_of(FEEDBACK_MIN_HITS), q, 30, None, 0.3, 5)
    assert set(several) > set(range(1, FEEDBACK_MIN_HITS + 1))  # the moved query reaches the neighbours


def test_a_language_change_needs_the_vector_again(space: SearchSpace) -> None:
    index = VectorIndex(DIM, centroids=space.posts)
    vec = _unit(RNG.standard_normal(DIM).astype(np.float32))
    index.add(1, vec, _meta("ru"))
    assert index.update_meta(1, _meta("ru"))  # same language: fields only
    assert not index.update_meta(1, _meta("uk"))  # its centroid changes: the caller re-adds it
    index.add(1, vec, _meta("uk"))
    got = index.vector_of(1)
    assert got is not None
    np.testing.assert_allclose(got, space.post_vectors(vec[None, :], ["uk"])[0], atol=2e-3)
    plain = VectorIndex(DIM)
    plain.add(1, vec, _meta("ru"))
    assert plain.update_meta(1, _meta("uk"))  # without centroids the vector does not depend on the language
    assert not plain.language_neutral
