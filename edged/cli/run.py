"""``edged run``: the daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler

from edged.cli.common import Commands, config_path, load, with_config


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    from edged import logs
    from edged.app import App

    cfg = load(args)
    logs.setup(cfg.log.level, cfg.log.format)
    faulthandler.enable()  # a watchdog abort dumps every thread's stack to the journal

    async def main() -> int:
        app = App(cfg, config_path(args))
        return await app.run()

    return asyncio.run(main())


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged run``."""
    r = sub.add_parser("run", help="run the daemon in the foreground")
    with_config(r)
    r.set_defaults(func=cmd_run)
