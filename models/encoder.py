"""The multilingual sentence encoder: text in, L2-normalised E5 embeddings out.

One loading path serves the offline build (``models.encoder_build``) and any hub id
or local directory a user names. Long posts are split into overlapping windows of
the model's maximum length instead of being cut at 512 tokens, so an appeal at the
end of a long digest still reaches the classifier. Per-token states are returned on
request: the classifier's linear head decomposes over them, which is how it explains
itself (the *reasons*) without a second forward pass.

Precision: on CPUs with bfloat16 instructions (AVX512-BF16, AMX) the weights run in
bfloat16: 1.8× the messages/s of float32 here, embeddings at cosine ≥ 0.9999 to float32
(``bench/classify.py --precision``). Elsewhere bfloat16 would be emulated, so float32.
int8 was measured and not taken: torch's dynamic quantisation of the Linear layers ran
1.3× bfloat16 but moved embeddings to cosine 0.96-0.98, and ONNX Runtime's int8 (cosine
0.995) was no faster than bfloat16 here, for a new dependency.
A fine-tuned LoRA adapter (``models.finetune``) is merged into the weights on load.

Threads: batches (sorted by length, ≤ 8 windows / 1,024 tokens) run on single-threaded
workers, one per core, rather than on torch's intra-op threads; see ``Encoder.load``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

QUERY_PREFIX = "query: "

# Encoder workers of this process, shared by every Encoder (the classifier's and the search
# encoder's chunks then queue together and keep both cores busy).
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _single_threaded() -> None:
    import torch

    # This worker's own setting, whatever the calling thread uses. torch also takes it as the
    # default of threads started later (not of running ones): beside the workers, nothing in
    # this process should run intra-op threads on a 2-core machine either.
    torch.set_num_threads(1)


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encode",
                                                 initializer=_single_threaded)
        return _POOLS[workers]


@dataclass(slots=True)
class Window:
    """One model-sized slice of a text."""

    vector: np.ndarray  # (H,) L2-normalised mean-pooled embedding
    n_tokens: int
    # (T, H) token states divided by the mean's norm, so that w·vector == mean(token_contrib @ w)
    token_states: np.ndarray | None = None
    # (T, 2) character spans of those tokens in the original text (prefix removed); -1 for specials
    offsets: np.ndarray | None = None
    # ``encode(lazy_tokens=True)``: the window's rows of its batch's hidden states (a view, not a
    # copy), the mean's norm and the tokens' character spans. Only an alerted post's reasons read
    # token states, so they are divided out (``tokens()``) for those windows alone.
    hidden: np.ndarray | None = None
    norm: float = 1.0
    spans: list[tuple[int, int]] | None = None
    shift: int = 0  # added to every real span: where this window's text starts in a longer text

    def tokens(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(token_states, offsets) as above, offsets moved by ``shift``; None without token information."""
        if self.token_states is not None and self.offsets is not None:
            states, offs = self.token_states, self.offsets.copy()
        elif self.hidden is not None and self.spans is not None:
            states = (self.hidden / self.norm).astype(np.float32)
            offs = np.array(self.spans, dtype=np.int64).reshape(-1, 2)
        else:
            return None
        if self.shift:
            real = offs[:, 0] >= 0
            offs[real] += self.shift
        return states, offs


@dataclass(slots=True)
class TextEncoding:
    """All windows of one text, and the text-level embedding (token-weighted mean of windows)."""

    text: str
    windows: list[Window]

    @property
    def vector(self) -> np.ndarray:
        if len(self.windows) == 1:
            return self.windows[0].vector
        weights = np.array([w.n_tokens for w in self.windows], dtype=np.float32)
        v = np.sum([w.vector * n for w, n in zip(self.windows, weights, strict=True)], axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)


# One window to encode: (text index, token ids with specials, character spans)
_Item = tuple[int, list[int], list[tuple[int, int]]]


