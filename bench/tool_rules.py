"""What the guardian's tool rules cost per call, with 100 tool rules loaded (goal: p99 <= 20 us).

100 ``kind = "tool"`` rules in three packs (one with ``tool_default = "block"``) over 60 tools,
and seeded calls in and out of bounds; timed per call: ``ToolRules.decide``,
``RuleGuardian.check_calls`` on a one-call turn, and the baseline ``validate_calls`` on the
same turn (the schema check every call passes anyway). docs/benchmarks.md has the method.

    .venv/bin/python bench/tool_rules.py [--calls 20000]
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.errors import Blocked
from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import Pack
from edged.tools.validate import validate_calls
from edged.types import ChatMessage, ReplyAddress, Request, ToolCall, ToolChoice, ToolSpec, Verdict

GOAL_P99_US = 20.0
N_TOOLS = 60
ROOMS = ["kitchen", "hall", "garage", "attic"]


def rules() -> list[dict[str, Any]]:
    """30 plain blocks, 10 blocks narrowed by an argument schema, 40 allows with a schema
    (bounds, an enum, a required key; 15 rate-capped), 20 confirms; tool ``t{n}``."""
    out: list[dict[str, Any]] = [{"id": f"block.{i}", "tools": [f"t{i}"]} for i in range(30)]
    for i in range(10):
        garage = {"type": "object", "properties": {"room": {"const": "garage"}}}
        out.append({"id": f"narrow.{i}", "tools": [f"t{30 + i}"], "arguments": garage})
    for r in out:
        r["action"] = "block"
    for i in range(40):
        level = {"type": "number", "minimum": 0, "maximum": 10 + i}
        schema = {"type": "object", "properties": {"level": level, "room": {"enum": ROOMS}}}
        r = {"id": f"allow.{i}", "tools": [f"t{30 + i % 30}"], "action": "allow"}
        r["arguments"] = {**schema, "required": ["level"]}
        if i < 15:
            r["max_per_minute"] = 1_000_000
        out.append(r)
    out += [{"id": f"confirm.{i}", "tools": [f"t{40 + i}"], "action": "confirm"} for i in range(20)]
    return [{"kind": "tool", **r} for r in out]


def packs() -> list[Pack]:
    rs = rules()
    return [
        Pack.model_validate({"name": name, "tool_default": default, "rule": rs[n::3]})
        for n, (name, default) in enumerate([("a", "allow"), ("b", "allow"), ("c", "block")])
    ]


def calls(n: int) -> list[ToolCall]:
    rnd = random.Random(h.SEED)
    out = []
    for i in range(n):
        tool = f"t{rnd.randrange(N_TOOLS + 5)}"  # a few tools no rule names
        args: dict[str, Any] = {"level": rnd.uniform(-2, 50)}
        if rnd.random() < 0.5:
            args["room"] = rnd.choice(ROOMS)
        out.append(ToolCall(f"c{i}", tool, json.dumps(args)))
    return out


def main() -> int:
    ap = h.parser(__doc__, "tool_rules")
    ap.add_argument("--calls", type=int, default=20_000, help="calls timed (%(default)s)")
    args = ap.parse_args()
    started = time.perf_counter()
    sink: list[Any] = []
    g = RuleGuardian(packs(), audit=sink.append)
    assert g.tool_rules.count == 100
    params = {"type": "object", "properties": {"level": {"type": "number"}, "room": {}}}
    req = Request(
        id="bench",
        messages=(ChatMessage("user", "go"),),
        max_tokens=8,
        temperature=0.0,
        stream=False,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("r"),
        received_at_s=time.monotonic(),
        tools=tuple(ToolSpec(f"t{i}", "", params) for i in range(N_TOOLS + 5)),
        tool_choice=ToolChoice("auto"),
    )
    todo = calls(args.calls)
    us: dict[str, list[float]] = {"decide_us": [], "check_calls_us": [], "baseline": []}
    decisions: dict[str, int] = {}
    for c in todo[:500]:  # warm the caches
        g.tool_rules.decide(c.name, c.arguments)
    gc.collect()
    gc.disable()
    try:
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
            for key, ns in zip(us, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                us[key].append(ns / 1000)
            decisions[d.decision] = decisions.get(d.decision, 0) + 1
            sink.clear()
    finally:
        gc.enable()
    f: dict[str, Any] = {"rules": 100, "decisions": decisions, "goal_p99_us": GOAL_P99_US}
    f |= {k: h.summary(v) for k, v in us.items()}
    f["baseline_validate_calls_us"] = f.pop("baseline")
    base = f["baseline_validate_calls_us"]
    for key in ("decide_us", "check_calls_us"):
        s = f[key]
        print(
            f"{key[:-3]:12s} p50/p99 {s['p50']:.2f}/{s['p99']:.2f} us"
            f"  ({s['p50'] / base['p50']:.2f}x validate_calls p50;"
            f" goal p99 <= {GOAL_P99_US} us: {h.goal(s['p99'], GOAL_P99_US)})"
        )
    print(f"baseline     p50/p99 {base['p50']:.2f}/{base['p99']:.2f} us; {decisions}")
    h.write(args, f, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
