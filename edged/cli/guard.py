"""``edged guard check``: judge texts from stdin, or one tool call (``--tool NAME --args
JSON``), with the configured guardian rules."""

from __future__ import annotations

import argparse
import json
import sys
import time

from edged.cli.common import Commands, load, with_config


def cmd_guard(args: argparse.Namespace) -> int:
    """Judge JSON Lines ``{"text", "direction"}`` from stdin with the configured rules."""
    from edged.embeddings.lazy import LazyEmbedder
    from edged.guardian.build import build_guardian
    from edged.guardian.engine import RuleGuardian

    cfg = load(args)
    guardian = build_guardian(cfg, LazyEmbedder(cfg))
    if args.tool is not None:
        return _check_tool(guardian, args.tool, args.args)
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


def _check_tool(guardian: object, tool: str, arguments: str) -> int:
    """Print the decision on one call as JSON: 0, or 1 when the input is not a call."""
    from edged.guardian.engine import RuleGuardian
    from edged.tools.schema import TOOL_NAME_RE
    from edged.tools.validate import canonical, parse_json

    try:
        value = parse_json(arguments)
    except (ValueError, RecursionError) as e:
        print(json.dumps({"error": f"--args is not valid JSON: {e}"}), flush=True)
        return 1
    if not isinstance(value, dict) or not TOOL_NAME_RE.fullmatch(tool):
        print(json.dumps({"error": "need a tool name and --args with a JSON object"}))
        return 1
    if not isinstance(guardian, RuleGuardian):
        out: dict[str, object] = {"decision": "allow", "rules": [], "latency_us": 0.0}
    else:
        t0 = time.perf_counter()
        d = guardian.tool_rules.decide(tool, canonical(value))
        us = (time.perf_counter() - t0) * 1e6
        out = {"decision": d.decision, "rules": list(d.rules), "latency_us": round(us, 2)}
    print(json.dumps({"tool": tool, **out}), flush=True)
    return 0


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged guard``."""
    g = sub.add_parser("guard", help="check texts against the guardian rules")
    g.add_argument("action", choices=["check"])
    g.add_argument("--tool", metavar="NAME", help="decide one call of this tool (tool rules)")
    g.add_argument("--args", default="{}", metavar="JSON", help="the call's arguments object")
    with_config(g)
    g.set_defaults(func=cmd_guard)
