"""What routing costs: the policy decision, the semantic routes, and the cloud path end to end.

Three measurements, in one run, each against a baseline measured in the same loop:

  1. decide    ``decide()`` alone and ``Router.route()`` (snapshot + decide + record, no
               semantic routes) on seeded random device states and requests over the three
               presets in configs/policies/, one call at a time (perf_counter_ns). Baseline:
               an empty ``async def`` awaited the same way (the floor of any async stage).
  2. semantic  ``Router.route()`` with 2 semantic routes x 3 examples on the real MiniLM
               embedder (1 thread), on chat turns of 8-20 words from the benign corpus.
               Baseline: ``embed([text])`` alone, called directly.
  3. cloud     Mosquitto, llama.cpp's OpenAI-compatible server (1 thread, behind the
               recording proxy of tests.helpers) and the edged daemon with the cloud
               enabled. Round by round, the same fresh prompt (max_tokens 16, temperature 0,
               streamed) goes (a) to edged over MQTT with ``"route": "cloud"``, timed from
               the publish to the first chunk in the client's network thread, and (b) to the
               same server through the same proxy with the ``openai`` SDK, timed from the
               call to the first content delta. The difference is what edged adds over
               calling the cloud directly. A QoS 1 publish/echo round trip through the same
               broker (the two MQTT hops of (a)) is measured in every round too.

Before every timed cloud request one untimed request with another prompt goes to the server,
so both paths find the same KV cache (the shared chat-template prefix, not the prompt);
without it the second path of a round would reuse the first one's prompt evaluation.

The last line printed is JSON with every figure.

    .venv/bin/python bench/router.py [--quick] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import json
import math
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from bench.prompts import TOPICS
from edged.config import PolicyConfig, RouterConfig, SemanticRoute
from edged.errors import EdgedError
from edged.mqtt.link import props_for
from edged.router.policy import RouteInputs, RouterState, decide
from edged.router.router import LocalStats, Router, load_policies
from edged.types import CLOUD, LOCAL, ChatMessage, PowerState, ReplyAddress, Request, Verdict
from tests.fixtures.benign.corpus import load_benign
from tests.helpers import DEFAULT_MODEL_FILE, Broker, CloudServer, Daemon

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261125
SYSTEM = "You are a helpful assistant. Answer briefly."
POLICY_DIR = ROOT / "configs" / "policies"
DECIDE_GOAL_US = 100.0
CLOUD_GOAL_MS = 5.0

# The routes of docs/routing.md, rule 10.
SEMANTIC_ROUTES = [
    SemanticRoute(
        name="fresh-facts",
        backend="cloud",
        threshold=0.5,
        examples=[
            "what is the latest news",
            "today's stock price of",
            "who won the game last night",
        ],
    ),
    SemanticRoute(
        name="smalltalk",
        backend="local",
        threshold=0.5,
        examples=["how are you", "tell me a joke", "good morning"],
    ),
]


def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else math.nan


def summary(xs: Sequence[float]) -> dict[str, float]:
    return {"p50": pct(xs, 50), "p99": pct(xs, 99), "min": min(xs), "max": max(xs)}


# --- 1: the decision without the embedding ----------------------------------------------------


def random_power(rnd: random.Random) -> PowerState:
    if rnd.random() < 0.3:
        return PowerState()  # no power source configured: everything unknown
    return PowerState(
        battery_pct=None if rnd.random() < 0.1 else round(rnd.uniform(3, 100), 1),
        charging=rnd.choice([True, False, False, None]),
        power_w=None if rnd.random() < 0.3 else round(rnd.uniform(2, 16), 2),
        thermal_throttled=rnd.random() < 0.1,
        reason=None,
    )


def random_stats(rnd: random.Random) -> LocalStats:
    measured = rnd.random() > 0.1
    return LocalStats(
        queue=rnd.choices([0, 1, 2, 3], weights=[60, 25, 10, 5])[0],
        tokens_per_s=rnd.uniform(20, 150) if measured else None,
        ttft_s=rnd.uniform(0.02, 0.3) if measured else None,
    )


def random_semantic(rnd: random.Random) -> dict[str, tuple[str, bool]]:
    if rnd.random() < 0.5:
        return {}
    return {r.name: (r.backend, rnd.random() < 0.2) for r in SEMANTIC_ROUTES}


@dataclass(frozen=True, slots=True)
class Case:
    """One decision: what the request says and what the device knows at that moment."""

    inputs: RouteInputs  # for decide() alone
    policy: str
    hint: str
    private: bool
    force_local: bool
    max_tokens: int
    remaining_s: float | None
    power: PowerState
    stats: LocalStats
    local_ok: bool
    cloud_configured: bool
    cloud_ok: bool


def make_cases(n: int, policies: Sequence[str], rnd: random.Random) -> list[Case]:
    out: list[Case] = []
    for _ in range(n):
        hint = rnd.choices(["auto", "local", "cloud"], weights=[70, 10, 20])[0]
        private = rnd.random() < 0.07
        force_local = rnd.random() < 0.03
        max_tokens = rnd.choice([16, 32, 64, 128, 256, 512, 1024])
        remaining_s = None if rnd.random() < 0.4 else rnd.uniform(0.2, 10)
        power = random_power(rnd)
        stats = random_stats(rnd)
        local_ok = rnd.random() > 0.05
        cloud_configured = rnd.random() > 0.15
        cloud_ok = rnd.random() > 0.1
        budget_left = rnd.random() > 0.05
        energy = rnd.random() < 0.5
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
            semantic=random_semantic(rnd),
        )
        out.append(
            Case(
                inputs=inputs,
                policy=rnd.choice(list(policies)),
                hint=hint,
                private=private,
                force_local=force_local,
                max_tokens=max_tokens,
                remaining_s=remaining_s,
                power=power,
                stats=stats,
                local_ok=local_ok,
                cloud_configured=cloud_configured,
                cloud_ok=cloud_ok,
            )
        )
    return out


class FlagBackend:
    """A BackendView whose health the benchmark sets before each decision."""

    def __init__(self) -> None:
        self.ok = True

    def healthy(self) -> bool:
        return self.ok


class Device:
    """What the router reads through its callables, set per decision (no I/O, like the
    daemon's cached values)."""

    def __init__(self) -> None:
        self.power = PowerState()
        self.stats = LocalStats()
        self.local = FlagBackend()
        self.cloud = FlagBackend()

    def set(self, case: Case) -> None:
        self.power = case.power
        self.stats = case.stats
        self.local.ok = case.local_ok
        self.cloud.ok = case.cloud_ok


def router_config(**extra: Any) -> RouterConfig:
    return RouterConfig(
        policy_dir=POLICY_DIR,
        cloud_daily_requests=10**9,  # checked on every decision, never reached
        cloud_daily_tokens=10**12,
        local_j_per_token=0.03,
        radio_j_per_request=4.0,
        **extra,
    )


def make_request(
    text: str, *, route: str, private: bool, max_tokens: int, remaining_s: float | None, policy: str
) -> Request:
    now = time.monotonic()
    return Request(
        id=uuid.uuid4().hex[:10],
        messages=(ChatMessage("system", SYSTEM), ChatMessage("user", text)),
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        route=route,  # type: ignore[arg-type]
        sensitivity="private" if private else "normal",
        reply=ReplyAddress("reply/bench"),
        received_at_s=now,
        deadline_at_s=None if remaining_s is None else now + remaining_s,
        policy=policy,
    )


async def _empty(request: Request, verdict: Verdict) -> None:
    return None


def _noop(inp: RouteInputs, policy: PolicyConfig, state: RouterState) -> None:
    return None


async def bench_decide(n: int) -> dict[str, Any]:
    policies = load_policies(router_config())
    rnd = random.Random(SEED)
    cases = make_cases(n, sorted(policies), rnd)
    device = Device()
    with_cloud = Router(
        router_config(),
        policies,
        {LOCAL: device.local, CLOUD: device.cloud},
        power=lambda: device.power,
        local_stats=lambda: device.stats,
    )
    without_cloud = Router(
        router_config(),
        policies,
        {LOCAL: device.local},
        power=lambda: device.power,
        local_stats=lambda: device.stats,
    )
    ns: dict[str, list[int]] = {"decide": [], "noop": [], "route": [], "empty": []}
    outcomes: dict[str, int] = {}
    errors = decide_errors = 0
    state = RouterState()
    clock = time.perf_counter_ns
    texts = [f"Question {i}: what should I cook tonight?" for i in range(64)]

    async def one(i: int, case: Case, timed: bool) -> None:
        nonlocal state, errors, decide_errors
        policy = policies[case.policy]
        # decide() alone, with its sync floor
        t0 = clock()
        try:
            _, state = decide(case.inputs, policy, state)
        except EdgedError:
            decide_errors += 1
        t1 = clock()
        _noop(case.inputs, policy, state)
        t2 = clock()
        # Router.route(), with its async floor; the order alternates
        device.set(case)
        router = with_cloud if case.cloud_configured else without_cloud
        req = make_request(
            texts[i % len(texts)],
            route=case.hint,
            private=case.private,
            max_tokens=case.max_tokens,
            remaining_s=case.remaining_s,
            policy=case.policy,
        )
        verdict = Verdict(request=req, force_local=case.force_local)
        first_empty = i % 2 == 1
        if first_empty:
            e0 = clock()
            await _empty(req, verdict)
            e1 = clock()
        r0 = clock()
        try:
            d = await router.route(req, verdict)
            key = f"{d.backend}:{','.join(d.reasons)}"
        except EdgedError as e:
            key = f"error:{e.code}"
            errors += 1
        r1 = clock()
        if not first_empty:
            e0 = clock()
            await _empty(req, verdict)
            e1 = clock()
        if timed:
            ns["decide"].append(t1 - t0)
            ns["noop"].append(t2 - t1)
            ns["route"].append(r1 - r0)
            ns["empty"].append(e1 - e0)
            outcomes[key] = outcomes.get(key, 0) + 1

    for i, case in enumerate(cases[:2000]):  # warm-up
        await one(i, case, timed=False)
    errors = decide_errors = 0
    gc.collect()
    for i, case in enumerate(cases):
        await one(i, case, timed=True)
    with_cloud.close()
    without_cloud.close()
    us = {k: [x / 1000 for x in v] for k, v in ns.items()}
    s = {k: summary(v) for k, v in us.items()}
    above = [r - e for r, e in zip(us["route"], us["empty"], strict=True)]
    return {
        "decisions": n,
        "policies": sorted(policies),
        "us": s,
        "route_minus_empty_us_p50": pct(above, 50),
        "ratio_route_empty_p50": s["route"]["p50"] / s["empty"]["p50"],
        "ratio_route_empty_p99": s["route"]["p99"] / s["empty"]["p99"],
        "errors": errors,
        "decide_errors": decide_errors,
        "distinct_outcomes": len(outcomes),
        "top_outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1])[:8]),
        "cloud_share": sum(v for k, v in outcomes.items() if k.startswith("cloud:")) / n,
    }


# --- 2: semantic routes ------------------------------------------------------------------------


def semantic_prompts(corpus: Sequence[str], count: int) -> list[str]:
    """Chat turns of 8-20 words, evenly spaced through the corpus."""
    fit = [t for t in corpus if 8 <= len(t.split()) <= 20]
    stride = max(1, len(fit) // count)
    return [fit[i * stride] for i in range(count)]


async def bench_semantic(prompts: Sequence[str], rounds: int) -> dict[str, Any]:
    from edged.embeddings.minilm import MiniLMEmbedder

    t0 = time.perf_counter()
    emb = MiniLMEmbedder.from_manifest(ROOT / "models" / "manifest.toml", ROOT / "models", 1)
    load_ms = (time.perf_counter() - t0) * 1000
    policies = load_policies(router_config())
    device = Device()
    router = Router(
        router_config(semantic_routes=SEMANTIC_ROUTES),
        policies,
        {LOCAL: device.local, CLOUD: device.cloud},
        power=lambda: device.power,
        local_stats=lambda: device.stats,
        embedder=emb,
    )
    rnd = random.Random(SEED + 2)
    names = sorted(policies)
    ms: dict[str, list[float]] = {"route": [], "embed": []}
    semantic_hits: dict[str, int] = {}
    checks: dict[str, str] = {}
    try:

        async def route(text: str) -> str:
            req = make_request(
                text,
                route="auto",
                private=False,
                max_tokens=128,
                remaining_s=None,
                policy=rnd.choice(names),
            )
            d = await router.route(req, Verdict(request=req))
            return ",".join(r for r in d.reasons if r.startswith("semantic:"))

        for t in prompts[:5]:  # warm-up
            await route(t)
            emb.embed([t])
        # the routes do fire (docs/routing.md, rule 10); the corpus turns are timed below
        for t in ("Who won yesterday's match?", "Tell me something funny."):
            checks[t] = await route(t) or "none"
        for r in range(rounds):
            for i, text in enumerate(prompts):
                for which in ("route", "embed") if (i + r) % 2 == 0 else ("embed", "route"):
                    c0 = time.perf_counter_ns()
                    if which == "route":
                        hit = await route(text)
                    else:
                        emb.embed([text])
                    ms[which].append((time.perf_counter_ns() - c0) / 1e6)
                    if which == "route" and r == 0 and hit:
                        semantic_hits[hit] = semantic_hits.get(hit, 0) + 1
    finally:
        router.close()
    s = {k: summary(v) for k, v in ms.items()}
    added = [a - b for a, b in zip(ms["route"], ms["embed"], strict=True)]
    return {
        "prompts": len(prompts),
        "rounds": rounds,
        "words_mean": float(np.mean([len(t.split()) for t in prompts])),
        "embedder_load_ms": load_ms,
        "ms": s,
        "ratio_route_embed_p50": s["route"]["p50"] / s["embed"]["p50"],
        "ratio_route_embed_p99": s["route"]["p99"] / s["embed"]["p99"],
        "route_minus_embed_ms_p50": pct(added, 50),
        "semantic_hits": semantic_hits,
        "checks": checks,
    }


# --- 3: the cloud path end to end ----------------------------------------------------------------


def _nodelay(c: paho.Client, u: Any, sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttBench:
    """One MQTT v5 client (TCP_NODELAY) for requests to edged and for the echo round trip;
    everything is timed in paho's network thread as it arrives."""

    def __init__(self, port: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.reply_topic = f"reply/bench-{tag}"
        self.echo_in = f"bench/{tag}/echo-in"
        self.echo_out = f"bench/{tag}/echo-out"
        self.c = self._client(f"bench-{tag}", port)
        self.c.on_message = self._on_message
        # the echo: a second client that sends back whatever arrives, from its network thread
        self.e = self._client(f"bench-echo-{tag}", port)
        self.e.on_message = self._echo
        self.done = threading.Event()
        self.chunks: list[tuple[float, str]] = []
        self.final: dict[str, Any] = {}
        self.echo_at: float | None = None
        self._subscribe(self.c, [self.reply_topic, self.echo_out])
        self._subscribe(self.e, [self.echo_in])

    def _echo(self, c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        c.publish(self.echo_out, msg.payload, qos=1)

    @staticmethod
    def _client(client_id: str, port: int) -> paho.Client:
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        c.on_socket_open = _nodelay
        c.connect("127.0.0.1", port, clean_start=True)
        c.loop_start()
        return c

    @staticmethod
    def _subscribe(c: paho.Client, topics: list[str]) -> None:
        acked = threading.Event()
        c.on_subscribe = lambda *a: acked.set()
        c.subscribe([(t, 1) for t in topics])
        if not acked.wait(10):
            raise RuntimeError("no SUBACK")

    def _on_message(self, c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        if msg.topic == self.echo_out:
            self.echo_at = now
            self.done.set()
            return
        body = json.loads(msg.payload)
        if body["type"] == "chunk":
            self.chunks.append((now, body["text"]))
        else:
            self.final = body
            self.done.set()

    def ask(self, device_id: str, text: str, max_tokens: int) -> dict[str, Any]:
        self.chunks = []
        self.final = {}
        self.done.clear()
        props = props_for(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        body = {
            "id": f"bench-{uuid.uuid4().hex[:10]}",
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": True,
            "route": "cloud",
        }
        payload = json.dumps(body).encode()
        t0 = time.perf_counter()
        self.c.publish(f"edged/{device_id}/request", payload, qos=1, properties=props)
        if not self.done.wait(60):
            raise RuntimeError("edged did not answer")
        if self.final.get("type") != "result" or not self.chunks:
            raise RuntimeError(f"edged failed: {self.final}")
        if self.final["route"] != {"backend": "cloud", "reasons": ["hint"]}:
            raise RuntimeError(f"not served by the cloud: {self.final['route']}")
        return {
            "ttft_ms": (self.chunks[0][0] - t0) * 1000,
            "first_chunk": self.chunks[0][1],
            "text": self.final["text"],
            "daemon_ttft_ms": float(self.final["timing_ms"]["ttft"]),
        }

    def echo(self, size: int) -> float:
        """One QoS 1 publish -> broker -> echo client -> broker -> here, in ms."""
        self.echo_at = None
        self.done.clear()
        t0 = time.perf_counter()
        self.c.publish(self.echo_in, b"x" * size, qos=1)
        if not self.done.wait(10) or self.echo_at is None:
            raise RuntimeError("no echo")
        return (self.echo_at - t0) * 1000

    def close(self) -> None:
        for c in (self.c, self.e):
            c.disconnect()
            c.loop_stop()


class Direct:
    """The openai SDK against the server, streamed (the same settings edged's cloud backend
    sends), through the same proxy URL edged uses."""

    def __init__(self, base_url: str, flush_url: str) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
        self.flusher = OpenAI(base_url=flush_url, api_key="not-needed", max_retries=0)

    def ask(self, text: str, max_tokens: int) -> dict[str, Any]:
        deltas: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        stream = self.client.chat.completions.create(
            model="default",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                for c in chunk.choices or ():
                    if c.index == 0 and c.delta.content:
                        deltas.append((time.perf_counter(), c.delta.content))
        if not deltas:
            raise RuntimeError("the server sent no text")
        return {
            "ttft_ms": (deltas[0][0] - t0) * 1000,
            "delta_ms": [(t - t0) * 1000 for t, _ in deltas],
            "deltas": [d for _, d in deltas],
            "text": "".join(d for _, d in deltas),
        }

    def flush(self, i: int) -> None:
        """An untimed request with another prompt, straight to the server: the next request
        finds only the chat-template prefix in the KV cache, whichever path sends it."""
        self.flusher.chat.completions.create(
            model="default",
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Zebras, flush {i}."},
            ],
            max_tokens=1,
            temperature=0.0,
        )

    def close(self) -> None:
        self.client.close()
        self.flusher.close()


def prompt_for(i: int) -> str:
    return f"Write a short story about {TOPICS[i % len(TOPICS)]}. Story {i}."


def held_deltas(first_chunk: str, deltas: Sequence[str]) -> int:
    """How many of the server's deltas it takes to cover ``first_chunk``."""
    got = 0
    k = 0
    while k < len(deltas) and got < len(first_chunk):
        got += len(deltas[k])
        k += 1
    return max(k, 1)


def compare(paths: Sequence[dict[str, Any]], sdk: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What one edged path adds over the direct call, per round: at the first chunk, and
    at the direct call's delta that completes the same text (guardian hold-back aside)."""
    diff = [e["ttft_ms"] - d["ttft_ms"] for e, d in zip(paths, sdk, strict=True)]
    held = [held_deltas(e["first_chunk"], d["deltas"]) for e, d in zip(paths, sdk, strict=True)]
    same = [e["ttft_ms"] - d["delta_ms"][k - 1] for e, d, k in zip(paths, sdk, held, strict=True)]
    return {
        "ttft_ms": summary([e["ttft_ms"] for e in paths]),
        "daemon_ttft_ms_p50": pct([e["daemon_ttft_ms"] for e in paths], 50),
        "added_ms": summary(diff),
        "added_same_text_ms": summary(same),
        "deltas_in_first_chunk": {str(k): held.count(k) for k in sorted(set(held))},
        "texts_same": sum(e["text"] == d["text"] for e, d in zip(paths, sdk, strict=True)),
        "_diff": diff,
    }


def bench_cloud(rounds: int, max_tokens: int, echoes: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="edged-bench-router-"))
    broker = Broker(tmp / "mosquitto")
    server = CloudServer(DEFAULT_MODEL_FILE, tmp)
    cloud_env = {
        "EDGED_CLOUD__ENABLED": "true",
        "EDGED_CLOUD__BASE_URL": server.base_url,
        "EDGED_LOG__LEVEL": "warning",
    }
    # (a) the daemon as configured (configs/edged.toml: the default guardian pack, whose
    # output PII rule holds streamed text back); (c) the same without guardian packs
    daemons = {
        name: Daemon(broker.port, f"bench{uuid.uuid4().hex[:6]}", tmp / f"edged-{name}.log",
                     extra_env={**cloud_env, **env})
        for name, env in (("edged", {}), ("edged_noguard", {"EDGED_GUARDIAN__PACKS": "[]"}))
    }  # fmt: skip
    res: dict[str, list[dict[str, Any]]] = {"edged": [], "edged_noguard": [], "direct": []}
    echo_ms: list[float] = []
    example: dict[str, Any] = {}
    cleanup: list[Callable[[], object]] = []
    try:
        cleanup.append(broker.stop)
        broker.start()
        cleanup.append(server.stop)
        server.start()
        for d in daemons.values():
            cleanup.append(d.stop)
            d.start()
        mqtt = MqttBench(broker.port)
        cleanup.append(mqtt.close)
        direct = Direct(server.base_url, server.direct_url)
        cleanup.append(direct.close)
        payload_size = len(
            json.dumps({"id": "bench-0123456789", "messages": [
                {"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt_for(0)}],
                "max_tokens": 16, "temperature": 0.0, "stream": True, "route": "cloud"})
        )  # fmt: skip
        fns: dict[str, Callable[[str, int], dict[str, Any]]] = {
            name: functools.partial(mqtt.ask, d.device_id) for name, d in daemons.items()
        }
        fns["direct"] = direct.ask
        orders = list(itertools.permutations(fns))
        # warm-up: connections opened and kept alive on every path, first-call costs paid
        for i in range(2):
            for fn in fns.values():
                direct.flush(-1 - i)
                fn(prompt_for(100 + i), max_tokens)
            mqtt.echo(payload_size)
        for r in range(rounds):
            p = prompt_for(r)
            for name in orders[r % len(orders)]:
                direct.flush(r)
                res[name].append(fns[name](p, max_tokens))
            echo_ms.append(float(np.median([mqtt.echo(payload_size) for _ in range(echoes)])))
        example = {
            "direct_deltas": res["direct"][0]["deltas"][:3],
            "edged_first_chunk": res["edged"][0]["first_chunk"],
            "edged_noguard_first_chunk": res["edged_noguard"][0]["first_chunk"],
        }
    finally:
        for stop in reversed(cleanup):
            try:
                stop()
            except Exception as e:
                print(f"cleanup: {stop!r} failed: {e!r}", file=sys.stderr)
    warnings = sum(
        "level=warning" in ln or "level=error" in ln
        for d in daemons.values()
        for ln in d.logs().splitlines()
    )
    sdk = res["direct"]
    out: dict[str, Any] = {
        "rounds": rounds,
        "max_tokens": max_tokens,
        "direct_ttft_ms": summary([d["ttft_ms"] for d in sdk]),
        "direct_second_delta_ms_p50": pct(
            [d["delta_ms"][1] for d in sdk if len(d["deltas"]) > 1], 50
        ),
        "mqtt_echo_ms": summary(echo_ms),
        "echo_payload_bytes": payload_size,
        "daemon_warnings": warnings,
        "example": example,
    }
    for name in ("edged", "edged_noguard"):
        cmp = compare(res[name], sdk)
        diff = cmp.pop("_diff")
        cmp["added_minus_echo_ms_p50"] = pct(
            [a - m for a, m in zip(diff, echo_ms, strict=True)], 50
        )
        out[name] = cmp
    guard = [
        a["ttft_ms"] - b["ttft_ms"] for a, b in zip(res["edged"], res["edged_noguard"], strict=True)
    ]
    out["guardian_adds_ms"] = summary(guard)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer decisions, prompts and rounds")
    ap.add_argument("--rounds", type=int, default=None, help="cloud rounds (default 60)")
    args = ap.parse_args()
    quick = bool(args.quick)
    n_decide = 20_000 if quick else 50_000
    n_prompts = 60 if quick else 200
    sem_rounds = 1 if quick else 2
    rounds = args.rounds or (6 if quick else 60)
    started = time.perf_counter()
    figures: dict[str, Any] = {"quick": quick, "date": time.strftime("%Y-%m-%d"), "seed": SEED}

    # 1 -----------------------------------------------------------------------------------------
    d = asyncio.run(bench_decide(n_decide))
    figures["decide"] = d
    us = d["us"]
    print(
        f"1. decisions without the embedding: {d['decisions']} seeded random device states and "
        f"requests over the presets {', '.join(d['policies'])}, one call at a time (us)"
    )
    print(f"{'':34} {'p50':>8} {'p99':>8} {'max':>9}")
    rows = [
        ("decide()", "decide"),
        ("Router.route() (snapshot+decide)", "route"),
        ("floor: empty sync call", "noop"),
        ("floor: empty async def, awaited", "empty"),
    ]
    for label, key in rows:
        print(f"{label:34} {us[key]['p50']:8.2f} {us[key]['p99']:8.2f} {us[key]['max']:9.1f}")
    for label, key in (("decide()", "decide"), ("Router.route()", "route")):
        p99 = us[key]["p99"]
        verdict = "met" if p99 <= DECIDE_GOAL_US else f"MISSED, {p99 / DECIDE_GOAL_US:.1f}x"
        print(
            f"{label} p99 {p99:.2f} us: goal <= {DECIDE_GOAL_US:.0f} us {verdict} "
            f"({DECIDE_GOAL_US / p99:.0f}x under it); LiteLLM's router adds 3-4 ms (the issue's "
            f"figure, not measured here)"
        )
    print(
        f"Router.route() / empty await: {d['ratio_route_empty_p50']:.1f}x at p50, "
        f"{d['ratio_route_empty_p99']:.1f}x at p99; above the floor, p50 "
        f"{d['route_minus_empty_us_p50']:.2f} us"
    )
    print(
        f"outcomes: {d['distinct_outcomes']} distinct, cloud {d['cloud_share']:.0%}, "
        f"errors (unavailable / timeout) {d['errors']}; most common: "
        + ", ".join(f"{k} {v}" for k, v in list(d["top_outcomes"].items())[:5])
    )

    # 2 -----------------------------------------------------------------------------------------
    prompts = semantic_prompts(load_benign(), n_prompts)
    s = asyncio.run(bench_semantic(prompts, sem_rounds))
    figures["semantic"] = s
    ms = s["ms"]
    print(
        f"\n2. with semantic routes (2 routes x 3 examples, MiniLM int8, 1 thread): "
        f"{s['prompts']} chat turns of 8-20 words (mean {s['words_mean']:.1f}) x "
        f"{s['rounds']} rounds (ms)"
    )
    print(f"{'':34} {'p50':>8} {'p99':>8} {'max':>9}")
    for label, key in (("Router.route()", "route"), ("baseline: embed([text]) alone", "embed")):
        print(f"{label:34} {ms[key]['p50']:8.2f} {ms[key]['p99']:8.2f} {ms[key]['max']:9.2f}")
    print(
        f"route / embed: {s['ratio_route_embed_p50']:.3f} at p50, "
        f"{s['ratio_route_embed_p99']:.3f} at p99; route - embed per prompt, p50 "
        f"{s['route_minus_embed_ms_p50'] * 1000:.0f} us; semantic reasons on the first round: "
        f"{s['semantic_hits'] or 'none'} (checks: "
        + "; ".join(f"{t!r} -> {v}" for t, v in s["checks"].items())
        + ")"
    )

    # 3 -----------------------------------------------------------------------------------------
    c = bench_cloud(rounds, 16, echoes=3)
    figures["cloud"] = c
    e, g = c["edged"], c["edged_noguard"]
    print(
        f"\n3. the cloud path end to end: {c['rounds']} rounds, max_tokens {c['max_tokens']}, "
        f"temperature 0, streamed; llama_cpp.server ({DEFAULT_MODEL_FILE.name}, 1 thread) "
        f"behind the recording proxy; the three paths in rotating order (ms)"
    )
    print(f"{'':54} {'p50':>7} {'min':>7} {'max':>7}")
    crow = [
        ("(a) edged over MQTT, publish -> first chunk", e["ttft_ms"]),
        ("(b) openai SDK direct, call -> first content delta", c["direct_ttft_ms"]),
        ("(c) edged without guardian packs, -> first chunk", g["ttft_ms"]),
        ("edged adds, per round (a - b)", e["added_ms"]),
        ("edged adds, same text (a - b when b had that text)", e["added_same_text_ms"]),
        ("edged without guardian adds, per round (c - b)", g["added_ms"]),
        ("the guardian adds, per round (a - c)", c["guardian_adds_ms"]),
        ("MQTT hops alone: QoS 1 publish/echo, per round", c["mqtt_echo_ms"]),
    ]
    for label, row in crow:
        print(f"{label:54} {row['p50']:7.2f} {row['min']:7.2f} {row['max']:7.2f}")
    for label, x in (("edged", e), ("edged without guardian packs", g)):
        added = x["added_ms"]["p50"]
        verdict = "met" if added <= CLOUD_GOAL_MS else f"MISSED, {added / CLOUD_GOAL_MS:.1f}x"
        print(
            f"{label} adds over the direct call, p50 {added:.2f} ms: goal <= "
            f"{CLOUD_GOAL_MS:.0f} ms {verdict}; minus the MQTT echo, p50 "
            f"{x['added_minus_echo_ms_p50']:.2f} ms"
        )
    ex = c["example"]
    print(
        f"server deltas in the first chunk: edged {e['deltas_in_first_chunk']}, without guardian "
        f"{g['deltas_in_first_chunk']} (round 0: server {ex['direct_deltas']}, edged "
        f"{ex['edged_first_chunk']!r}, without guardian {ex['edged_noguard_first_chunk']!r}); "
        f"direct, second delta p50 {c['direct_second_delta_ms_p50']:.2f} ms"
    )
    print(
        f"in the daemon (received -> first text, cloud included) p50: {e['daemon_ttft_ms_p50']:.2f}"
        f" / {g['daemon_ttft_ms_p50']:.2f} ms; same text as direct in {e['texts_same']} / "
        f"{g['texts_same']} of {c['rounds']} rounds; daemon warnings logged: "
        f"{c['daemon_warnings']}"
    )
    figures["elapsed_s"] = time.perf_counter() - started
    print(f"\nelapsed {figures['elapsed_s']:.0f} s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
