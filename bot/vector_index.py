"""Every stored post's search embedding in ~240 B of RAM, searched with the filters applied inside retrieval.

Why this shape — ``bench/vectors.py`` (real multilingual-e5-small embeddings of the project's
~3,000 posts grown to 1M by mixing; 2 shared cores, load ≈ 4; "vector part" = everything
``search`` does; recall against exact float32 cosine search, with and without filters):

  1M posts; ms: no filter med/p95     RAM      med    p95   worst p95   recall@50 (all filters)
  float32 exact (the old design)       1.57 GB  149    177   180         1.0
  int8 codes, numpy scan               419 MB    86    106   112         0.97 (approximate cosines)
  int8 codes, NumKong SIMD scan        419 MB    33     48    48         0.97-0.98
  binary codes + exact re-rank 5,000   851 MB    56     79    79         0.78-0.98
  faiss 4-bit SQ + ID selector + 256   227 MB    48     57    57         0.97-0.99
  this: 4-bit codes, NumKong scan,     240 MB    24     32    32         0.987-0.997 (r@10 ≥ 0.998)
    exact re-rank of 160 from SQLite   (100k: 30 MB, 4 ms, p95 8)
  HNSW over int8 (usearch; 100k only: 884 B a post, 42 s to build): recall@50 0.78 under a 9 %
    filter (over-fetching, then dropping), 28 ms under a 1 % one.

- E5 vectors crowd into a narrow cone (unrelated posts at cosine ≈ 0.8, a query's 50 nearest
  within ~0.02 of each other), so 1-bit codes cannot order near-ties; 4 bits can, once the
  best few hundred by code are re-ranked exactly.
- numpy has no integer GEMV: codes must be widened to float32 block by block (int8: 86 ms at
  1M). NumKong's packed int4 kernel scans 1M codes in ~10-15 ms (faiss' 4-bit scan: ~48 ms).
- A graph index (HNSW) needs 3-4× this memory and cannot honour a narrow filter: its walk runs
  out of matching neighbours. A scan with the filter as a mask can.

So each post is held as 4-bit scalar-quantised codes (per-dimension ranges fitted on the first
``fit_size`` vectors) plus 35 B of id and filter fields in numpy arrays: 240 B a post at 1M (192
of codes, 8 of NumKong's packing, 35 of fields, the rest spare capacity). A query
is quantised to 8 bits and scanned as two int4 planes (+4-6 ms at 1M over a 4-bit query, but
160 re-ranked rows do what 256 did: fewer rows to read from the database). Filters become a
vectorised mask (~0.5 ms at 1M) before candidates are chosen, so ``lang:uk since:…`` returns the
nearest *matching* posts however far they sit from the top of the unfiltered ranking; code
chunks where no row matches are not scanned (rows follow arrival, so a date range skips most).
The candidates are then scored exactly on their float16 embeddings, so every returned cosine is
exact. Those come from ``fetch_vectors``, a callback the caller wires to the database
(``sqlite_vector_fetcher``: 160 rows by primary key cost ~1 ms with the file in the page cache,
~10-18 ms with it partly evicted), or, without one, from a float16 copy kept in memory (768 B
more a post: 1 GB at 1M; within 400 MB up to ~390k posts).

Without NumKong the same codes are scanned by numpy: same results, ~7× slower (1M: ~170 ms).
Appends are amortised (capacity doubling for the per-post fields, fixed 65,536-row code chunks
packed once full); a post re-added with a new vector keeps its id and gets a new row, the old one
becomes a tombstone. ``add``/``update_meta`` may run while ``search`` runs in another thread: a
search works on a snapshot (row count, chunk list) taken under a lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.taxonomy import LABELS, LANGUAGES

_numkong: Any
try:  # the SIMD int4 kernel (a dependency); numpy does the same arithmetic ~10× slower where it won't install
    import numkong as _numkong
except ImportError:  # pragma: no cover - depends on the environment
    _numkong = None

LANG_CODES: dict[str, int] = {lang: i for i, lang in enumerate(LANGUAGES)}
OTHER_LANG = LANG_CODES["other"]  # unknown or missing languages count as "other"
LABEL_BITS: dict[str, int] = {label: 1 << i for i, label in enumerate(LABELS)}

_LIVE, _APPEAL, _FIRST = 1, 2, 4  # bits of the per-row flags byte

# Re-rank depth: candidates scored exactly per query, max(rescore, 3·k). At 1M posts (bench/vectors.py)
# an 8-bit query needs ~160 for recall@50 ≈ 0.98 (128: 0.97, 192: 0.99); a 4-bit one ~256.
DEFAULT_RESCORE = 160
DEFAULT_QUERY_BITS = 8
DEFAULT_FIT_SIZE = 4096
DEFAULT_CHUNK_ROWS = 1 << 16
_PERCENTILE = 0.5  # per-dimension code range: the 0.5th..99.5th percentile of the fit sample

FetchVectors = Callable[[Sequence[int]], Mapping[int, np.ndarray]]
AsyncFetchVectors = Callable[[Sequence[int]], Awaitable[Mapping[int, np.ndarray]]]


@dataclass(frozen=True, slots=True)
class VectorMeta:
    """The fields a post is filtered on. ``date`` is unix seconds; ``lang`` None means unknown ("other")."""

    date: int
    lang: str | None
    labels: tuple[str, ...]
    appeal: bool
    channel_id: int
    story_first: bool


@dataclass(frozen=True, slots=True)
class VectorFilter:
    """What a post must match to be ranked at all.

    ``since`` ≤ date < ``until`` (unix seconds; ``until`` exclusive). ``langs``: any of them
    ("other" also matches unknown). ``labels``: any of them (only labels in the taxonomy can
    match). ``channel_id``: the posts of one channel. ``appeals_only`` / ``story_first_only``:
    appeals / the first post of each story (and posts of no story).
    """

    since: int | None = None
    until: int | None = None
    langs: Collection[str] | None = None
    labels: Collection[str] | None = None
    appeals_only: bool = False
    channel_id: int | None = None
    story_first_only: bool = False


Row = tuple[int, bytes | np.ndarray, VectorMeta]  # what ``extend`` takes: id, float16 bytes or a vector, fields


@dataclass(slots=True)
class _Snapshot:
    n: int
    coded: int
    ids: np.ndarray
    dates: np.ndarray
    lang: np.ndarray
    labels: np.ndarray
    flags: np.ndarray
    chan: np.ndarray
    sealed: list[Any]
    tail: np.ndarray
    f16: list[np.ndarray]
    pending: list[np.ndarray]
    channels: dict[int, int]
    dead: int


class VectorIndex:
    """Post ids → 4-bit codes of their embeddings + filter fields; exact cosines for what it returns."""

    def __init__(self, dim: int = 384, *, fetch_vectors: FetchVectors | None = None, rescore: int = DEFAULT_RESCORE,
                 query_bits: int = DEFAULT_QUERY_BITS, fit_size: int = DEFAULT_FIT_SIZE, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 use_numkong: bool | None = None, centroids: Mapping[str, np.ndarray] | None = None) -> None:
        """``fetch_vectors``: exact float vectors by post id, for the re-rank and ``vector_of``; without it
        the index keeps a float16 copy of every vector in memory. ``rescore``: candidates re-ranked
        exactly (at least 3×k). ``query_bits``: 8 (two int4 planes) or 4. ``fit_size``: vectors seen
        before the quantiser is fitted (until then search is exact). ``use_numkong``: force the SIMD
        kernel on or off (None: when installed). ``centroids``: language → mean post embedding
        (``models.search_space``): each vector added or fetched has its language's centroid taken
        out and is re-normalised, so the index holds (and ``search``/``vector_of`` return cosines
        in) the language-neutral space; queries must then be in that space too. A language
        without a centroid uses the mean of the given ones.
        """
        if dim % 2:
            raise ValueError("dim must be even (two 4-bit codes a byte)")
        if query_bits not in (4, 8):
            raise ValueError("query_bits must be 4 or 8")
        if use_numkong and _numkong is None:
            raise RuntimeError("numkong is not installed")
        self.dim = dim
        self.rescore = max(1, rescore)
        self.query_bits = query_bits
        self.fit_size = max(1, fit_size)
        self.chunk_rows = max(1, chunk_rows)
        self._nk: Any = _numkong if (use_numkong is None or use_numkong) else None
        self._fetch = fetch_vectors
        self._lock = threading.RLock()
        self._n = 0
        self._live = 0
        self._ids = np.zeros(0, np.int64)
        self._dates = np.zeros(0, np.int64)
        self._lang = np.zeros(0, np.uint8)
        self._labels = np.zeros(0, np.uint8)
        self._flags = np.zeros(0, np.uint8)
        self._chan = np.zeros(0, np.int32)
        self._channels: dict[int, int] = {}
        # id → row: a sorted key array for ids that arrive in increasing order (the usual case),
        # a dict for the few that don't; rebuilt into the sorted arrays when the dict grows.
        self._key_ids = np.zeros(0, np.int64)
        self._key_rows = np.zeros(0, np.int32)
        self._nkeys = 0
        self._extra: dict[int, int] = {}
        # the quantiser: code = clip(round((x - lo) / step), 0, 15) - 8
        self._lo: np.ndarray | None = None
        self._step: np.ndarray | None = None
        self._coded = 0  # rows with codes (all rows once fitted)
        self._sealed: list[Any] = []  # full chunks: numkong packed matrices, or raw uint8 codes
        self._tail = np.zeros((0, dim // 2), np.uint8)
        self._tail_n = 0
        self._f16: list[np.ndarray] = []  # in-memory exact vectors, chunk_rows rows a chunk
        self._pending: list[np.ndarray] = []  # float32 rows not yet coded (fetch mode, before the fit)
        self._centroids: np.ndarray | None = None  # by language code
        if centroids:
            given = [np.asarray(v, np.float32).reshape(-1) for v in centroids.values()]
            if any(v.shape[0] != dim for v in given):
                raise ValueError(f"centroids must be {dim}-dim")
            mean = np.mean(given, axis=0)
            self._centroids = np.stack([np.asarray(centroids[lang], np.float32).reshape(-1) if lang in centroids
                                        else mean for lang in LANGUAGES]).astype(np.float32)

    # -- the space vectors live in ------------------------------------------------------------

    @property
    def language_neutral(self) -> bool:
        """Whether vectors (and so cosines) are in the language-neutral space (``centroids`` given)."""
        return self._centroids is not None

    def neutral(self, vectors: np.ndarray, langs: Sequence[str | None] | np.ndarray) -> np.ndarray:
        """Vectors as the index holds them: language centroid out, unit length (as given without centroids).

        ``langs``: language names, or the index's language codes (uint8 array).
        """
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim}-dim vectors, got {vecs.shape[-1]}")
        if self._centroids is None:
            return vecs
        single = vecs.ndim == 1
        vecs = vecs.reshape(-1, self.dim)
        codes = (np.asarray(langs, dtype=np.int64) if isinstance(langs, np.ndarray)
                 else np.array([LANG_CODES.get(lang or "other", OTHER_LANG) for lang in langs], np.int64))
        if len(codes) != len(vecs):
            raise ValueError(f"{len(vecs)} vectors, {len(codes)} languages")
        out = vecs - self._centroids[codes]
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out

    # -- size and lookup -------------------------------------------------------------------

    def __len__(self) -> int:
        return self._live

    def __contains__(self, post_id: object) -> bool:
        if not isinstance(post_id, int | np.integer):
            return False
        with self._lock:
            return self._row_of(int(post_id)) is not None

    @property
    def kernel(self) -> str:
        return "numkong" if self._nk is not None else "numpy"

    def _row_of(self, post_id: int) -> int | None:
        row = self._extra.get(post_id)
        if row is None and self._nkeys:
            keys = self._key_ids[: self._nkeys]
            pos = int(np.searchsorted(keys, post_id))
            if pos < self._nkeys and keys[pos] == post_id:
                row = int(self._key_rows[pos])
        if row is None or not self._flags[row] & _LIVE:
            return None
        return row

    def _set_key(self, post_id: int, row: int) -> None:
        if post_id in self._extra:
            self._extra[post_id] = row
            return
        if self._nkeys:
            keys = self._key_ids[: self._nkeys]
            pos = int(np.searchsorted(keys, post_id))
            if pos < self._nkeys and keys[pos] == post_id:
                self._key_rows[pos] = row
                return
            if post_id < keys[-1]:
                self._extra[post_id] = row
                if len(self._extra) > max(4096, self._nkeys // 32):
                    self._rebuild_keys()
                return
        self._append_keys(np.array([post_id], np.int64), np.array([row], np.int32))

    def _append_keys(self, ids: np.ndarray, rows: np.ndarray) -> None:
        need = self._nkeys + len(ids)
        if need > len(self._key_ids):
            cap = max(need, 2 * len(self._key_ids), 1024)
            self._key_ids = _grow(self._key_ids, cap, self._nkeys)
            self._key_rows = _grow(self._key_rows, cap, self._nkeys)
        self._key_ids[self._nkeys : need] = ids
        self._key_rows[self._nkeys : need] = rows
        self._nkeys = need

    def _rebuild_keys(self) -> None:
        ids = np.concatenate([self._key_ids[: self._nkeys], np.fromiter(self._extra, np.int64, len(self._extra))])
        rows = np.concatenate([self._key_rows[: self._nkeys], np.fromiter(self._extra.values(), np.int32, len(self._extra))])
        order = np.argsort(ids, kind="stable")
        cap = max(len(ids), 1024)
        self._key_ids, self._key_rows = np.zeros(cap, np.int64), np.zeros(cap, np.int32)
        self._key_ids[: len(ids)], self._key_rows[: len(ids)] = ids[order], rows[order]
        self._nkeys = len(ids)
        self._extra = {}

    # -- adding ----------------------------------------------------------------------------

    def add(self, post_id: int, vector: np.ndarray, meta: VectorMeta) -> None:
        """Add a post (or replace its vector and fields if it is already in)."""
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vec.shape[0] != self.dim:
            raise ValueError(f"expected a {self.dim}-dim vector, got {vec.shape[0]}")
        with self._lock:
            old = self._row_of(int(post_id))
            if old is not None:
                self._flags[old] = 0
            self._append(np.array([post_id], np.int64), vec[None, :], [meta])
            if old is None:
                self._live += 1
            self._set_key(int(post_id), self._n - 1)

    def extend(self, rows: Iterable[Row], *, batch: int = 8192) -> int:
        """Add many posts: (post id, float16 bytes or a vector, meta), e.g. rows streamed from the database.

        Byte strings of the wrong length are skipped. Returns how many posts were added.
        """
        added = 0
        buf: list[Row] = []
        for row in rows:
            buf.append(row)
            if len(buf) >= batch:
                added += self._extend_batch(buf)
                buf = []
        if buf:
            added += self._extend_batch(buf)
        return added

    async def load(self, chunks: AsyncIterable[Iterable[Row]]) -> int:
        """``extend`` over chunks read asynchronously (start-up), yielding to the event loop between chunks."""
        added = 0
        async for chunk in chunks:
            added += self.extend(chunk)
            await asyncio.sleep(0)
        return added

    def _extend_batch(self, rows: list[Row]) -> int:
        ids: list[int] = []
        vecs: list[np.ndarray] = []
        metas: list[VectorMeta] = []
        width = self.dim * 2
        for post_id, vector, meta in rows:
            if isinstance(vector, bytes | bytearray | memoryview):
                if len(vector) != width:
                    continue
                vecs.append(np.frombuffer(vector, dtype=np.float16))
            else:
                v = np.asarray(vector).reshape(-1)
                if v.shape[0] != self.dim:
                    continue
                vecs.append(v)
            ids.append(int(post_id))
            metas.append(meta)
        if not ids:
            return 0
        id_arr = np.array(ids, np.int64)
        with self._lock:
            last = int(self._key_ids[self._nkeys - 1]) if self._nkeys else None
            fresh = bool(np.all(np.diff(id_arr) > 0)) and (last is None or id_arr[0] > last)
            if not fresh:  # out of order or already present: one at a time
                for post_id, vec, meta in zip(ids, vecs, metas, strict=True):
                    self.add(post_id, vec, meta)
                return len(ids)
            start = self._n
            self._append(id_arr, np.stack(vecs), metas)
            self._append_keys(id_arr, np.arange(start, self._n, dtype=np.int32))
            self._live += len(ids)
        return len(ids)

    def _append(self, ids: np.ndarray, vecs: np.ndarray, metas: Sequence[VectorMeta]) -> None:
        """Append rows (lock held): fields, then the exact copy or pending vectors, then codes."""
        m = len(ids)
        start, end = self._n, self._n + m
        if end > len(self._ids):
            cap = max(end, 2 * len(self._ids), 1024)
            for name in ("_ids", "_dates", "_lang", "_labels", "_flags", "_chan"):
                setattr(self, name, _grow(getattr(self, name), cap, start))
        self._ids[start:end] = ids
        self._dates[start:end] = [meta.date for meta in metas]
        self._lang[start:end] = [LANG_CODES.get(meta.lang or "other", OTHER_LANG) for meta in metas]
        vecs = self.neutral(vecs, self._lang[start:end])
        self._labels[start:end] = [_label_mask(meta.labels) for meta in metas]
        self._chan[start:end] = [self._channel_code(meta.channel_id) for meta in metas]
        if self._fetch is None:
            self._store_f16(start, vecs)
        elif self._lo is None:
            self._pending.append(np.asarray(vecs, dtype=np.float32))
        self._flags[start:end] = [_flags(meta) for meta in metas]  # last: a row is live once complete
        self._n = end
        if self._lo is None:
            if self._n >= self.fit_size:
                self._fit()
        else:
            self._encode_rows(np.asarray(vecs, dtype=np.float32))

    def _channel_code(self, channel_id: int) -> int:
        code = self._channels.get(channel_id)
        if code is None:
            code = self._channels[channel_id] = len(self._channels)
        return code

    def _store_f16(self, start: int, vecs: np.ndarray) -> None:
        v16 = np.asarray(vecs, dtype=np.float16)
        done = 0
        while done < len(v16):
            row = start + done
            chunk, off = divmod(row, self.chunk_rows)
            if chunk == len(self._f16):
                first = min(self.chunk_rows, 1024) if chunk == 0 else self.chunk_rows  # grow only the first chunk
                self._f16.append(np.zeros((first, self.dim), np.float16))
            arr = self._f16[chunk]
            take = min(len(v16) - done, self.chunk_rows - off)
            if off + take > len(arr):
                self._f16[chunk] = arr = _grow(arr, min(self.chunk_rows, max(off + take, 2 * len(arr))), off)
            arr[off : off + take] = v16[done : done + take]
            done += take

    def _fit(self) -> None:
        """Fit the per-dimension code ranges on the vectors seen so far, then code all of them."""
        sample = self._exact_rows(np.arange(self._n))
        lo = np.percentile(sample, _PERCENTILE, axis=0)
        hi = np.percentile(sample, 100 - _PERCENTILE, axis=0)
        self._lo = lo.astype(np.float32)
        self._step = np.maximum((hi - lo) / 15, 1e-6).astype(np.float32)
        self._encode_rows(sample)
        self._pending = []

    def _encode_rows(self, vecs: np.ndarray) -> None:
        """Code rows and append them to the tail chunk, sealing (packing) it when full."""
        assert self._lo is not None and self._step is not None
        codes = _pack_nibbles(np.clip(np.rint((vecs - self._lo) / self._step), 0, 15).astype(np.int8) - 8)
        done = 0
        while done < len(codes):
            if self._tail_n == len(self._tail) and len(self._tail) < self.chunk_rows:
                grow = max(2 * len(self._tail), 1024, self._tail_n + len(codes) - done) if not self._sealed else self.chunk_rows
                cap = min(self.chunk_rows, grow)
                self._tail = _grow(self._tail, cap, self._tail_n)
            take = min(len(codes) - done, len(self._tail) - self._tail_n)
            self._tail[self._tail_n : self._tail_n + take] = codes[done : done + take]
            self._tail_n += take
            done += take
            self._coded += take
            if self._tail_n == self.chunk_rows:
                full = self._tail
                self._sealed.append(self._nk.dots_pack(full, dtype="int4") if self._nk is not None else full)
                self._tail = np.zeros((0, self.dim // 2), np.uint8)
                self._tail_n = 0

    # -- changing ---------------------------------------------------------------------------

    def update_meta(self, post_id: int, meta: VectorMeta) -> bool:
        """Replace a post's filter fields (reclassified, story changed); False if it is not in the index,
        or if its language changed under centroids (its vector must then be added again with ``add``)."""
        with self._lock:
            row = self._row_of(int(post_id))
            if row is None:
                return False
            lang = LANG_CODES.get(meta.lang or "other", OTHER_LANG)
            self._dates[row] = meta.date
            self._labels[row] = _label_mask(meta.labels)
            self._chan[row] = self._channel_code(meta.channel_id)
            self._flags[row] = _flags(meta)
            if self._centroids is not None and lang != int(self._lang[row]):
                return False  # the other fields are current; the vector (and so its language) waits for ``add``
            self._lang[row] = lang
            return True

    def remove(self, post_id: int) -> bool:
        """Forget a post (deleted); its row stays as a tombstone."""
        with self._lock:
            row = self._row_of(int(post_id))
            if row is None:
                return False
            self._flags[row] = 0
            self._live -= 1
            return True

    # -- reading ----------------------------------------------------------------------------

    def vector_of(self, post_id: int) -> np.ndarray | None:
        """The post's embedding as float32 (from the in-memory copy or ``fetch_vectors``)."""
        return self.vectors_of([post_id]).get(int(post_id))

    def vectors_of(self, post_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Posts' embeddings as the index holds them, with one call of ``fetch_vectors``; absent ones left out."""
        out: dict[int, np.ndarray] = {}
        wanted: list[int] = []
        codes: list[int] = []
        with self._lock:
            for pid in post_ids:
                row = self._row_of(int(pid))
                if row is None:
                    continue
                if self._fetch is None or row >= self._coded:
                    out[int(pid)] = self._exact_rows(np.array([row]))[0]
                else:
                    wanted.append(int(pid))
                    codes.append(int(self._lang[row]))
        if wanted and self._fetch is not None:
            ids, vecs = self._fetched(self._fetch(wanted), np.array(wanted, np.int64), np.array(codes, np.int64))
            if vecs is not None:
                out.update({int(pid): vec for pid, vec in zip(ids, vecs, strict=True)})
        return out

    def _fetched(self, got: Mapping[int, np.ndarray], ids: np.ndarray,
                 codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The ids ``fetch_vectors`` answered, and their vectors in the index's space (None when none came)."""
        keep = [j for j, i in enumerate(ids) if int(i) in got]
        if not keep:
            return ids[keep], None
        kept = ids[keep]
        vecs = np.stack([np.asarray(got[int(i)], dtype=np.float32).reshape(-1) for i in kept])
        return kept, self.neutral(vecs, codes[keep])

    def memory_bytes(self) -> int:
        """Bytes held: arrays at their capacity, packed code chunks, dicts (estimated)."""
        with self._lock:
            return self._memory_bytes()

    def _memory_bytes(self) -> int:
        arrays: list[np.ndarray] = [self._ids, self._dates, self._lang, self._labels, self._flags, self._chan,
                                    self._key_ids, self._key_rows, self._tail, *self._f16, *self._pending]
        total = sum(a.nbytes for a in arrays)
        total += sum(int(s.nbytes) for s in self._sealed)
        for d in (self._extra, self._channels):
            total += sys.getsizeof(d) + 64 * len(d)  # dict table + two int objects an entry
        return total

    def _snapshot(self) -> _Snapshot:
        with self._lock:
            return _Snapshot(
                n=self._n, coded=self._coded, ids=self._ids, dates=self._dates, lang=self._lang, labels=self._labels,
                flags=self._flags, chan=self._chan, sealed=list(self._sealed), tail=self._tail, f16=list(self._f16),
                pending=list(self._pending), channels=self._channels,
                dead=self._n - self._live,
            )

    def _exact_rows(self, rows: np.ndarray, snap: _Snapshot | None = None) -> np.ndarray:
        """float32 vectors of rows held in memory: the float16 copy, or pending rows before the fit."""
        rows = np.asarray(rows, dtype=np.int64)
        f16 = snap.f16 if snap is not None else self._f16
        if self._fetch is None:
            out = np.empty((len(rows), self.dim), np.float32)
            chunk, off = np.divmod(rows, self.chunk_rows)
            for c in np.unique(chunk):
                sel = chunk == c
                out[sel] = f16[int(c)][off[sel]]
            return out
        pending = snap.pending if snap is not None else self._pending
        return np.concatenate(pending)[rows] if pending else np.zeros((0, self.dim), np.float32)

    # -- search -------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, flt: VectorFilter | None = None,
               exclude: int | None = None) -> list[tuple[int, float]]:
        """The ``k`` posts nearest to ``query`` among those matching ``flt``: (post id, exact cosine), best first."""
        q, snap, rows = self._candidates(query, k, flt, exclude)
        if not len(rows):
            return []
        ids = snap.ids[rows]
        vecs: np.ndarray | None
        if self._fetch is None or rows.max() >= snap.coded:
            vecs = self._exact_rows(rows, snap)
        else:
            ids, vecs = self._fetched(self._fetch([int(i) for i in ids]), ids, snap.lang[rows])
        return _rank(q, ids, vecs, k)

    async def asearch(self, query: np.ndarray, k: int, flt: VectorFilter | None = None, exclude: int | None = None,
                      *, fetch: AsyncFetchVectors | None = None) -> list[tuple[int, float]]:
        """``search`` with the exact vectors read by an async ``fetch`` (e.g. the bot's database).

        Only for an index built with ``fetch_vectors`` (no float16 copy); one that holds the
        vectors in memory ignores ``fetch``.
        """
        if fetch is None or self._fetch is None:
            return self.search(query, k, flt, exclude)
        q, snap, rows = self._candidates(query, k, flt, exclude)
        if not len(rows):
            return []
        if rows.max() >= snap.coded:
            return _rank(q, snap.ids[rows], self._exact_rows(rows, snap), k)
        ids = snap.ids[rows]
        ids, vecs = self._fetched(await fetch([int(i) for i in ids]), ids, snap.lang[rows])
        return _rank(q, ids, vecs, k)

    def candidates(self, query: np.ndarray, k: int, flt: VectorFilter | None = None,
                   exclude: int | None = None) -> list[int]:
        """Post ids the exact re-rank for ``search(query, k, ...)`` would score (approximate order)."""
        _, snap, rows = self._candidates(query, k, flt, exclude)
        return [int(i) for i in snap.ids[rows]]

    def _candidates(self, query: np.ndarray, k: int, flt: VectorFilter | None,
                    exclude: int | None) -> tuple[np.ndarray, _Snapshot, np.ndarray]:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        snap = self._snapshot()
        none = np.zeros(0, np.int64)
        if k <= 0 or snap.n == snap.dead or norm == 0 or q.shape[0] != self.dim:
            return q, snap, none
        q = q / norm
        possible, mask = _mask(snap, flt)
        if not possible:
            return q, snap, none
        if exclude is not None:
            with self._lock:
                ex = self._row_of(int(exclude))
            if ex is not None and ex < snap.n:
                if mask is None:
                    mask = np.ones(snap.n, bool)
                mask[ex] = False
        if snap.coded < snap.n:  # before the quantiser is fitted: exact over everything (few rows)
            rows = np.flatnonzero(mask) if mask is not None else np.arange(snap.n)
            return q, snap, rows
        depth = max(self.rescore, 3 * k)
        matching = np.flatnonzero(mask) if mask is not None else None
        if matching is not None and len(matching) <= depth:  # few enough to score them all exactly: no scan
            return q, snap, matching
        rows = _select(self._scan(q, snap, mask), matching, depth)
        return q, snap, rows

    def _query_weights(self, q: np.ndarray) -> np.ndarray:
        """The query in the codes' integer space: w_d = q_d·step_d rounded to ``query_bits`` (as int32)."""
        assert self._step is not None
        w = q * self._step
        top = float(np.abs(w).max())
        if top == 0:
            return np.zeros(self.dim, np.int32)
        if self.query_bits == 4:
            return np.clip(np.rint(w * (7.0 / top)), -8, 7).astype(np.int32)
        return np.clip(np.rint(w * (119.0 / top)), -136, 119).astype(np.int32)  # = 16·h + l, h and l int4

    def _scan(self, q: np.ndarray, snap: _Snapshot, mask: np.ndarray | None = None) -> np.ndarray:
        """Integer scores ≈ a monotone proxy of the cosine, for all coded rows: codes · quantised query.

        An 8-bit query is scanned as two int4 planes (16·h + l), which NumKong does in one pass
        over the codes: +4-6 ms at 1M, and the same recall with ~40 % fewer rows re-ranked exactly.
        Chunks where ``mask`` passes no row are skipped (their scores are left undefined): rows are
        appended as posts arrive, so a date filter skips most of the chunks.
        """
        wq = self._query_weights(q)
        out = np.empty(snap.n, np.int32)
        pos = 0
        tail_rows = snap.n - len(snap.sealed) * self.chunk_rows
        if self._nk is not None:
            if self.query_bits == 4:
                planes = wq[None, :]
            else:
                high = (wq + 8) // 16
                planes = np.stack([high, wq - 16 * high])
            qp = _pack_nibbles(planes)
            for packed in snap.sealed:
                if mask is not None and not mask[pos : pos + self.chunk_rows].any():
                    pos += self.chunk_rows
                    continue
                part = np.asarray(self._nk.dots_packed(qp, packed))
                dest = out[pos : pos + self.chunk_rows]
                if len(part) == 1:
                    dest[:] = part[0]
                else:
                    np.multiply(part[0], 16, out=dest)
                    dest += part[1]
                pos += self.chunk_rows
            if tail_rows:
                part = np.empty((len(planes), tail_rows), np.int32)
                self._nk.cdist(qp, snap.tail[:tail_rows], "dot", dtype="int4", out=part)
                out[pos:] = part[0] if len(part) == 1 else part[0] * 16 + part[1]
            return out
        w_even, w_odd = wq[0::2].astype(np.float32), wq[1::2].astype(np.float32)  # integer sums < 2^24: exact
        for raw in [*snap.sealed, snap.tail[:tail_rows]]:
            for s in range(0, len(raw), 1024):  # small blocks: larger ones made OpenBLAS spawn threads, 10× slower here
                if mask is not None and not mask[pos : pos + min(1024, len(raw) - s)].any():
                    pos += min(1024, len(raw) - s)
                    continue
                even, odd = _unpack_nibbles(raw[s : s + 1024])
                part = even @ w_even + odd @ w_odd
                out[pos : pos + len(part)] = np.rint(part)
                pos += len(part)
        return out


# -- helpers ------------------------------------------------------------------------------------


def _grow(arr: np.ndarray, cap: int, used: int) -> np.ndarray:
    """A larger copy of ``arr`` (first axis), with its first ``used`` rows kept: O(1) amortised appends."""
    out = np.zeros((cap, *arr.shape[1:]), arr.dtype)
    out[:used] = arr[:used]
    return out


def _label_mask(labels: Iterable[str]) -> int:
    mask = 0
    for label in labels:
        mask |= LABEL_BITS.get(label, 0)
    return mask


def _flags(meta: VectorMeta) -> int:
    return _LIVE | (_APPEAL if meta.appeal else 0) | (_FIRST if meta.story_first else 0)


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """(n, d) int8 in [-8, 7] → (n, d/2) uint8: even dimensions in the low nibble (NumKong's int4 layout)."""
    u = (codes.astype(np.int8) & 0xF).astype(np.uint8)
    return np.ascontiguousarray(u[:, 0::2] | (u[:, 1::2] << 4))


def _unpack_nibbles(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``_pack_nibbles``: the even and the odd dimensions' codes, as float32 (for BLAS)."""
    lo = ((packed & 0xF) ^ 8).astype(np.float32) - 8  # x ^ 8 - 8 sign-extends a nibble
    hi = ((packed >> 4) ^ 8).astype(np.float32) - 8
    return lo, hi


def _mask(snap: _Snapshot, flt: VectorFilter | None) -> tuple[bool, np.ndarray | None]:
    """Rows that may be returned, live and matching the filter: (False, None) if none can, (True, None) if all."""
    n = snap.n
    need = _LIVE
    if flt is not None:
        need |= (_APPEAL if flt.appeals_only else 0) | (_FIRST if flt.story_first_only else 0)
    mask: np.ndarray | None = None

    def both(m: np.ndarray) -> np.ndarray:
        return m if mask is None else np.logical_and(mask, m, out=mask)

    if flt is not None and flt.channel_id is not None:  # most selective first: later ones run on a smaller result
        code = snap.channels.get(int(flt.channel_id))
        if code is None:
            return False, None
        mask = both(snap.chan[:n] == code)
    if snap.dead or need != _LIVE:
        mask = both((snap.flags[:n] & need) == need)
    if flt is None:
        return True, mask
    if flt.since is not None:
        mask = both(snap.dates[:n] >= flt.since)
    if flt.until is not None:
        mask = both(snap.dates[:n] < flt.until)
    if flt.langs is not None:
        langs = (flt.langs,) if isinstance(flt.langs, str) else flt.langs
        codes = sorted({LANG_CODES.get(lang, OTHER_LANG) for lang in langs})
        if not codes:
            return False, None
        if len(codes) < len(LANG_CODES):
            mask = both(snap.lang[:n] == codes[0]) if len(codes) == 1 else both(np.isin(snap.lang[:n], codes))
    if flt.labels is not None:
        bits = _label_mask((flt.labels,) if isinstance(flt.labels, str) else flt.labels)
        if not bits:
            return False, None
        mask = both((snap.labels[:n] & bits) != 0)
    return True, mask


def _select(scores: np.ndarray, rows: np.ndarray | None, depth: int) -> np.ndarray:
    """The ``depth`` rows with the best scores among ``rows`` (None: all rows).

    A histogram of the integer scores (in at most 65,536 bins) finds the cut-off bin; only that
    bin is partitioned: ~3 ms at 1M, where ``np.argpartition`` took 10-20 ms.
    """
    s = scores[rows] if rows is not None else scores
    if len(s) <= depth:
        return rows if rows is not None else np.arange(len(s))
    lo, hi = int(s.min()), int(s.max())
    shift = max(0, (hi - lo).bit_length() - 16)
    bins = (s - np.int32(lo)) >> shift
    above = np.cumsum(np.bincount(bins)[::-1])  # above[j]: rows in the j+1 highest bins
    cut = len(above) - 1 - int(np.searchsorted(above, depth))
    sel = np.flatnonzero(bins >= cut)
    if len(sel) > depth:
        better = sel[bins[sel] > cut]
        ties = sel[bins[sel] == cut]
        need = depth - len(better)
        sel = np.concatenate([better, ties[np.argpartition(-s[ties], need - 1)[:need]]])
    return rows[sel] if rows is not None else sel


def _rank(q: np.ndarray, ids: np.ndarray, vecs: np.ndarray | None, k: int) -> list[tuple[int, float]]:
    """Exact cosines (vectors re-normalised: float16 storage is only nearly unit length), best first, ties by id."""
    if vecs is None or not len(ids):
        return []
    norms = np.linalg.norm(vecs, axis=1)
    sims = (vecs @ q) / np.maximum(norms, 1e-12)
    order = np.lexsort((ids, -sims))[:k]
    return [(int(ids[i]), float(sims[i])) for i in order]


def sqlite_vector_fetcher(path: str, *, table: str = "classifications", id_column: str = "post_id",
                          vector_column: str = "embedding", batch: int = 900) -> FetchVectors:
    """A ``fetch_vectors`` reading float16 blobs by primary key from an SQLite file (own read-only connection).

    A separate connection (WAL lets it read while the bot writes) keeps the callback synchronous,
    as ``search`` is. ``batch`` ids per ``IN (...)`` query stays under SQLite's variable limit.
    """
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
    lock = threading.Lock()

    def fetch(ids: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        with lock:
            for s in range(0, len(ids), batch):
                part = [int(i) for i in ids[s : s + batch]]
                sql = f"SELECT {id_column}, {vector_column} FROM {table} WHERE {id_column} IN ({','.join('?' * len(part))})"
                for pid, blob in conn.execute(sql, part):
                    if blob is not None:
                        out[int(pid)] = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
        return out

    return fetch
