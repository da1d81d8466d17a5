"""Export stored posts as CSV or JSON with their evidence, streamed row by row.

CSV cells are *neutralised*: a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return gets a leading ``'``, so a spreadsheet shows it instead of running it
as a formula (OWASP's advice for CSV injection). JSON keeps every text exactly as stored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any, TextIO

FIELDS = ["permalink", "channel", "date", "language", "appeal", "labels", "addressee", "score", "text",
          "content_hash", "first_seen", "edit_history", "story_id", "repost_count"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will not evaluate: ``'`` before text that starts like a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    flat = dict(row)
    flat["labels"] = ",".join(row["labels"])
    flat["edit_history"] = json.dumps(row["edit_history"], ensure_ascii=False)
    return {k: csv_cell(v) for k, v in flat.items()}


async def write_csv(rows: AsyncIterator[dict[str, Any]], out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    n = 0
    async for row in rows:
        writer.writerow(csv_row(row))
        n += 1
    return n


def write_both(rows: Iterable[dict[str, Any]], csv_out: TextIO, json_out: TextIO) -> int:
    """CSV and JSON in one pass over the rows, blocking: for a worker thread (``/export``)."""
    writer = csv.DictWriter(csv_out, fieldnames=FIELDS)
    writer.writeheader()
    json_out.write("[\n")
    n = 0
    for row in rows:
        writer.writerow(csv_row(row))
        json_out.write((",\n" if n else "") + json.dumps(row, ensure_ascii=False))
        n += 1
    json_out.write("\n]\n")
    return n


async def write_json(rows: AsyncIterator[dict[str, Any]], out: TextIO) -> int:
    """A JSON array written element by element, so a million posts need no million-row list."""
    out.write("[\n")
    n = 0
    async for row in rows:
        out.write((",\n" if n else "") + json.dumps(row, ensure_ascii=False))
        n += 1
    out.write("\n]\n")
    return n
