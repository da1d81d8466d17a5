"""Export stored posts as CSV or JSON with their evidence, streamed row by row."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from typing import Any, TextIO

FIELDS = ["permalink", "channel", "date", "language", "appeal", "labels", "addressee", "score", "text",
          "content_hash", "first_seen", "edit_history", "story_id", "repost_count"]


async def write_csv(rows: AsyncIterator[dict[str, Any]], out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    n = 0
    async for row in rows:
        flat = dict(row)
        flat["labels"] = ",".join(row["labels"])
        flat["edit_history"] = json.dumps(row["edit_history"], ensure_ascii=False)
        writer.writerow(flat)
        n += 1
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
