"""``appealwatch export [words and filters] --format csv|json --out FILE``."""

from __future__ import annotations

import argparse
import sys

from bot.config import Config
from bot.export import write_csv, write_json
from bot.queries import UsageError, parse_search
from bot.storage import SearchQuery, Storage


async def run_export(cfg: Config, args: argparse.Namespace) -> int:
    text = " ".join(args.query)
    try:
        q = parse_search(text) if text.strip() else SearchQuery()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    storage = Storage(cfg.storage.path)
    await storage.open()
    try:
        # a local file written row by row as the rows stream in
        out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8", newline="")  # noqa: ASYNC230
        try:
            writer = write_csv if args.format == "csv" else write_json
            n = await writer(storage.iter_export(q), out)
        finally:
            if out is not sys.stdout:
                out.close()
    finally:
        await storage.close()
    print(f"exported {n} posts", file=sys.stderr)
    return 0
