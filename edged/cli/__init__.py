"""The ``edged`` command: run the daemon, ask it something, show its status, manage models.

One module per command (``run``, ``ask``, ``status``, ``doctor``, ``models``, ``guard``,
``bench``, ``check_config``), each with its ``cmd_*`` function and the ``add_parser`` that
adds its sub-command; their helpers sit beside them (``client``: the synchronous MQTT client
behind ``ask`` and ``status``; ``observe``: what ``status`` reads and prints; ``common``: the
``--config`` option). This module only puts the parser together and runs a command.
"""

from __future__ import annotations

import argparse
import sys

from edged import __version__
from edged.cli import ask, bench, check_config, doctor, guard, models, run, status
from edged.errors import ConfigError, ModelError

#: In the order ``edged --help`` lists them.
COMMANDS = (run, ask, models, guard, doctor, bench, check_config, status)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    p = argparse.ArgumentParser(prog="edged", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edged`` console script."""
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except ConfigError as e:
        print(f"edged: config error:\n{e}", file=sys.stderr)
        return 2
    except ModelError as e:
        print(f"edged: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc
