"""What routing costs: the policy decision, the semantic routes, and the cloud path end to end.

Three measurements, each against a baseline timed in the same loop:

  1. decide    ``decide()`` alone and ``Router.route()`` (snapshot + decide + record, no
               semantic routes) on seeded random device states and requests over the presets
               in configs/policies/, one call at a time. Baseline: an empty ``async def``
               awaited the same way (the floor of any async stage).
  2. semantic  ``Router.route()`` with 2 semantic routes x 3 examples on the real MiniLM
               embedder (1 thread), on 8-20 word chat turns. Baseline: ``embed([text])``.
  3. cloud     the test cloud and two daemons (the default guardian pack, and none). Each
               round one fresh prompt (max_tokens 16, temperature 0, streamed) goes to each
               daemon over MQTT with ``"route": "cloud"`` (publish to first chunk) and to the
               same server through the same proxy with the ``openai`` SDK (call to first
               delta), in rotating order; an untimed request before each one leaves every
               path the same KV cache. A QoS 1 publish/echo through the broker (the two MQTT
               hops) is timed every round too.

    .venv/bin/python bench/router.py [--quick] [--rounds 60]
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import _harness as h
from edged.config import RouterConfig, SemanticRoute
from edged.errors import EdgedError
from edged.router.policy import RouteInputs, RouterState, decide
from edged.router.router import LocalStats, Router, load_policies
from edged.types import CLOUD, LOCAL, ChatMessage, PowerState, Request, Verdict
from tests.fixtures.benign.corpus import load_benign

GOALS = {"decide_p99_us": 100.0, "cloud_added_ms": 5.0}
# the routes of docs/routing.md, rule 10
SEMANTIC_ROUTES = [
    SemanticRoute(name=name, backend=backend, threshold=0.5, examples=examples.split("|"))
    for name, backend, examples in (
        (
            "fresh-facts",
            "cloud",
            "what is the latest news|today's stock price of|who won the game last night",
        ),
        ("smalltalk", "local", "how are you|tell me a joke|good morning"),
    )
]


# --- 1: the decision without the embedding ----------------------------------------------------


def make_case(rnd: random.Random, policies: list[str]) -> dict[str, Any]:
    """One decision: what the request says and what the device knows at that moment."""
    hint = rnd.choices(["auto", "local", "cloud"], weights=[70, 10, 20])[0]
    private, force_local = rnd.random() < 0.07, rnd.random() < 0.03
    max_tokens = rnd.choice([16, 32, 64, 128, 256, 512, 1024])
    remaining_s = None if rnd.random() < 0.4 else rnd.uniform(0.2, 10)
    power = (
        PowerState()  # 30%: no power source configured, everything unknown
        if rnd.random() < 0.3
        else PowerState(
            battery_pct=None if rnd.random() < 0.1 else round(rnd.uniform(3, 100), 1),
            charging=rnd.choice([True, False, False, None]),
            power_w=None if rnd.random() < 0.3 else round(rnd.uniform(2, 16), 2),
            thermal_throttled=rnd.random() < 0.1,
            reason=None,
        )
    )
    measured = rnd.random() > 0.1
    stats = LocalStats(
        queue=rnd.choices([0, 1, 2, 3], weights=[60, 25, 10, 5])[0],
        tokens_per_s=rnd.uniform(20, 150) if measured else None,
        ttft_s=rnd.uniform(0.02, 0.3) if measured else None,
    )
    local_ok, cloud_configured, cloud_ok = (rnd.random() > x for x in (0.05, 0.15, 0.1))
    budget_left, energy = rnd.random() > 0.05, rnd.random() < 0.5
    inputs = RouteInputs(
        hint=hint,
        pinned=private or force_local,
        max_tokens=max_tokens,
        remaining_s=remaining_s,
        power=power,
        local_ok=local_ok,
        local_queue=stats.queue,
        local_tokens_per_s=stats.tokens_per_s,
        local_ttft_s=stats.ttft_s,
        cloud_configured=cloud_configured,
        cloud_ok=cloud_configured and cloud_ok,
        cloud_budget_left=budget_left,
        local_j_per_token=rnd.uniform(0.01, 0.1) if energy else None,
        radio_j_per_request=rnd.uniform(1, 10) if energy else None,
        semantic={}
        if rnd.random() < 0.5
        else {r.name: (r.backend, rnd.random() < 0.2) for r in SEMANTIC_ROUTES},
    )
    case = {"inputs": inputs, "policy": rnd.choice(policies), "force_local": force_local}
    return case | {"private": private, "stats": stats, "local_ok": local_ok, "cloud_ok": cloud_ok}


class Flag:
    """A BackendView whose health the bench sets before each decision."""

    ok = True

    def healthy(self) -> bool:
        return self.ok


class Device:
    """What the router reads through its callables, set per decision (no I/O)."""

    def __init__(self) -> None:
        self.power, self.stats, self.local, self.cloud = PowerState(), LocalStats(), Flag(), Flag()

    def router(self, with_cloud: bool = True, embedder: Any = None, **extra: Any) -> Router:
        cfg = router_config(**extra)
        backends = {LOCAL: self.local, CLOUD: self.cloud} if with_cloud else {LOCAL: self.local}
        return Router(
            cfg,
            load_policies(cfg),
            backends,
            power=lambda: self.power,
            local_stats=lambda: self.stats,
            embedder=embedder,
        )


def router_config(**extra: Any) -> RouterConfig:
    return RouterConfig(
        policy_dir=h.ROOT / "configs" / "policies",
        cloud_daily_requests=10**9,
        cloud_daily_tokens=10**12,
        local_j_per_token=0.03,
        radio_j_per_request=4.0,
        **extra,
    )


def request(text: str, policy: str | None = None, case: dict[str, Any] | None = None) -> Request:
    """A request for ``text``: auto, 128 tokens, no deadline, or as ``case`` says."""
    inp, now = case["inputs"] if case else None, time.monotonic()
    left = inp.remaining_s if inp else None
    req: Request = h.local_request(
        text,
        inp.max_tokens if inp else 128,
        route=inp.hint if inp else "auto",
        rid=uuid.uuid4().hex[:10],
        messages=(ChatMessage("system", h.SYSTEM), ChatMessage("user", text)),
        sensitivity="private" if case and case["private"] else "normal",
        received_at_s=now,
        deadline_at_s=None if left is None else now + left,
        policy=case["policy"] if case else policy,
    )
    return req


async def _empty(request: Request, verdict: Verdict) -> None:
    return None


def _noop(inp: RouteInputs, policy: Any, state: RouterState) -> None:
    return None


async def bench_decide(n: int) -> dict[str, Any]:
    policies = load_policies(router_config())
    rnd = random.Random(h.SEED)
    cases = [make_case(rnd, sorted(policies)) for _ in range(n)]
    device = Device()
    routers = {True: device.router(), False: device.router(with_cloud=False)}
    ns: dict[str, list[int]] = {"decide": [], "noop": [], "route": [], "empty": []}
    outcomes: dict[str, int] = {}
    state = RouterState()
    clock = time.perf_counter_ns
    texts = [f"Question {i}: what should I cook tonight?" for i in range(64)]

    async def one(i: int, case: dict[str, Any], timed: bool) -> None:
        nonlocal state
        t0 = clock()
        with contextlib.suppress(EdgedError):
            _, state = decide(case["inputs"], policies[case["policy"]], state)
        t1 = clock()
        _noop(case["inputs"], policies[case["policy"]], state)
        t2 = clock()
        device.power, device.stats = case["inputs"].power, case["stats"]
        device.local.ok, device.cloud.ok = case["local_ok"], case["cloud_ok"]
        req = request(texts[i % len(texts)], case=case)
        verdict = Verdict(request=req, force_local=case["force_local"])
        empty = 0
        for step in ("empty", "route") if i % 2 else ("route", "empty"):  # alternating
            r0 = clock()
            if step == "empty":
                await _empty(req, verdict)
                empty = clock() - r0
                continue
            try:
                d = await routers[case["inputs"].cloud_configured].route(req, verdict)
                key = f"{d.backend}:{','.join(d.reasons)}"
            except EdgedError as e:
                key = f"error:{e.code}"
            route = clock() - r0
        if timed:
            ns["decide"].append(t1 - t0)
            ns["noop"].append(t2 - t1)
            ns["route"].append(route)
            ns["empty"].append(empty)
            outcomes[key] = outcomes.get(key, 0) + 1

    for i, case in enumerate(cases[:2000]):  # warm-up
        await one(i, case, timed=False)
    gc.collect()
    for i, case in enumerate(cases):
        await one(i, case, timed=True)
    for r in routers.values():
        r.close()
    us = {k: h.summary([x / 1000 for x in v]) for k, v in ns.items()}
    return {
        "decisions": n,
        "policies": sorted(policies),
        "us": us,
        "ratio_route_empty_p50": us["route"]["p50"] / us["empty"]["p50"],
        "ratio_route_empty_p99": us["route"]["p99"] / us["empty"]["p99"],
        "errors": sum(v for k, v in outcomes.items() if k.startswith("error:")),
        "distinct_outcomes": len(outcomes),
        "top_outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1])[:8]),
        "cloud_share": sum(v for k, v in outcomes.items() if k.startswith("cloud:")) / n,
    }


# --- 2: semantic routes ------------------------------------------------------------------------


async def bench_semantic(count: int, rounds: int) -> dict[str, Any]:
    from edged.embeddings.minilm import MiniLMEmbedder

    fit = [t for t in load_benign() if 8 <= len(t.split()) <= 20]
    prompts = fit[:: max(1, len(fit) // count)][:count]
    t0 = time.perf_counter()
    emb = MiniLMEmbedder.from_manifest(h.ROOT / "models" / "manifest.toml", h.ROOT / "models", 1)
    load_ms = (time.perf_counter() - t0) * 1000
    router = Device().router(semantic_routes=SEMANTIC_ROUTES, embedder=emb)
    names = sorted(load_policies(router_config()))
    rnd = random.Random(h.SEED + 2)
    ms: dict[str, list[float]] = {"route": [], "embed": []}
    hits: dict[str, int] = {}

    async def route(text: str) -> str:
        req = request(text, policy=rnd.choice(names))
        d = await router.route(req, Verdict(request=req))
        return ",".join(r for r in d.reasons if r.startswith("semantic:"))

    try:
        for t in prompts[:5]:  # warm-up
            await route(t)
            emb.embed([t])
        # the routes do fire (docs/routing.md, rule 10); the corpus turns are timed below
        checks = {
            t: await route(t) or "none"
            for t in ("Who won yesterday's match?", "Tell me something funny.")
        }
        for r in range(rounds):
            for i, text in enumerate(prompts):
                for which in ("route", "embed") if (i + r) % 2 == 0 else ("embed", "route"):
                    c0 = time.perf_counter_ns()
                    hit = await route(text) if which == "route" else emb.embed([text])
                    ms[which].append((time.perf_counter_ns() - c0) / 1e6)
                    if which == "route" and r == 0 and hit:
                        hits[str(hit)] = hits.get(str(hit), 0) + 1
    finally:
        router.close()
    s = {k: h.summary(v) for k, v in ms.items()}
    added = [a - b for a, b in zip(ms["route"], ms["embed"], strict=True)]
    return {
        "prompts": len(prompts),
        "rounds": rounds,
        "embedder_load_ms": load_ms,
        "ms": s,
        "words_mean": float(np.mean([len(t.split()) for t in prompts])),
        "ratio_route_embed_p50": s["route"]["p50"] / s["embed"]["p50"],
        "ratio_route_embed_p99": s["route"]["p99"] / s["embed"]["p99"],
        "route_minus_embed_ms_p50": h.pct(added, 50),
        "semantic_hits": hits,
        "checks": checks,
    }


# --- 3: the cloud path end to end ----------------------------------------------------------------


class Echo(h.Client):
    """Sends whatever arrives on ``<tag>/in`` back on ``<tag>/out``, from paho's thread."""

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        client.publish(msg.topic[:-2] + "out", msg.payload, qos=1)


class Direct:
    """The openai SDK to the server, streamed, with the settings edged's cloud backend sends."""

    def __init__(self, base_url: str, flush_url: str) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
        self.flusher = OpenAI(base_url=flush_url, api_key="not-needed", max_retries=0)

    def ask(self, text: str, max_tokens: int) -> dict[str, Any]:
        deltas: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        with self.client.chat.completions.create(
            model="default",
            messages=h.chat(text),
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        ) as stream:
            for chunk in stream:
                for c in chunk.choices or ():
                    if c.index == 0 and c.delta.content:
                        deltas.append((time.perf_counter(), c.delta.content))
        if not deltas:
            raise RuntimeError("the server sent no text")
        return {
            "ttft_ms": (deltas[0][0] - t0) * 1000,
            "text": "".join(d for _, d in deltas),
            "delta_ms": [(t - t0) * 1000 for t, _ in deltas],
            "deltas": [d for _, d in deltas],
        }

    def flush(self, i: int) -> None:
        """An untimed request with another prompt, straight to the server: the next request
        finds only the chat-template prefix in the KV cache, whichever path sends it."""
        self.flusher.chat.completions.create(
            model="default", max_tokens=1, temperature=0.0, messages=h.chat(f"Zebras, flush {i}.")
        )


def via_edged(c: h.Client, device_id: str, text: str, max_tokens: int) -> dict[str, Any]:
    body = {
        "messages": h.chat(text),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "route": "cloud",
    }
    r = h.ask(c, device_id, body, "reply/router", 60)
    final = r["final"]
    if final.get("type") != "result" or r["first_s"] is None:
        raise RuntimeError(f"edged failed: {final}")
    if final["route"] != {"backend": "cloud", "reasons": ["hint"]}:
        raise RuntimeError(f"not served by the cloud: {final['route']}")
    return {
        "ttft_ms": (r["first_s"] - r["t0"]) * 1000,
        "first_chunk": r["chunks"][0],
        "text": final["text"],
        "daemon_ttft_ms": float(final["timing_ms"]["ttft"]),
    }


def compare(paths: list[dict[str, Any]], sdk: list[dict[str, Any]]) -> dict[str, Any]:
    """What an edged path adds over the direct call, per round: at the first chunk, and at the
    direct call's delta that completes the same text (guardian hold-back aside)."""
    diff = [e["ttft_ms"] - d["ttft_ms"] for e, d in zip(paths, sdk, strict=True)]
    held = []  # how many server deltas it takes to cover edged's first chunk
    for e, d in zip(paths, sdk, strict=True):
        k = got = 0
        while k < len(d["deltas"]) and got < len(e["first_chunk"]):
            got, k = got + len(d["deltas"][k]), k + 1
        held.append(max(k, 1))
    same = [e["ttft_ms"] - d["delta_ms"][k - 1] for e, d, k in zip(paths, sdk, held, strict=True)]
    return {
        "ttft_ms": h.summary([e["ttft_ms"] for e in paths]),
        "added_ms": h.summary(diff),
        "daemon_ttft_ms_p50": h.pct([e["daemon_ttft_ms"] for e in paths], 50),
        "added_same_text_ms": h.summary(same),
        "deltas_in_first_chunk": {str(k): held.count(k) for k in sorted(set(held))},
        "texts_same": sum(e["text"] == d["text"] for e, d in zip(paths, sdk, strict=True)),
        "_diff": diff,
    }


