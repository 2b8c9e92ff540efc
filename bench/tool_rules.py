"""What the guardian's tool rules cost per call, with 100 tool rules loaded (goal: p99 <= 20 us).

Three packs (one with ``tool_default = "block"``) hold 100 ``kind = "tool"`` rules over 60
tools: 30 plain blocks, 10 blocks narrowed by an ``arguments`` schema, 40 allows with a
schema (numbers with bounds, enums, required keys), 15 of them rate-capped, and 20 confirms;
some tools are named by several rules. The calls (seeded) are a mix of in-bounds,
out-of-bounds, blocked, confirmed and unnamed tools. Timed per call:

  1. decide       ``ToolRules.decide`` (the decision alone);
  2. check_calls  ``RuleGuardian.check_calls`` on a one-call turn (decision, report counts,
                  the audit record handed to a sink that keeps it);
  3. baseline     ``edged.tools.validate.validate_calls`` on the same one-call turn: the
                  schema check every call passes anyway, measured in the same loop.

    .venv/bin/python bench/tool_rules.py [--calls 20000]
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.errors import Blocked
from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import load_packs
from edged.tools.validate import validate_calls
from edged.types import (
    ChatMessage,
    ReplyAddress,
    Request,
    ToolCall,
    ToolChoice,
    ToolDecision,
    ToolSpec,
    Verdict,
)

GOAL_P99_US = 20.0
N_TOOLS = 60


def _schema(i: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "level": {"type": "number", "minimum": 0, "maximum": 10 + i},
            "room": {"type": "string", "enum": ["kitchen", "hall", "garage", "attic"]},
        },
        "required": ["level"],
    }


def _toml(value: Any) -> str:
    """A TOML inline value for JSON-like data (what the packs need here)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def rules() -> list[dict[str, Any]]:
    """The 100 rules, as dicts (tool ``t{n}``)."""
    out: list[dict[str, Any]] = []
    for i in range(30):
        out.append({"id": f"block.{i}", "tools": [f"t{i}"], "action": "block"})
    for i in range(10):
        narrowed = {"type": "object", "properties": {"room": {"const": "garage"}}}
        tool = f"t{30 + i}"
        out.append({"id": f"narrow.{i}", "tools": [tool], "action": "block", "arguments": narrowed})
    for i in range(40):
        r: dict[str, Any] = {
            "id": f"allow.{i}",
            "tools": [f"t{30 + i % 30}"],
            "action": "allow",
            "arguments": _schema(i),
        }
        if i < 15:
            r["max_per_minute"] = 1_000_000
        out.append(r)
    for i in range(20):
        out.append({"id": f"confirm.{i}", "tools": [f"t{40 + i}"], "action": "confirm"})
    assert len(out) == 100
    return out


def write_packs(tmp: Path) -> list[Path]:
    paths = []
    all_rules = rules()
    for n, (name, default) in enumerate([("a", "allow"), ("b", "allow"), ("c", "block")]):
        lines = [f'name = "{name}"', f'tool_default = "{default}"']
        for r in all_rules[n::3]:
            lines.append("[[rule]]")
            lines.append('kind = "tool"')
            lines += [f"{k} = {_toml(v)}" for k, v in r.items()]
        p = tmp / f"{name}.toml"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def calls(n: int) -> list[ToolCall]:
    rnd = random.Random(h.SEED)
    out = []
    for i in range(n):
        tool = f"t{rnd.randrange(N_TOOLS + 5)}"  # a few tools no rule names
        args: dict[str, Any] = {"level": rnd.uniform(-2, 50)}
        if rnd.random() < 0.5:
            args["room"] = rnd.choice(["kitchen", "hall", "garage", "attic"])
        out.append(ToolCall(f"c{i}", tool, json.dumps(args)))
    return out


def request(tools: tuple[ToolSpec, ...]) -> Request:
    return Request(
        id="bench",
        messages=(ChatMessage("user", "go"),),
        max_tokens=8,
        temperature=0.0,
        stream=False,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("r"),
        received_at_s=time.monotonic(),
        tools=tools,
        tool_choice=ToolChoice("auto"),
    )


def main() -> int:
    ap = h.parser(__doc__, "tool_rules")
    ap.add_argument("--calls", type=int, default=20_000, help="calls timed (%(default)s)")
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        packs = load_packs(write_packs(Path(tmp)))
    sink: list[ToolDecision] = []
    g = RuleGuardian(packs, audit=sink.append)
    assert g.tool_rules.count == 100
    params = {"type": "object", "properties": {"level": {"type": "number"}, "room": {}}}
    specs = tuple(ToolSpec(f"t{i}", "", params) for i in range(N_TOOLS + 5))
    req = request(specs)
    todo = calls(args.calls)
    decide_us: list[float] = []
    check_us: list[float] = []
    base_us: list[float] = []
    decisions: dict[str, int] = {}
    gc.collect()
    gc.disable()
    try:
        for c in todo[:500]:  # warm the caches
            g.tool_rules.decide(c.name, c.arguments)
        for c in todo:
            verdict = Verdict(request=req)
            t0 = time.perf_counter_ns()
            d = g.tool_rules.decide(c.name, c.arguments)
            t1 = time.perf_counter_ns()
            with contextlib.suppress(Blocked):  # a blocked one-call turn
                g.check_calls(req, (c,), verdict)
            t2 = time.perf_counter_ns()
            validate_calls(req, (c,))
            t3 = time.perf_counter_ns()
            decide_us.append((t1 - t0) / 1000)
            check_us.append((t2 - t1) / 1000)
            base_us.append((t3 - t2) / 1000)
            decisions[d.decision] = decisions.get(d.decision, 0) + 1
            sink.clear()
    finally:
        gc.enable()
    f: dict[str, Any] = {
        "rules": 100,
        "decisions": decisions,
        "decide_us": h.summary(decide_us),
        "check_calls_us": h.summary(check_us),
        "baseline_validate_calls_us": h.summary(base_us),
        "goal_p99_us": GOAL_P99_US,
    }
    for name, key in (("decide", "decide_us"), ("check_calls", "check_calls_us")):
        s = f[key]
        ratio = s["p50"] / f["baseline_validate_calls_us"]["p50"]
        print(
            f"{name:12s} p50/p99 {s['p50']:.2f}/{s['p99']:.2f} us  "
            f"({ratio:.2f}x validate_calls p50; goal p99 <= {GOAL_P99_US} us: "
            f"{h.goal(s['p99'], GOAL_P99_US)})"
        )
    b = f["baseline_validate_calls_us"]
    print(f"baseline     p50/p99 {b['p50']:.2f}/{b['p99']:.2f} us (validate_calls); {decisions}")
    h.write(args, f, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
