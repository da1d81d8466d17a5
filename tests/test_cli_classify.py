"""``appealwatch classify``: the JSON-lines contract other tools rely on, through real processes.

Each run loads the real model (several seconds), so the cases are grouped into few runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RESULT_KEYS = {"id", "lang", "appeal", "score", "labels", "addressee", "reasons"}
LABELS = {"surrender", "desertion", "family", "pow", "civilians", "threat"}
ADDRESSEES = {"ru_military", "ru_families", "ru_public", "ua_military", "ua_public"}

APPEAL_RU = (
    "Российские солдаты! Сложите оружие и сдавайтесь в плен: звоните на горячую линию «Хочу жить», "
    "вам гарантируют жизнь и обращение по Женевской конвенции."
)
NEWS_UK = "У Дніпрі відкрили оновлений міст після ремонту: шість смуг і нове освітлення."
APPEAL_EN = "Russians, you are not our enemies. Your television lies to you: go out and demand the truth."


def run_cli(model_cache: Path, cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "APPEALWATCH_CONFIG"}
    env["APPEALWATCH_CACHE"] = str(model_cache)
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [sys.executable, "-m", "bot", "classify", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=cwd,  # an empty folder: no stray ./config.toml is picked up
        timeout=300,
    )


def parse_lines(stdout: str) -> list[dict[str, Any]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every stdout line is one JSON object


def assert_result(obj: dict[str, Any]) -> None:
    assert set(obj) == RESULT_KEYS, obj
    assert obj["lang"] in {"ru", "uk", "en", "other"}
    assert isinstance(obj["appeal"], bool)
    assert isinstance(obj["score"], float) and 0.0 <= obj["score"] <= 1.0
    assert isinstance(obj["labels"], list) and set(obj["labels"]) <= LABELS
    assert isinstance(obj["reasons"], list) and all(isinstance(r, str) for r in obj["reasons"])
    if obj["appeal"]:
        assert obj["labels"] and obj["addressee"] in ADDRESSEES and obj["reasons"]
    else:
        assert obj["labels"] == [] and obj["addressee"] is None and obj["reasons"] == []


def test_text_arguments(model_cache: Path, tmp_path: Path) -> None:
    proc = run_cli(model_cache, tmp_path, APPEAL_RU, NEWS_UK, APPEAL_EN, "😀")
    assert proc.returncode == 0, proc.stderr
    out = parse_lines(proc.stdout)
    assert [o["id"] for o in out] == [0, 1, 2, 3]  # one object per input, in order
    for o in out:
        assert_result(o)
    assert [o["lang"] for o in out] == ["ru", "uk", "en", "other"]
    assert [o["appeal"] for o in out] == [True, False, True, False]
    assert "surrender" in out[0]["labels"] and out[0]["addressee"] == "ru_military"
    assert "civilians" in out[2]["labels"]


JSONL_ROWS = [
    json.dumps({"id": "post-a", "text": APPEAL_RU, "channel": "@x", "date": "2024-05-01"}, ensure_ascii=False),
    "{not json",
    json.dumps({"text": NEWS_UK}, ensure_ascii=False),  # no id: gets its index, 2
    "[1, 2, 3]",
    json.dumps({"id": 77, "body": "no text field"}),
    json.dumps({"id": "n", "text": 12345}),
    "",  # blank lines are skipped and take no index
    json.dumps({"id": 5, "text": APPEAL_EN, "extra": {"nested": True}}, ensure_ascii=False),
    json.dumps("just a string"),
    json.dumps({"text": ""}),  # empty text is still text
]


def check_jsonl_output(out: list[dict[str, Any]]) -> None:
    assert len(out) == 9  # every non-blank row answered, in order
    ok = [o for o in out if "error" not in o]
    bad = [o for o in out if "error" in o]
    for o in ok:
        assert_result(o)
    for o in bad:
        assert set(o) == {"id", "error"} and isinstance(o["error"], str) and o["error"]
    assert [o["id"] for o in out] == ["post-a", 1, 2, 3, 77, "n", 5, 7, 8]
    assert ["error" in o for o in out] == [False, True, False, True, True, True, False, True, False]
    by_id = {o["id"]: o for o in ok}
    assert by_id["post-a"]["appeal"] is True and by_id["post-a"]["lang"] == "ru"
    assert by_id[2]["appeal"] is False and by_id[2]["lang"] == "uk"
    assert by_id[5]["appeal"] is True and by_id[5]["lang"] == "en"  # classified after the bad rows
    assert by_id[8]["appeal"] is False and by_id[8]["lang"] == "other"
    assert "JSON" in out[1]["error"]
    assert "text" in out[4]["error"] and "text" in out[5]["error"]


def test_jsonl_file(model_cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(JSONL_ROWS) + "\n", encoding="utf-8")
    proc = run_cli(model_cache, tmp_path, "--jsonl", str(path))
    assert proc.returncode == 0, proc.stderr
    check_jsonl_output(parse_lines(proc.stdout))


def test_jsonl_stdin(model_cache: Path, tmp_path: Path) -> None:
    proc = run_cli(model_cache, tmp_path, "--jsonl", "-", stdin="\n".join(JSONL_ROWS) + "\n")
    assert proc.returncode == 0, proc.stderr
    check_jsonl_output(parse_lines(proc.stdout))


@pytest.mark.parametrize("args", [[], ["--jsonl", ""]])
def test_no_input_is_a_usage_error(model_cache: Path, tmp_path: Path, args: list[str]) -> None:
    proc = run_cli(model_cache, tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "error" in proc.stderr.lower() and "--jsonl" in proc.stderr
