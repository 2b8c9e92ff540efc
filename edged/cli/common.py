"""What every command shares: the ``--config`` option and loading the config it names."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edged.config import Config, load_config

#: What ``ArgumentParser.add_subparsers`` returns; each command module adds its parser to it.
Commands = argparse._SubParsersAction  # argparse names no public type for it


def config_path(args: argparse.Namespace) -> Path | None:
    """The config file: ``--config``, else ``$EDGED_CONFIG``, else None (built-in defaults)."""
    path = args.config or os.environ.get("EDGED_CONFIG")
    return Path(path) if path else None


def load(args: argparse.Namespace) -> Config:
    """The config the command runs with (file plus environment overrides)."""
    return load_config(config_path(args))


def with_config(sp: argparse.ArgumentParser) -> None:
    """Add the ``--config``/``-c`` option."""
    sp.add_argument(
        "--config",
        "-c",
        help="config file (TOML); default: $EDGED_CONFIG, else built-in defaults",
    )