class Encoder:
    """multilingual-e5-small (or any BERT-like encoder) with E5's query prefix and mean pooling."""

    def __init__(
        self, tokenizer: Any, model: Any, *, batch_size: int = 32, stride: int = 64, max_batch_tokens: int = 2048,
        identity: str = "", workers: int = 1,
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        # what produced these embeddings (model, adapter, precision): keys caches of them
        self.identity = identity
        self.batch_size = batch_size
        # A batch is padded to its longest window: cap rows × width, or one long post makes
        # 31 short ones pay for its length (a fixed 32- or 64-row batch of mixed real posts
        # cost 2-4× the CPU of encoding them one by one).
        self.max_batch_tokens = max_batch_tokens
        self.max_tokens = int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
        self.stride = stride
        # batches run side by side on this many single-threaded workers (see ``load``)
        self.workers = max(1, int(workers))
        self.dim = int(model.config.hidden_size)
        self.bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id or 0

    @classmethod
    def load(cls, name_or_path: str, *, threads: int | None = None, batch_size: int = 8,
             max_batch_tokens: int = 1024, precision: str = "auto", adapter: Path | None = None,
             share_with: Encoder | None = None) -> Encoder:
        """Load from a local directory or a hub id; ``threads``: how many cores encode at once.

        ``threads`` cores are used as that many workers, each running whole batches with one
        torch thread, not as torch's intra-op threads: on a shared 2-core machine OpenMP's
        threads spin-wait for each other whenever one is descheduled, and under other load
        a 2-thread forward cost up to 11× the CPU time of a 1-thread one (bench/classify.py:
        the transformers pipeline at 2 threads, 692 ms of CPU per real post against 60 ms);
        independent batches never wait for each other. ``threads=1`` encodes in the calling
        thread (one torch thread); ``threads=None`` also does, leaving torch's setting alone.

        ``precision``: "auto" (bfloat16 where the CPU has bf16 instructions), "bfloat16"
        or "float32". ``adapter``: a peft LoRA adapter directory, merged into the weights.
        ``share_with``: the same model already loaded without the adapter; its tokenizer
        (~290 MB resident) and embedding layer (250k × 384) are reused, since the adapter
        changes neither. Batches of 8 rows / 1,024 tokens measured fastest here
        (bench/classify.py).
        """
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if threads == 1:
            torch.set_num_threads(1)
        dtype = resolve_precision(precision)
        tokenizer = share_with.tokenizer if share_with is not None else AutoTokenizer.from_pretrained(name_or_path)
        # float32 when an adapter is merged (then converted); else straight into the target type
        model = AutoModel.from_pretrained(name_or_path, dtype=torch.float32 if adapter is not None else dtype)
        identity = f"{name_or_path}"
        if adapter is not None:
            from peft import PeftModel

            if share_with is not None:
                # before anything reads the (memory-mapped) float32 embeddings: they are never paged in
                model.embeddings = share_with.model.embeddings
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            identity += f"+adapter:{adapter_digest(adapter)}"
        model = model.to(dtype).eval()
        identity += f"@{str(dtype).removeprefix('torch.')}"
        return cls(tokenizer, model, batch_size=batch_size, max_batch_tokens=max_batch_tokens, identity=identity,
                   workers=threads or 1)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
            return np.asarray(out.last_hidden_state.float().numpy())

    @property
    def precision(self) -> str:
        dtype = getattr(self.model, "dtype", None)
        return str(dtype).removeprefix("torch.") if dtype is not None else "float32"

    # -- tokenisation -------------------------------------------------------------------

    def _items(self, texts: list[str]) -> list[_Item]:
        """Every window of every text, tokenised in one call."""
        if not texts:
            return []
        enc = self.tokenizer([QUERY_PREFIX + t for t in texts], add_special_tokens=False,
                             return_offsets_mapping=True)
        shift = len(QUERY_PREFIX)
        room = self.max_tokens - 2
        items: list[_Item] = []
        for i, (ids, mapping) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
            offs = [(max(a - shift, -1), max(b - shift, -1)) for a, b in mapping]
            start = 0
            while True:
                end = min(start + room, len(ids))
                items.append((i, [self.bos, *ids[start:end], self.eos], [(-1, -1), *offs[start:end], (-1, -1)]))
                if end >= len(ids):
                    break
                start = end - self.stride
        return items

    def _chunks(self, items: list[_Item]) -> list[list[int]]:
        """Batches of item indices: sorted by length, so that each batch pads little."""
        order = sorted(range(len(items)), key=lambda k: len(items[k][1]))
        chunks: list[list[int]] = []
        for k in order:  # ascending length: the window being added sets the batch's width
            rows = len(chunks[-1]) if chunks else 0
            if not chunks or rows >= self.batch_size or (rows + 1) * len(items[k][1]) > self.max_batch_tokens:
                chunks.append([])
            chunks[-1].append(k)
        return chunks

    # -- inference ----------------------------------------------------------------------

    def _run(self, items: list[_Item], chunk: list[int], tokens: str) -> list[tuple[int, Window]]:
        """Encode one batch; ``tokens``: "" (vectors only), "eager" or "lazy" token states."""
        width = max(len(items[k][1]) for k in chunk)
        input_ids = np.full((len(chunk), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for row, k in enumerate(chunk):
            ids = items[k][1]
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        hidden = self._forward(input_ids, mask)
        m = mask[:, :, None].astype(np.float32)
        mean = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        pooled = (mean / norms).astype(np.float32)
        states = (hidden / norms[:, :, None]).astype(np.float32) if tokens == "eager" else None
        out = []
        for row, k in enumerate(chunk):
            n = len(items[k][1])
            if tokens == "lazy":
                win = Window(vector=pooled[row], n_tokens=n, hidden=hidden[row, :n], norm=float(norms[row, 0]),
                             spans=items[k][2])
            else:
                win = Window(
                    vector=pooled[row],
                    n_tokens=n,
                    token_states=states[row, :n].copy() if states is not None else None,
                    offsets=np.array(items[k][2], dtype=np.int64) if tokens == "eager" else None,
                )
            out.append((k, win))
        return out

    def submit(self, texts: list[str], *, with_tokens: bool = False,
               lazy_tokens: bool = False) -> Callable[[], list[TextEncoding]]:
        """Queue the batches of ``texts`` on the workers now; the returned call waits for them.

        Two encoders' work submitted before either is collected runs side by side (the
        classifier's pass and the search embedding's), so a few posts still fill both cores.
        ``lazy_tokens``: keep each window's hidden states as a view, token states computed only
        when ``Window.tokens()`` is called.
        """
        items = self._items(texts)
        chunks = self._chunks(items)
        tokens = "eager" if with_tokens else "lazy" if lazy_tokens else ""
        if self.workers > 1 and chunks:
            pool = _pool(self.workers)
            futures = [pool.submit(self._run, items, chunk, tokens) for chunk in chunks]

            def results() -> list[list[tuple[int, Window]]]:
                return [f.result() for f in futures]
        else:
            def results() -> list[list[tuple[int, Window]]]:
                return [self._run(items, chunk, tokens) for chunk in chunks]

        def collect() -> list[TextEncoding]:
            windows: list[Window | None] = [None] * len(items)
            for done in results():
                for k, window in done:
                    windows[k] = window
            out = [TextEncoding(text=t, windows=[]) for t in texts]
            for (i, _, _), win in zip(items, windows, strict=True):
                assert win is not None
                out[i].windows.append(win)
            return out

        return collect

    def encode(self, texts: list[str], *, with_tokens: bool = False, lazy_tokens: bool = False) -> list[TextEncoding]:
        """Encode texts; windows are batched across texts, sorted by length to save padding."""
        return self.submit(texts, with_tokens=with_tokens, lazy_tokens=lazy_tokens)()

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, H) text-level embeddings, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([e.vector for e in self.encode(texts)]).astype(np.float32)


PRECISIONS = ("auto", "bfloat16", "float32")


def bf16_supported() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX); else it is emulated, slowly."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> Any:
    """The torch dtype for a ``[model] precision`` setting."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bfloat16" or (precision == "auto" and bf16_supported()):
        return torch.bfloat16
    return torch.float32


def adapter_digest(adapter: Path) -> str:
    """A short content hash of an adapter's weights (changes whenever it is retrained)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(adapter.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def default_threads() -> int:
    """Use every core we are allowed to run on; the bot does little else while classifying."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
