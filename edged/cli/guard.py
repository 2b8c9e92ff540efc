"""``edged guard check``: judge texts from stdin with the configured guardian rules."""

from __future__ import annotations

import argparse
import json
import sys

from edged.cli.common import Commands, load, with_config


def cmd_guard(args: argparse.Namespace) -> int:
    """Judge JSON Lines ``{"text", "direction"}`` from stdin with the configured rules."""
    from edged.embeddings.lazy import LazyEmbedder
    from edged.guardian.build import build_guardian
    from edged.guardian.engine import RuleGuardian

    cfg = load(args)
    guardian = build_guardian(cfg, LazyEmbedder(cfg))
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


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged guard``."""
    g = sub.add_parser("guard", help="check texts against the guardian rules")
    g.add_argument("action", choices=["check"])
    with_config(g)
    g.set_defaults(func=cmd_guard)