def bench_cloud(rounds: int, max_tokens: int, echoes: int) -> dict[str, Any]:
    res: dict[str, list[dict[str, Any]]] = {"edged": [], "edged_noguard": [], "direct": []}
    echo_ms: list[float] = []
    with h.Stack("router", cloud=True) as stack:
        assert stack.cloud is not None
        # the daemon as configured (the default guardian pack, whose output PII rule holds
        # streamed text back), and the same without guardian packs
        daemons = {
            "edged": stack.daemon(),
            "edged_noguard": stack.daemon({"EDGED_GUARDIAN__PACKS": "[]"}),
        }
        c, echo = h.Client(stack.broker.port), Echo(stack.broker.port)
        stack.on_exit(lambda: (c.__exit__(), echo.__exit__()))
        c.__enter__()
        echo.__enter__()
        tag = f"bench/{uuid.uuid4().hex[:6]}"
        c.subscribe("reply/router", f"{tag}/out")
        echo.subscribe(f"{tag}/in")
        direct = Direct(stack.cloud.base_url, stack.cloud.direct_url)
        payload = json.dumps(
            {
                "id": "bench-0123456789",
                "messages": h.chat(h.story(0, "Write a short story about")),
                "max_tokens": 16,
                "temperature": 0.0,
                "stream": True,
                "route": "cloud",
            }
        )

        def echo_once() -> float:
            t0 = time.perf_counter()
            c.publish(f"{tag}/in", payload, wait=False)
            while (m := c.get(10)).topic != f"{tag}/out":
                pass
            return (m.at_s - t0) * 1000

        fns = {
            name: (lambda t, n, d=d: via_edged(c, d.device_id, t, n)) for name, d in daemons.items()
        }
        fns["direct"] = direct.ask
        orders = list(itertools.permutations(fns))
        for i in range(2):  # warm-up: connections open on every path, first-call costs paid
            for fn in fns.values():
                direct.flush(-1 - i)
                fn(h.story(100 + i, "Write a short story about"), max_tokens)
            echo_once()
        for r in range(rounds):
            for name in orders[r % len(orders)]:
                direct.flush(r)
                res[name].append(fns[name](h.story(r, "Write a short story about"), max_tokens))
            echo_ms.append(float(np.median([echo_once() for _ in range(echoes)])))
        warnings = sum(
            "level=warning" in ln or "level=error" in ln
            for d in daemons.values()
            for ln in d.logs().splitlines()
        )
    sdk = res["direct"]
    out: dict[str, Any] = {
        "rounds": rounds,
        "max_tokens": max_tokens,
        "direct_ttft_ms": h.summary([d["ttft_ms"] for d in sdk]),
        "direct_second_delta_ms_p50": h.pct(
            [d["delta_ms"][1] for d in sdk if len(d["deltas"]) > 1], 50
        ),
        "mqtt_echo_ms": h.summary(echo_ms),
        "echo_payload_bytes": len(payload),
        "daemon_warnings": warnings,
        "example": {
            "direct_deltas": sdk[0]["deltas"][:3],
            "edged": res["edged"][0]["first_chunk"],
            "edged_noguard": res["edged_noguard"][0]["first_chunk"],
        },
    }
    for name in ("edged", "edged_noguard"):
        out[name] = cmp = compare(res[name], sdk)
        diff = cmp.pop("_diff")
        cmp["added_minus_echo_ms_p50"] = h.pct(
            [a - m for a, m in zip(diff, echo_ms, strict=True)], 50
        )
    out["guardian_adds_ms"] = h.summary(
        [
            a["ttft_ms"] - b["ttft_ms"]
            for a, b in zip(res["edged"], res["edged_noguard"], strict=True)
        ]
    )
    return out


