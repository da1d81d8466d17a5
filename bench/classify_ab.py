"""Is one trained model slower than another? Both classify the same posts, taking turns.

``bench/classify.py`` compares the classifier with a transformers baseline; this one
compares two trained models (a model folder: heads and, if fine-tuned, ``adapter/``),
for example the committed one against an older ``git show``-ed copy or a new
``appealwatch train --out`` run. The two take turns within each repeat in one process,
so a slow spell of a shared machine falls on both alike, and the ratio of their medians
is what to read.

    python bench/classify_ab.py OTHER_MODEL_DIR [--model DIR] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="model folder to compare (heads.npz, heads.json, adapter/)")
    parser.add_argument("--model", type=Path, default=None,
                        help="the model it is compared with (default: the one the bot uses)")
    parser.add_argument("--n", type=int, default=64, help="messages per run")
    parser.add_argument("--repeats", type=int, default=7, help="runs per model; medians are reported (≥ 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from bot.config import load_config
    from models.classifier import AppealClassifier, model_folder
    from models.encoder import default_threads
    from models.training.dataset import load_examples

    m = load_config(None).model  # the bot's own settings: encoder, cache, threads, precision
    threads = m.threads or default_threads()
    folders = {"model": model_folder(args.model or m.heads, m.cache_dir), "other": args.other}
    models = {name: AppealClassifier.load(m.base, cache_dir=m.cache_dir, threads=threads, heads_dir=folder,
                                          precision=m.precision)
              for name, folder in folders.items()}
    examples = load_examples()
    texts = [e.text for e in random.Random(args.seed).sample(examples, min(args.n, len(examples)))]
    for clf in models.values():  # warm-up
        clf.classify(texts[:8])
    walls: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(max(3, args.repeats)):
        for name, clf in models.items():
            start = time.perf_counter()
            clf.classify(texts)
            walls[name].append(time.perf_counter() - start)
    print(f"{len(texts)} posts sampled from models/data (seed {args.seed}), {threads} threads, "
          f"{max(3, args.repeats)} turns each")
    for name, folder in folders.items():
        runs = walls[name]
        print(f"{name:6} {len(texts) / statistics.median(runs):6.1f} msg/s median, {len(texts) / min(runs):6.1f} best"
              f"   runs (s) {', '.join(f'{r:.2f}' for r in runs)}   {folder}")
    ratio = statistics.median(walls["other"]) / statistics.median(walls["model"])
    print(f"other ÷ model wall time (medians): {ratio:.3f}  (> 1: the other model is slower)")


if __name__ == "__main__":
    main()
