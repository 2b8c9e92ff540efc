"""What routing costs: the policy decision and the cloud path end to end.

``decide()`` and ``Router.route()`` on seeded random cases against an empty ``async def``;
a streamed ``"route": "cloud"`` request through the daemon (with and without guardian packs)
against the ``openai`` SDK to the same test cloud. docs/benchmarks.md has the method.

    .venv/bin/python bench/router.py [--quick] [--rounds 60]
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.config import RouterConfig
from edged.errors import EdgedError
from edged.router.policy import RouteInputs, RouterState, decide
from edged.router.router import LocalStats, Router, load_policies
from edged.types import CLOUD, LOCAL, ChatMessage, PowerState, Request, Verdict

GOALS = {"decide_p99_us": 100.0, "cloud_added_ms": 5.0}
# the semantic routes of docs/routing.md, rule 10: (name, backend)
SEMANTIC_ROUTES = (("fresh-facts", "cloud"), ("smalltalk", "local"))


def make_case(rnd: random.Random, policies: list[str]) -> dict[str, Any]:
    """One decision: what the request says and what the device knows at that moment."""
    hint = rnd.choices(["auto", "local", "cloud"], weights=[70, 10, 20])[0]
    private, force_local = rnd.random() < 0.07, rnd.random() < 0.03
    max_tokens = rnd.choice([16, 32, 64, 128, 256, 512, 1024])
    remaining_s = None if rnd.random() < 0.4 else rnd.uniform(0.2, 10)
    power = PowerState()  # 30%: no power source configured, everything unknown
    if rnd.random() >= 0.3:
        power = PowerState(
            battery_pct=None if rnd.random() < 0.1 else round(rnd.uniform(3, 100), 1),
            charging=rnd.choice([True, False, False, None]),
            power_w=None if rnd.random() < 0.3 else round(rnd.uniform(2, 16), 2),
            thermal_throttled=rnd.random() < 0.1,
            reason=None,
        )
    measured = rnd.random() > 0.1
    queue = rnd.choices([0, 1, 2, 3], weights=[60, 25, 10, 5])[0]
    tokens_per_s = rnd.uniform(20, 150) if measured else None
    ttft_s = rnd.uniform(0.02, 0.3) if measured else None
    local_ok, cloud_configured, cloud_ok = (rnd.random() > x for x in (0.05, 0.15, 0.1))
    budget_left, energy = rnd.random() > 0.05, rnd.random() < 0.5
    inputs = RouteInputs(
        hint=hint,
        pinned=private or force_local,
        max_tokens=max_tokens,
        remaining_s=remaining_s,
        power=power,
        local_ok=local_ok,
        local_queue=queue,
        local_tokens_per_s=tokens_per_s,
        local_ttft_s=ttft_s,
        cloud_configured=cloud_configured,
        cloud_ok=cloud_configured and cloud_ok,
        cloud_budget_left=budget_left,
        local_j_per_token=rnd.uniform(0.01, 0.1) if energy else None,
        radio_j_per_request=rnd.uniform(1, 10) if energy else None,
        semantic={}
        if rnd.random() < 0.5
        else {name: (backend, rnd.random() < 0.2) for name, backend in SEMANTIC_ROUTES},
    )
    # the router reads cloud_ok only where a cloud is configured, and then it is inputs.cloud_ok
    return {"inputs": inputs, "policy": rnd.choice(policies), "private": private, "fl": force_local}


async def _empty(request: Request, verdict: Verdict) -> None:
    return None


async def bench_decide(n: int) -> dict[str, Any]:
    cfg = RouterConfig(
        policy_dir=h.ROOT / "configs" / "policies",
        cloud_daily_requests=10**9,
        cloud_daily_tokens=10**12,
        local_j_per_token=0.03,
        radio_j_per_request=4.0,
    )
    policies = load_policies(cfg)
    rnd = random.Random(h.SEED)
    cases = [make_case(rnd, sorted(policies)) for _ in range(n)]
    # what the router reads through its callables, set per decision (no I/O)
    now: dict[str, Any] = {"power": PowerState(), "stats": LocalStats(), LOCAL: True, CLOUD: True}
    view = {k: SimpleNamespace(healthy=lambda k=k: now[k]) for k in (LOCAL, CLOUD)}
    snap = {"power": lambda: now["power"], "local_stats": lambda: now["stats"]}
    routers = {
        True: Router(cfg, policies, view, **snap),
        False: Router(cfg, policies, {LOCAL: view[LOCAL]}, **snap),
    }
    ns: dict[str, list[Any]] = {"decide": [], "route": [], "empty": [], "outcome": []}
    state, clock = RouterState(), time.perf_counter_ns

    async def one(i: int, case: dict[str, Any], rec: dict[str, list[Any]]) -> None:
        nonlocal state
        inp = case["inputs"]
        t0 = clock()
        with contextlib.suppress(EdgedError):
            _, state = decide(inp, policies[case["policy"]], state)
        rec["decide"].append(clock() - t0)
        now["power"] = inp.power
        now["stats"] = LocalStats(inp.local_queue, inp.local_tokens_per_s, inp.local_ttft_s)
        now[LOCAL], now[CLOUD] = inp.local_ok, inp.cloud_ok
        text, at = f"Question {i % 64}: what should I cook tonight?", time.monotonic()
        req = h.local_request(
            text,
            inp.max_tokens,
            route=inp.hint,
            rid=uuid.uuid4().hex[:10],
            messages=(ChatMessage("system", h.SYSTEM), ChatMessage("user", text)),
            sensitivity="private" if case["private"] else "normal",
            received_at_s=at,
            deadline_at_s=None if inp.remaining_s is None else at + inp.remaining_s,
            policy=case["policy"],
        )
        verdict = Verdict(request=req, force_local=case["fl"])
        for step in ("empty", "route") if i % 2 else ("route", "empty"):  # alternating
            r0 = clock()
            if step == "empty":
                await _empty(req, verdict)
            else:
                try:
                    d = await routers[inp.cloud_configured].route(req, verdict)
                    key = f"{d.backend}:{','.join(d.reasons)}"
                except EdgedError as e:
                    key = f"error:{e.code}"
            rec[step].append(clock() - r0)
        rec["outcome"].append(key)

    for i, case in enumerate(cases[:2000]):  # warm-up
        await one(i, case, {k: [] for k in ns})
    gc.collect()
    for i, case in enumerate(cases):
        await one(i, case, ns)
    for r in routers.values():
        r.close()
    us = {k: h.summary([x / 1000 for x in ns[k]]) for k in ("decide", "route", "empty")}
    outcomes = Counter(ns["outcome"])
    return {
        "policies": sorted(policies),
        "us": us,
        "ratio_route_empty_p50": us["route"]["p50"] / us["empty"]["p50"],
        "ratio_route_empty_p99": us["route"]["p99"] / us["empty"]["p99"],
        "errors": sum(v for k, v in outcomes.items() if k.startswith("error:")),
        "distinct_outcomes": len(outcomes),
        "cloud_share": sum(v for k, v in outcomes.items() if k.startswith("cloud:")) / n,
    }


def via_edged(c: h.Client, device_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = h.ask(c, device_id, body | {"stream": True, "route": "cloud"}, "reply/router", 60)
    final = r["final"]
    if final.get("type") != "result" or r["first_s"] is None:
        raise RuntimeError(f"edged failed: {final}")
    if final["route"] != {"backend": "cloud", "reasons": ["hint"]}:
        raise RuntimeError(f"not served by the cloud: {final['route']}")
    ttft_ms = (r["first_s"] - r["t0"]) * 1000
    return {"ttft_ms": ttft_ms, "first_chunk": r["chunks"][0], "text": final["text"]}


def via_sdk(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The openai SDK to the server, streamed, with the settings edged's cloud backend sends."""
    at, deltas, t0 = [], [], time.perf_counter()
    opts = {"stream": True, "stream_options": {"include_usage": True}}
    with client.chat.completions.create(model="default", **body, **opts) as stream:
        for chunk in stream:
            for c in chunk.choices or ():
                if c.index == 0 and c.delta.content:
                    at.append((time.perf_counter() - t0) * 1000)
                    deltas.append(c.delta.content)
    if not deltas:
        raise RuntimeError("the server sent no text")
    return {"ttft_ms": at[0], "text": "".join(deltas), "delta_ms": at, "deltas": deltas}


def compare(paths: list[dict[str, Any]], sdk: list[dict[str, Any]]) -> dict[str, Any]:
    """What an edged path adds over the direct call, per round, at the first chunk."""
    pairs = list(zip(paths, sdk, strict=True))
    held = []  # how many server deltas it takes to cover edged's first chunk
    for e, d in pairs:
        k = got = 0
        while k < len(d["deltas"]) and got < len(e["first_chunk"]):
            got, k = got + len(d["deltas"][k]), k + 1
        held.append(max(k, 1))
    return {
        "ttft_ms": h.summary([e["ttft_ms"] for e in paths]),
        "added_ms": h.summary([e["ttft_ms"] - d["ttft_ms"] for e, d in pairs]),
        "deltas_in_first_chunk": {str(k): held.count(k) for k in sorted(set(held))},
        "texts_same": sum(e["text"] == d["text"] for e, d in pairs),
    }


def bench_cloud(rounds: int, max_tokens: int) -> dict[str, Any]:
    from openai import OpenAI

    res: dict[str, list[dict[str, Any]]] = {"edged": [], "edged_noguard": [], "direct": []}
    with h.Stack("router", cloud=True) as stack, h.Client(stack.broker.port) as c:
        c.subscribe("reply/router")
        # the daemon as configured (the default guardian pack, whose output PII rule holds
        # streamed text back), and the same without guardian packs
        env = {"edged": {}, "edged_noguard": {"EDGED_GUARDIAN__PACKS": "[]"}}
        ids = {name: stack.daemon(e).device_id for name, e in env.items()}
        urls = (stack.cloud.base_url, stack.cloud.direct_url)
        sdk, flusher = (OpenAI(base_url=u, api_key="not-needed", max_retries=0) for u in urls)

        def body(text: str, n: int) -> dict[str, Any]:
            return {"messages": h.chat(text), "max_tokens": n, "temperature": 0.0}

        def run(name: str, flush_i: int, story_i: int) -> dict[str, Any]:
            # untimed, another prompt, straight to the server: the timed request then finds
            # only the chat-template prefix in the KV cache, whichever path sends it
            flusher.chat.completions.create(model="default", **body(f"Zebras, flush {flush_i}.", 1))
            b = body(h.story(story_i, "Write a short story about"), max_tokens)
            return via_sdk(sdk, b) if name == "direct" else via_edged(c, ids[name], b)

        for i in range(2):  # warm-up: connections open on every path, first-call costs paid
            for name in res:
                run(name, -1 - i, 100 + i)
        orders = list(itertools.permutations(res))
        for r in range(rounds):
            for name in orders[r % len(orders)]:
                res[name].append(run(name, r, r))
    direct, edged, noguard = res["direct"], res["edged"], res["edged_noguard"]
    second = [d["delta_ms"][1] for d in direct if len(d["deltas"]) > 1]
    return {
        "direct_ttft_ms": h.summary([d["ttft_ms"] for d in direct]),
        "direct_second_delta_ms_p50": h.pct(second, 50),
        "edged": compare(edged, direct),
        "edged_noguard": compare(noguard, direct),
        "guardian_adds_ms": h.summary(
            [a["ttft_ms"] - b["ttft_ms"] for a, b in zip(edged, noguard, strict=True)]
        ),
    }


def main() -> int:
    ap = h.parser(__doc__, "router")
    ap.add_argument("--quick", action="store_true", help="fewer decisions and rounds")
    ap.add_argument("--rounds", type=int, default=None, help="cloud rounds (default 60)")
    args = ap.parse_args()
    started = time.perf_counter()
    f: dict[str, Any] = {"seed": h.SEED}
    f["decide"] = d = asyncio.run(bench_decide(20_000 if args.quick else 50_000))
    p99, limit = d["us"]["route"]["p99"], GOALS["decide_p99_us"]
    print(f"Router.route() p99 {p99:.2f} us (<= {limit:g}: {h.goal(p99, limit)})")
    f["cloud"] = c = bench_cloud(args.rounds or (6 if args.quick else 60), 16)
    for name in ("edged", "edged_noguard"):
        added, limit = c[name]["added_ms"]["p50"], GOALS["cloud_added_ms"]
        print(f"{name} over the openai SDK, first chunk p50: +{added:.2f} ms", end=" ")
        print(f"(<= {limit:g}: {h.goal(added, limit)})")
    h.write(args, f, model=h.DEFAULT_MODEL_FILE, n_threads=1, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
