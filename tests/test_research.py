"""Export round-trips, chart files, evidence (hash + edit history), and the feedback guard."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from bot.charts import DPI, SIZE_INCHES, appeals_chart, chart_series
from bot.domain import IncomingPost
from bot.export import write_csv, write_json
from bot.storage import SearchQuery, Storage, content_hash
from models.taxonomy import Classification


def _cls(appeal: bool, labels: tuple[str, ...] = (), lang: str = "ru") -> Classification:
    return Classification(appeal=appeal, score=0.9 if appeal else 0.1, labels=labels,
                          label_scores={lbl: 0.9 for lbl in labels}, addressee="ru_military" if appeal else None,
                          reasons=("Сдавайтесь!",) if appeal else (), lang=lang, lang_confidence=0.9)


async def _archive(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "r.sqlite3")
    await storage.open()
    base = datetime(2026, 3, 1, 12, tzinfo=UTC)
    posts = [
        IncomingPost("alpha_channel", 1, "Российские солдаты, сдавайтесь! Частота 149.200.", base, "bot"),
        IncomingPost("alpha_channel", 2, "Погода в Харькове: +4, мокрый снег.", base + timedelta(days=1), "bot"),
        IncomingPost("beta_channel", 7, "Мамы, ищите своих сыновей в списках пленных, «Ищи своих».",
                     base + timedelta(days=2), "web"),
    ]
    results = await storage.store_posts(posts)
    await storage.save_classifications([
        (results[0].post_id, _cls(True, ("surrender",)), np.ones(384, dtype=np.float32) / np.sqrt(384)),
        (results[1].post_id, _cls(False), None),
        (results[2].post_id, _cls(True, ("family",)), None),
    ])
    # an edit: the channel changed its post after we saw it
    await storage.store_post(IncomingPost("alpha_channel", 1, "Российские солдаты, сдавайтесь! Частота 149.250.",
                                          base, "bot", edit_date=base + timedelta(hours=1)))
    return storage


async def _export(storage: Storage, q: SearchQuery, fmt: str) -> str:
    out = io.StringIO()
    await (write_csv if fmt == "csv" else write_json)(storage.export_rows(q), out)
    return out.getvalue()


async def test_csv_and_json_exports_round_trip_to_the_stored_posts(tmp_path: Path) -> None:
    storage = await _archive(tmp_path)
    try:
        rows = list(csv.DictReader(io.StringIO(await _export(storage, SearchQuery(), "csv"))))
        items = json.loads(await _export(storage, SearchQuery(), "json"))
        assert [r["permalink"] for r in rows] == [i["permalink"] for i in items] == [
            "https://t.me/alpha_channel/1", "https://t.me/alpha_channel/2", "https://t.me/beta_channel/7"]
        for r, i in zip(rows, items, strict=True):
            stored = await storage.find_post(i["channel"], int(i["permalink"].rsplit("/", 1)[1]))
            assert stored is not None
            assert r["text"] == i["text"] == stored.text
            assert i["labels"] == list(stored.labels) and r["labels"] == ",".join(stored.labels)
            assert i["language"] == r["language"] == stored.lang
            assert i["content_hash"] == r["content_hash"] == content_hash(stored.text)
            assert json.loads(r["edit_history"]) == i["edit_history"]
        first = items[0]
        # evidence: both versions, in order, with the edit's time
        assert [e["text"] for e in first["edit_history"]] == [
            "Российские солдаты, сдавайтесь! Частота 149.200.", "Российские солдаты, сдавайтесь! Частота 149.250."]
        assert first["edit_history"][1]["edit_date"].startswith("2026-03-01T13:00")
        assert first["text"].endswith("149.250.")
    finally:
        await storage.close()


async def test_export_uses_the_search_filters(tmp_path: Path) -> None:
    storage = await _archive(tmp_path)
    try:
        family = json.loads(await _export(storage, SearchQuery(labels=("family",)), "json"))
        assert [i["permalink"] for i in family] == ["https://t.me/beta_channel/7"]
        words = json.loads(await _export(storage, SearchQuery(words="погода"), "json"))
        assert [i["permalink"] for i in words] == ["https://t.me/alpha_channel/2"]
        channel = json.loads(await _export(storage, SearchQuery(channel="alpha_channel"), "json"))
        assert len(channel) == 2
    finally:
        await storage.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_chart_is_a_phone_sized_png_with_the_expected_series() -> None:
    per_day = [("2026-03-01", "surrender", 3), ("2026-03-03", "surrender", 1), ("2026-03-03", "family", 2)]
    days, series = chart_series(per_day, since=date(2026, 3, 1), until=date(2026, 3, 5))
    assert days == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]  # empty days are on the axis
    assert series == {"surrender": [3, 0, 1, 0], "family": [0, 0, 2, 0]}
    png = appeals_chart(per_day, [("alpha_channel", 4), ("beta_channel", 2)], "Appeals · March",
                        since=date(2026, 3, 1), until=date(2026, 3, 5))
    assert _png_size(png) == (int(SIZE_INCHES[0] * DPI), int(SIZE_INCHES[1] * DPI))
    empty = appeals_chart([], [], "nothing")
    assert _png_size(empty) == _png_size(png) and empty != png


@pytest.mark.slow
def test_a_feedback_batch_that_lowers_the_dev_figures_is_refused(tmp_path: Path, model_cache: Path) -> None:
    """Users mark training appeals as 'not an appeal' and news as appeals: retraining must refuse to replace the model.

    (Flipping appeals alone no longer hurts: over the fine-tuned encoder the heads keep ranking
    appeals first and only the threshold moves, so the test figures hold and the model is kept.)
    """
    from models.training.dataset import load_examples

    async def seed() -> None:
        storage = Storage(tmp_path / "fb.sqlite3")
        await storage.open()
        train = [e for e in load_examples() if e.split == "train"]
        appeals = [e for e in train if e.appeal][:250]
        others = [e for e in train if not e.appeal][:250]
        results = await storage.store_posts([
            IncomingPost("feedback_channel", i + 1, e.text, datetime(2026, 1, 1, tzinfo=UTC), "bot")
            for i, e in enumerate(appeals + others)])
        for r in results[: len(appeals)]:
            await storage.add_feedback(1, 1, r.post_id, "not_appeal")
        for r in results[len(appeals) :]:
            await storage.add_feedback(1, 1, r.post_id, "relabel", ["surrender"])
        await storage.close()

    import asyncio

    asyncio.run(seed())
    heads_dir = tmp_path / "heads"
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "fb.sqlite3"}"\n[model]\ncache_dir = "{model_cache}"\n')
    # no real corpora: the threshold is then F1-best on dev, which spares classifying 1,099 real posts here
    env = {**os.environ, "APPEALWATCH_CACHE": str(model_cache), "APPEALWATCH_REAL_DATA": str(tmp_path / "no-real-data")}
    run = subprocess.run([sys.executable, "-m", "bot", "train", "--with-feedback", "--out", str(heads_dir),
                          "--config", str(config)], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 3, run.stdout[-2000:] + run.stderr[-2000:]
    assert "refused" in run.stdout and "appeal_f1" in run.stdout
    assert not (heads_dir / "heads.npz").exists()  # the current model stays
