"""The hand-written labelled posts and their fixed train/dev/test split.

The split is stored (``split.tsv``) rather than recomputed, so adding posts later
never moves an old test post into training. Near-duplicates are kept on the same
side of the split, so the test figures are not inflated by posts the model has
effectively seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from models.taxonomy import ADDRESSEES, LABELS

DATA_DIR = Path(__file__).resolve().parents[1] / "data"  # models/data
SPLIT_FILE = DATA_DIR / "split.tsv"
SPLITS = ("train", "dev", "test")
REAL_DIR = DATA_DIR / "real"  # real channel posts labelled by hand (see real/README.md)
SEALED_FILE = DATA_DIR / "sealed" / "sealed_test.jsonl"  # written from the taxonomy alone; for reporting only


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    text: str
    lang: str
    appeal: bool
    labels: tuple[str, ...]
    addressee: str | None
    kind: str = ""
    split: str = "train"


def _validate(row: dict[str, object], where: str) -> Example:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: empty text")
    labels = tuple(str(x) for x in row.get("labels") or [])  # type: ignore[attr-defined]
    appeal = bool(row.get("appeal"))
    addressee = row.get("addressee")
    if any(lbl not in LABELS for lbl in labels):
        raise ValueError(f"{where}: unknown label in {labels}")
    if appeal != bool(labels) or (appeal and addressee not in ADDRESSEES) or (not appeal and addressee):
        raise ValueError(f"{where}: appeal/labels/addressee disagree")
    return Example(
        id=str(row["id"]), text=text, lang=str(row["lang"]), appeal=appeal, labels=labels,
        addressee=str(addressee) if addressee else None, kind=str(row.get("kind", "")),
    )


def read_jsonl(paths: Iterable[Path]) -> list[Example]:
    out: list[Example] = []
    seen: set[str] = set()
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            ex = _validate(json.loads(line), f"{path.name}:{n}")
            if ex.id in seen:
                raise ValueError(f"{path.name}:{n}: duplicate id {ex.id}")
            seen.add(ex.id)
            out.append(ex)
    return out


def data_files(folder: Path = DATA_DIR) -> list[Path]:
    return sorted(folder.glob("posts_*.jsonl"))


def load_examples(folder: Path = DATA_DIR) -> list[Example]:
    """All labelled posts with their split (posts missing from split.tsv count as train)."""
    examples = read_jsonl(data_files(folder))
    split = read_split(folder / SPLIT_FILE.name)
    return [dataclasses.replace(e, split=split.get(e.id, "train")) for e in examples]


def real_split(post_id: str) -> str:
    """The fixed split of a real post, from its id alone: 30 % test, 20 % dev, 50 % train.

    By hash rather than by list, so that every post of the real corpora has a split before
    anyone labels it: a post found later (flagged by a newer model) lands where its id says.
    """
    bucket = int(hashlib.sha256(post_id.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < 30 else "dev" if bucket < 50 else "train"


def load_real_examples(folder: Path = REAL_DIR) -> list[Example]:
    """Real channel posts labelled by hand, each with its ``real_split``."""
    return [dataclasses.replace(e, split=real_split(e.id)) for e in read_jsonl(sorted(folder.glob("real_*.jsonl")))]


def load_sealed(path: Path = SEALED_FILE) -> list[Example]:
    """The sealed test set: read once per release to report, never to decide anything."""
    return [dataclasses.replace(e, split="sealed") for e in read_jsonl([path])]


def training_examples(splits: tuple[str, ...] = ("train",)) -> list[Example]:
    """Hand-written and real labelled posts of the given splits: what fine-tuning and the heads learn from."""
    return [e for e in [*load_examples(), *load_real_examples()] if e.split in splits]


def read_split(path: Path = SPLIT_FILE) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            ident, split = line.split("\t")
            out[ident] = split
    return out


def data_sha256(folder: Path = DATA_DIR) -> str:
    h = hashlib.sha256()
    for p in [*data_files(folder), folder / SPLIT_FILE.name, *sorted((folder / "real").glob("real_*.jsonl"))]:
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


_NORM = re.compile(r"[\W\d_]+", re.UNICODE)


def shingles(text: str, n: int = 5) -> set[str]:
    t = _NORM.sub(" ", text.lower()).strip()
    return {t[i : i + n] for i in range(max(1, len(t) - n + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def near_duplicate_groups(examples: list[Example], threshold: float = 0.5) -> list[list[int]]:
    """Union-find over pairs whose character 5-gram Jaccard similarity is ≥ threshold."""
    sh = [shingles(e.text) for e in examples]
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(examples)):
        for j in range(i + 1, len(examples)):
            if jaccard(sh[i], sh[j]) >= threshold:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(examples)):
        groups[find(i)].append(i)
    return list(groups.values())


def make_split(examples: list[Example], *, seed: int = 13, dev: float = 0.15, test: float = 0.15) -> dict[str, str]:
    """Stratified (language × appeal) split of near-duplicate groups; run once, then frozen."""
    rng = random.Random(seed)
    groups = near_duplicate_groups(examples)
    strata: dict[tuple[str, bool], list[list[int]]] = defaultdict(list)
    for g in groups:
        e = examples[g[0]]
        strata[(e.lang, e.appeal)].append(g)
    out: dict[str, str] = {}
    for key in sorted(strata, key=str):
        gs = strata[key]
        rng.shuffle(gs)
        total = sum(len(g) for g in gs)
        n_test, n_dev = round(total * test), round(total * dev)
        count = 0
        for g in gs:
            split = "test" if count < n_test else "dev" if count < n_test + n_dev else "train"
            for i in g:
                out[examples[i].id] = split
            count += len(g)
    return out


def write_split(split: dict[str, str], path: Path = SPLIT_FILE) -> None:
    lines = ["# id\tsplit — fixed once; new posts default to train (models/dataset.py)"]
    lines += [f"{k}\t{v}" for k, v in sorted(split.items())]
    path.write_text("\n".join(lines) + "\n")
