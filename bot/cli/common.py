"""What every command shares: finding the configuration file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bot.config import Config, load_config


def cli_config(args: argparse.Namespace) -> Config:
    """--config, else $APPEALWATCH_CONFIG, else ./config.toml when present, else the defaults."""
    path = args.config or os.environ.get("APPEALWATCH_CONFIG")
    if path is None and Path("config.toml").is_file():
        path = "config.toml"
    return load_config(Path(path) if path else None)
