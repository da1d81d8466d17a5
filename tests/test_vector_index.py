"""The compact vector index: exact cosines for what it returns, recall against brute force, filters inside retrieval.

No model: vectors are generated here in E5's shape (a narrow cone: a shared mean direction plus
small topic and post components), which is what makes 4-bit codes and near-ties hard.
Small ``fit_size`` / ``chunk_rows`` put every path (exact before the fit, packed chunks, the
open tail) into a few thousand posts. Each test runs with the numpy kernel and, when
installed, NumKong's.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from bot.vector_index import DEFAULT_RESCORE, VectorFilter, VectorIndex, VectorMeta, sqlite_vector_fetcher

try:
    import numkong  # noqa: F401

    KERNELS = [False, True]
except ImportError:
    KERNELS = [False]

DIM = 384
LANGS: tuple[str | None, ...] = ("ru", "uk", "en", None)


def cone(n: int, seed: int = 0, topics: int = 40) -> np.ndarray:
    """Unit vectors shaped like E5's: mean direction (cos ≈ 0.8 between unrelated ones), topics, noise."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(DIM)
    mu *= 0.9 / np.linalg.norm(mu)
    centres = rng.standard_normal((topics, DIM)) * (0.3 / np.sqrt(DIM))
    x = mu + centres[rng.integers(0, topics, n)] + rng.standard_normal((n, DIM)) * (0.25 / np.sqrt(DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)  # what the index gets back from storage


def meta_of(i: int) -> VectorMeta:
    labels = (("pow",) if i % 5 == 0 else ()) + (("threat",) if i % 7 == 0 else ())
    return VectorMeta(date=1_000_000 + i, lang=LANGS[i % 4], labels=labels, appeal=i % 3 == 0, channel_id=-100 - i % 10,
                      story_first=i % 2 == 0)


def build(vecs: np.ndarray, kernel: bool, rescore: int = DEFAULT_RESCORE, query_bits: int = 8) -> VectorIndex:
    index = VectorIndex(DIM, use_numkong=kernel, fit_size=256, chunk_rows=1000, rescore=rescore, query_bits=query_bits)
    index.extend((i + 1, vecs[i].astype(np.float16).tobytes(), meta_of(i)) for i in range(len(vecs)))
    return index


def exact(vecs: np.ndarray, q: np.ndarray, k: int, keep: np.ndarray | None = None) -> list[int]:
    """Brute force: post ids (row + 1) of the k best cosines among the kept rows."""
    sims = (vecs @ q) / np.linalg.norm(vecs, axis=1)
    if keep is not None:
        sims = np.where(keep, sims, -np.inf)
    order = np.lexsort((np.arange(len(sims)), -sims))
    return [int(i) + 1 for i in order[:k] if np.isfinite(sims[i])]


@pytest.fixture(scope="module")
def vecs() -> np.ndarray:
    return cone(4000)


@pytest.fixture(scope="module", params=[(k, b) for k in KERNELS for b in (8, 4)],
                ids=lambda p: f"{'numkong' if p[0] else 'numpy'}-q{p[1]}")
def index(request: pytest.FixtureRequest, vecs: np.ndarray) -> VectorIndex:
    kernel, query_bits = request.param
    return build(vecs, kernel, query_bits=query_bits)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return cone(30, seed=1)


def test_returns_exact_cosines_best_first(index: VectorIndex, vecs: np.ndarray, queries: np.ndarray) -> None:
    for q in queries[:10]:
        hits = index.search(q, 20)
        assert len(hits) == 20
        sims = [s for _, s in hits]
        assert sims == sorted(sims, reverse=True)
        for pid, sim in hits:
            v = vecs[pid - 1]
            assert sim == pytest.approx(float(v @ q / np.linalg.norm(v) / np.linalg.norm(q)), abs=1e-5)


def test_recall_against_brute_force(index: VectorIndex, vecs: np.ndarray, queries: np.ndarray) -> None:
    assert index.kernel in ("numpy", "numkong")
    for k in (10, 50):
        recall = np.mean([len({p for p, _ in index.search(q, k)} & set(exact(vecs, q, k))) / k for q in queries])
        assert recall >= 0.95, (k, recall)


@pytest.mark.parametrize("query_bits", [4, 8])
def test_the_codes_alone_miss_near_ties(vecs: np.ndarray, queries: np.ndarray, query_bits: int) -> None:
    """The exact re-rank matters: the 4-bit codes' own best 15 miss some of the true top 15, so the
    recall test above would fail if the re-rank depth were too small or the re-rank wrong."""
    shallow = build(vecs, False, rescore=1, query_bits=query_bits)  # depth 3·k
    recall = np.mean([len(set(shallow.candidates(q, 5)) & set(exact(vecs, q, 15))) / 15 for q in queries])
    assert recall < 0.95
    assert all(len(shallow.candidates(q, 5)) == 15 for q in queries[:3])


def test_date_bounds_since_inclusive_until_exclusive(index: VectorIndex, vecs: np.ndarray, queries: np.ndarray) -> None:
    since, until = 1_000_000 + 1000, 1_000_000 + 1010  # rows 1000..1009 → posts 1001..1010
    hits = index.search(queries[0], 50, VectorFilter(since=since, until=until))
    assert sorted(p for p, _ in hits) == list(range(1001, 1011))
    assert [p for p, _ in hits] == exact(vecs, queries[0], 50, (np.arange(4000) >= 1000) & (np.arange(4000) < 1010))
    only_last = index.search(queries[0], 5, VectorFilter(since=1_000_000 + 3999))
    assert [p for p, _ in only_last] == [4000]
    assert index.search(queries[0], 5, VectorFilter(until=1_000_000)) == []


def test_date_filter_spanning_some_chunks(index: VectorIndex, vecs: np.ndarray, queries: np.ndarray) -> None:
    """Rows 1,500-2,649 match (dates follow arrival order): two of the four 1,000-row chunks hold none
    and are not scanned; more rows match than are re-ranked, so the codes still choose."""
    keep = (np.arange(4000) >= 1500) & (np.arange(4000) < 2650)
    flt = VectorFilter(since=1_000_000 + 1500, until=1_000_000 + 2650)
    recall = np.mean([len({p for p, _ in index.search(q, 50, flt)} & set(exact(vecs, q, 50, keep))) / 50 for q in queries])
    assert recall >= 0.95
    assert all(keep[p - 1] for q in queries[:5] for p, _ in index.search(q, 50, flt))


@pytest.mark.parametrize(("flt", "keep"), [
    (VectorFilter(langs=("uk",)), lambda i: i % 4 == 1),
    (VectorFilter(langs=("ru", "en")), lambda i: i % 4 in (0, 2)),
    (VectorFilter(langs=("other",)), lambda i: i % 4 == 3),  # unknown language counts as "other"
    (VectorFilter(labels=("pow", "threat")), lambda i: i % 5 == 0 or i % 7 == 0),
    (VectorFilter(labels=("threat",)), lambda i: i % 7 == 0),
    (VectorFilter(appeals_only=True), lambda i: i % 3 == 0),
    (VectorFilter(story_first_only=True), lambda i: i % 2 == 0),
    (VectorFilter(channel_id=-103), lambda i: i % 10 == 3),
    (VectorFilter(channel_id=-102, langs=("en",), appeals_only=True), lambda i: i % 10 == 2 and i % 4 == 2 and i % 3 == 0),
])
def test_each_filter(index: VectorIndex, vecs: np.ndarray, queries: np.ndarray, flt: VectorFilter, keep: object) -> None:
    mask = np.array([keep(i) for i in range(len(vecs))])  # type: ignore[operator]
    for q in queries[:8]:
        hits = index.search(q, 30, flt)
        got = [p for p, _ in hits]
        assert all(mask[p - 1] for p in got)
        truth = exact(vecs, q, 30, mask)
        assert len(truth) == 30
        assert len(set(got) & set(truth)) >= 28  # the filter is applied before ranking, not after


def test_filters_that_match_nothing(index: VectorIndex, queries: np.ndarray) -> None:
    q = queries[0]
    assert index.search(q, 10, VectorFilter(channel_id=12345)) == []  # unknown channel
    assert index.search(q, 10, VectorFilter(labels=("no-such-label",))) == []
    assert index.search(q, 10, VectorFilter(labels=())) == []
    assert index.search(q, 10, VectorFilter(langs=())) == []
    assert index.search(q, 10, VectorFilter(since=10, until=10)) == []


@pytest.mark.parametrize("kernel", KERNELS)
def test_selective_filter_far_from_the_query(kernel: bool) -> None:
    """1 % of posts match, all of them among the farthest from the query: still the nearest of *those*."""
    vecs = cone(10_000, seed=3)
    q = cone(1, seed=4)[0]
    far = np.argsort(vecs @ q)[:100]  # the 100 least similar posts
    index = VectorIndex(DIM, use_numkong=kernel, fit_size=256, chunk_rows=4096)
    far_set = set(far.tolist())
    metas = [meta_of(i) for i in range(len(vecs))]
    index.extend((i + 1, vecs[i], VectorMeta(m.date, "uk" if i in far_set else "ru", m.labels, m.appeal, m.channel_id, True))
                 for i, m in enumerate(metas))
    assert not {p for p, _ in index.search(q, 10)} & {int(i) + 1 for i in far}
    keep = np.zeros(len(vecs), bool)
    keep[far] = True
    hits = index.search(q, 10, VectorFilter(langs=("uk",)))
    assert [p for p, _ in hits] == exact(vecs, q, 10, keep)


def test_exclude(index: VectorIndex, vecs: np.ndarray, queries: np.ndarray) -> None:
    q = vecs[41]
    first = index.search(q, 5)
    assert first[0][0] == 42 and first[0][1] == pytest.approx(1.0, abs=1e-3)
    rest = index.search(q, 5, exclude=42)
    assert 42 not in {p for p, _ in rest}
    assert [p for p, _ in rest][:4] == [p for p, _ in first][1:5]
    assert len(index.search(q, 5, VectorFilter(appeals_only=True), exclude=42)) == 5


def test_k_larger_than_the_matches(index: VectorIndex, queries: np.ndarray) -> None:
    hits = index.search(queries[0], 50, VectorFilter(since=1_000_000 + 10, until=1_000_000 + 17))
    assert sorted(p for p, _ in hits) == list(range(11, 18))
    assert index.search(queries[0], 0) == []


@pytest.mark.parametrize("kernel", KERNELS)
def test_update_meta_changes_results(kernel: bool, vecs: np.ndarray) -> None:
    index = build(vecs[:2000], kernel)
    q = vecs[10]  # post 11: i=10 → lang uk? 10 % 4 == 2 → "en", appeal False (10 % 3), story_first True
    assert index.search(q, 1, VectorFilter(langs=("en",)))[0][0] == 11
    assert 11 not in {p for p, _ in index.search(q, 50, VectorFilter(appeals_only=True))}
    assert index.update_meta(11, VectorMeta(date=5, lang="uk", labels=("family",), appeal=True, channel_id=-999, story_first=False))
    assert 11 not in {p for p, _ in index.search(q, 50, VectorFilter(langs=("en",)))}
    assert index.search(q, 1, VectorFilter(appeals_only=True))[0][0] == 11
    assert index.search(q, 1, VectorFilter(labels=("family",))) == [(11, pytest.approx(1.0, abs=1e-3))]
    assert index.search(q, 5, VectorFilter(channel_id=-999))[0][0] == 11
    assert 11 not in {p for p, _ in index.search(q, 50, VectorFilter(story_first_only=True))}
    assert index.search(q, 1, VectorFilter(until=6))[0][0] == 11
    assert not index.update_meta(999_999, meta_of(0))


@pytest.mark.parametrize("kernel", KERNELS)
def test_readd_replaces_the_vector_and_remove_forgets(kernel: bool, vecs: np.ndarray) -> None:
    index = build(vecs[:2000], kernel)
    assert len(index) == 2000 and 5 in index
    index.add(5, vecs[1500], meta_of(4))  # post 5 now has post 1501's vector
    assert len(index) == 2000
    assert {p for p, _ in index.search(vecs[1500], 2)} == {5, 1501}
    assert 5 not in {p for p, _ in index.search(vecs[4], 3)}
    assert np.allclose(index.vector_of(5), vecs[1500], atol=1e-3)  # type: ignore[arg-type]
    assert index.remove(5) and 5 not in index and len(index) == 1999
    assert 5 not in {p for p, _ in index.search(vecs[1500], 5)}
    assert not index.remove(5)
    assert index.vector_of(5) is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_adding_while_searching(kernel: bool) -> None:
    vecs = cone(6000, seed=5)
    index = build(vecs[:500], kernel)
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                hits = index.search(vecs[0], 10, VectorFilter(langs=("ru", "uk")))
                assert hits and all(1 <= p <= len(vecs) for p, _ in hits)
                assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        for i in range(500, len(vecs)):
            index.add(i + 1, vecs[i], meta_of(i))  # seals (packs) five 1,000-row chunks on the way
            if i % 1000 == 0:
                index.update_meta(i, meta_of(i + 1))
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[0]
    assert len(index) == len(vecs)
    q = vecs[5555]
    assert index.search(q, 1)[0][0] == 5556


def test_empty_index() -> None:
    index = VectorIndex(DIM)
    assert len(index) == 0 and 1 not in index
    assert index.search(np.ones(DIM, np.float32), 10) == []
    assert index.search(np.ones(DIM, np.float32), 10, VectorFilter(langs=("uk",))) == []
    assert index.vector_of(1) is None
    assert not index.update_meta(1, meta_of(0))
    assert index.memory_bytes() < 10_000


@pytest.mark.parametrize("kernel", KERNELS)
def test_before_the_quantiser_is_fitted_search_is_exact(kernel: bool, vecs: np.ndarray, queries: np.ndarray) -> None:
    index = VectorIndex(DIM, use_numkong=kernel, fit_size=1000, chunk_rows=300)
    for i in range(999):
        index.add(i + 1, vecs[i], meta_of(i))
    q = queries[2]
    assert [p for p, _ in index.search(q, 20)] == exact(vecs[:999], q, 20)
    index.add(1000, vecs[999], meta_of(999))  # the fit: every row coded now, three chunks sealed
    hits = index.search(q, 20)
    assert len({p for p, _ in hits} & set(exact(vecs[:1000], q, 20))) >= 19


def test_zero_and_wrong_size_queries(index: VectorIndex) -> None:
    assert index.search(np.zeros(DIM, np.float32), 5) == []
    with pytest.raises(ValueError):
        index.add(10**9, np.ones(10, np.float32), meta_of(0))


@pytest.mark.parametrize("kernel", KERNELS)
def test_memory_per_post(kernel: bool) -> None:
    """≈ 240 B a post without the float16 copy (192 B codes + 8 B packing + 35 B fields), ≈ 768 B more with it."""
    vecs = cone(12_000, seed=6)
    calls: list[int] = []

    def fetch(ids: Sequence[int]) -> Mapping[int, np.ndarray]:
        calls.append(len(ids))
        return {i: vecs[i - 1] for i in ids}

    lean = VectorIndex(DIM, use_numkong=kernel, fetch_vectors=fetch, fit_size=1024, chunk_rows=4096)
    lean.extend((i + 1, vecs[i], meta_of(i)) for i in range(len(vecs)))
    per_post = lean.memory_bytes() / len(vecs)
    assert 225 <= per_post <= 300, per_post  # 12,000 rows in a capacity of 16,384 for the 35 B of fields
    full = VectorIndex(DIM, use_numkong=kernel, fit_size=1024, chunk_rows=4096)
    full.extend((i + 1, vecs[i], meta_of(i)) for i in range(len(vecs)))
    assert 760 <= (full.memory_bytes() - lean.memory_bytes()) / len(vecs) <= 900
    # the lean index re-ranks with fetched vectors, and returns the same as the full one
    q = vecs[77]
    assert lean.search(q, 10) == full.search(q, 10)
    assert calls and max(calls) == DEFAULT_RESCORE  # re-rank depth for k=10
    assert np.allclose(lean.vector_of(78), vecs[77])  # type: ignore[arg-type]


def test_fetched_vectors_missing_from_storage_are_dropped(vecs: np.ndarray) -> None:
    gone = {3, 4}
    index = VectorIndex(DIM, fetch_vectors=lambda ids: {i: vecs[i - 1] for i in ids if i not in gone}, fit_size=100)
    index.extend((i + 1, vecs[i], meta_of(i)) for i in range(300))
    hits = index.search(vecs[2], 5)
    assert 3 not in {p for p, _ in hits} and len(hits) == 5
    assert index.vector_of(4) is None


async def test_asearch_with_an_async_fetch(vecs: np.ndarray) -> None:
    index = VectorIndex(DIM, fetch_vectors=lambda ids: {}, fit_size=100)
    index.extend((i + 1, vecs[i], meta_of(i)) for i in range(500))

    async def fetch(ids: Sequence[int]) -> Mapping[int, np.ndarray]:
        await asyncio.sleep(0)
        return {i: vecs[i - 1] for i in ids}

    hits = await index.asearch(vecs[9], 3, fetch=fetch)
    assert hits[0][0] == 10
    assert [p for p, _ in hits] == exact(vecs[:500], vecs[9], 3)
    assert await index.asearch(vecs[9], 3, VectorFilter(channel_id=1)) == []


async def test_load_streams_chunks_of_float16_bytes(vecs: np.ndarray) -> None:
    async def chunks() -> AsyncIterator[Iterable[tuple[int, bytes, VectorMeta]]]:
        for s in range(0, 900, 300):
            yield [(i + 1, vecs[i].astype(np.float16).tobytes(), meta_of(i)) for i in range(s, s + 300)]
        yield [(5000, b"\x00" * 10, meta_of(0))]  # a blob of the wrong size is skipped

    index = VectorIndex(DIM, fit_size=256)
    assert await index.load(chunks()) == 900
    assert len(index) == 900 and 5000 not in index
    assert np.array_equal(index.vector_of(7), vecs[6].astype(np.float16).astype(np.float32))  # type: ignore[arg-type]


@pytest.mark.parametrize("kernel", KERNELS)
def test_ids_in_any_order(kernel: bool) -> None:
    """Ids arriving out of order (enough of them to rebuild the sorted id keys: > 4,096) are all found."""
    vecs = cone(6000, seed=8)
    index = VectorIndex(DIM, use_numkong=kernel, fit_size=256, chunk_rows=1000)
    order = np.random.default_rng(7).permutation(len(vecs))
    index.extend((int(i) * 10 + 10, vecs[i], meta_of(int(i))) for i in order[:3000])
    for i in order[3000:][::-1]:
        index.add(int(i) * 10 + 10, vecs[i], meta_of(int(i)))
    assert index.update_meta(20, meta_of(1))
    index.extend([(10, vecs[0], meta_of(0)), (20, vecs[1], meta_of(1))])  # already there: replaced
    assert len(index) == len(vecs)
    assert all(i * 10 + 10 in index for i in range(len(vecs)))
    assert 15 not in index and 0 not in index and 60_010 not in index
    assert index.search(vecs[1234], 1)[0][0] == 12350
    assert index.search(vecs[1], 1)[0][0] == 20


def test_sqlite_fetcher(tmp_path: Path, vecs: np.ndarray) -> None:
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE classifications (post_id INTEGER PRIMARY KEY, embedding BLOB)")
        db.executemany("INSERT INTO classifications VALUES (?, ?)",
                       [(i + 1, vecs[i].astype(np.float16).tobytes()) for i in range(2000)] + [(5000, None)])
    fetch = sqlite_vector_fetcher(str(path), batch=100)
    got = fetch([*range(1, 1001), 5000, 6000])
    assert len(got) == 1000 and np.allclose(got[17], vecs[16], atol=1e-3)
    index = VectorIndex(DIM, fetch_vectors=fetch, fit_size=256)
    index.extend((i + 1, vecs[i], meta_of(i)) for i in range(2000))
    assert [p for p, _ in index.search(vecs[3], 10)] == exact(vecs[:2000], vecs[3], 10)


@pytest.mark.skipif(True not in KERNELS, reason="numkong not installed")
def test_numkong_and_numpy_kernels_agree(vecs: np.ndarray, queries: np.ndarray) -> None:
    a, b = build(vecs, True), build(vecs, False)
    for q in queries[:5]:
        assert a.candidates(q, 10) == b.candidates(q, 10)
        assert a.search(q, 10, VectorFilter(langs=("uk",))) == b.search(q, 10, VectorFilter(langs=("uk",)))


@pytest.mark.parametrize("spread", [10, 1000, 10**6])
def test_candidate_selection_is_the_top_depth(spread: int) -> None:
    """The histogram cut-off picks exactly the ``depth`` best scores, whatever their range and ties."""
    from bot.vector_index import _select

    rng = np.random.default_rng(spread)
    scores = rng.integers(-spread, spread, 50_000).astype(np.int32)
    mask = rng.random(50_000) < 0.3
    for m in (None, mask):
        rows = _select(scores, None if m is None else np.flatnonzero(m), 160)
        assert len(rows) == 160 and len(set(rows.tolist())) == 160
        pool = scores if m is None else scores[m]
        assert np.sort(scores[rows]).tolist() == np.sort(pool)[-160:].tolist()
        if m is not None:
            assert m[rows].all()
    assert len(_select(scores[:100], None, 160)) == 100