def main() -> int:
    ap = h.parser(__doc__, "router")
    ap.add_argument("--quick", action="store_true", help="fewer decisions, prompts and rounds")
    ap.add_argument("--rounds", type=int, default=None, help="cloud rounds (default 60)")
    args = ap.parse_args()
    started = time.perf_counter()
    q = bool(args.quick)
    f: dict[str, Any] = {"seed": h.SEED}
    f["decide"] = d = asyncio.run(bench_decide(20_000 if q else 50_000))
    p99, limit = d["us"]["route"]["p99"], GOALS["decide_p99_us"]
    print(f"Router.route() p99 {p99:.2f} us (<= {limit:g}: {h.goal(p99, limit)})")
    f["semantic"] = asyncio.run(bench_semantic(60 if q else 200, 1 if q else 2))
    f["cloud"] = c = bench_cloud(args.rounds or (6 if q else 60), 16, echoes=3)
    for name, limit in (("edged", GOALS["cloud_added_ms"]), ("edged_noguard", None)):
        added = c[name]["added_ms"]["p50"]
        print(f"{name} over the openai SDK, first chunk p50: +{added:.2f} ms", end="")
        print(f" (<= {limit:g}: {h.goal(added, limit)})" if limit else "")
    h.write(args, f, model=h.DEFAULT_MODEL_FILE, n_threads=1, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
