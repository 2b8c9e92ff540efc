"""Soak: edged under a steady mixed load for minutes, watched for lost or duplicated replies,
telemetry gaps, memory growth and CPU.

Its own Mosquitto, the test cloud (llama.cpp's server, 1 thread, behind the recording proxy)
and the daemon with the default configuration, the cloud enabled and telemetry every second.
After an untimed local and cloud request it publishes ``--rate`` requests a second on a fixed
schedule without waiting (route drawn, seeded, from cloud/local/auto; ``max_tokens`` 16-48),
at most ``--max-in-flight`` outstanding (a slot at the cap is skipped and counted). Replies,
telemetry and request events are timed as they arrive. Then up to ``--grace-s`` for the
outstanding replies, ``--settle-s`` for late duplicates. Figures: first chunk and final per
route (p50/p90/p99/max), LOST and DUPLICATED (both expected 0), chunk order, request events,
telemetry against one a second, VmRSS of the daemon and its children every ``--rss-every-s``
with growth per hour, CPU, log warnings. Exit 1 when a reply was lost or duplicated.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 1.0] [--max-in-flight 8]
"""

from __future__ import annotations

import itertools
import json
import math
import os
import queue
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import _harness as h

ROUTES = ("cloud", "local", "auto")
ASKS = ("Write a short story about", "Describe in a few sentences", "Give me three facts about")


@dataclass
class Req:
    route: str
    t0: float
    first: float | None = None
    final_at: float | None = None
    final: dict[str, Any] | None = None
    finals: int = 0
    chunks: list[tuple[int, str]] = field(default_factory=list)
    chunks_after_final: int = 0


@dataclass
class Seen:
    """Everything the client received, by topic."""

    reqs: dict[str, Req] = field(default_factory=dict)
    telemetry: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    unknown: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0

    def take(self, c: h.Client, wait_s: float) -> None:
        """Handle what arrives within ``wait_s`` (at least one message if any comes)."""
        try:
            m = c.get(timeout_s=max(0.001, wait_s))
        except queue.Empty:
            return
        while True:
            body = m.json()
            if m.topic.endswith("/telemetry"):
                self.telemetry.append((m.at_s, body))
            elif m.topic.endswith("/events/request"):
                self.events.append(body)
            elif (r := self.reqs.get(str(body.get("id")))) is None:
                self.unknown[str(body.get("type"))] += 1
            elif body.get("type") == "chunk":
                r.chunks_after_final += bool(r.finals)
                r.first = r.first or m.at_s
                r.chunks.append((int(body.get("seq", -1)), str(body.get("text", ""))))
            else:
                r.finals += 1
                if r.finals == 1:
                    r.final_at, r.final = m.at_s, body
                    self.in_flight -= 1
            try:
                m = c.inbox.get_nowait()
            except queue.Empty:
                return

    def send(self, c: h.Client, dev: str, rid: str, route: str, n: int) -> None:
        p = f"{ASKS[len(self.reqs) % len(ASKS)]} {h.TOPICS[len(self.reqs) % len(h.TOPICS)]} ({rid})"
        body: dict[str, Any] = {"id": rid, "prompt": p, "max_tokens": n}
        if route != "auto":
            body["route"] = route
        self.reqs[rid] = Req(route, time.perf_counter())
        self.in_flight += 1
        c.publish(f"edged/{dev}/request", json.dumps(body), response_topic="reply/soak", wait=False)


def slope_per_h(points: list[tuple[float, float]]) -> float | None:
    """Least squares slope of (seconds, MB), in MB per hour."""
    if len(points) < 3 or points[-1][0] <= points[0][0]:
        return None
    t, y = np.asarray(points).T
    return round(float(np.polyfit(t, y, 1)[0]) * 3600, 2)


def sample(pid: int, t: float) -> dict[str, Any]:
    """The daemon's and its children's memory (MB) and CPU (s; reaped children included)."""
    kids: dict[int, dict[str, float]] = {}
    cpu = h.cpu_s(pid, reaped=True)
    for k in h.descendants(pid):
        try:
            kids[k] = h.proc_mb(k)
            cpu += h.cpu_s(k) + h.cpu_s(k, reaped=True)
        except (OSError, IndexError, ValueError):
            continue  # it just ended
    return {
        "t": t,
        "daemon": h.proc_mb(pid),
        "children": kids,
        "daemon_cpu": h.cpu_s(pid),
        "children_cpu": cpu,
        "names": {k: child_name(k) for k in kids},
    }


def child_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    marks = (("resource_tracker", "resource tracker"), ("spawn_main", "model worker"))
    return next((label for mark, label in marks if mark in cmd), cmd[:40])


def run(args: Any) -> dict[str, Any]:
    rng = random.Random(h.SEED)
    seen = Seen()
    samples: list[dict[str, Any]] = []
    sent = skipped = k = 0
    env = {"EDGED_TELEMETRY__INTERVAL_S": "1.0"}
    if args.isolation:
        env["EDGED_LOCAL__ISOLATION"] = args.isolation
    with h.Stack("soak", cloud=True) as stack, h.Client(stack.broker.port) as c:
        d = stack.daemon(env, name="soak")
        assert d.proc is not None
        dev, pid = d.device_id, d.proc.pid
        c.subscribe("reply/soak", f"edged/{dev}/telemetry", f"edged/{dev}/events/request")
        for route in ("local", "cloud"):  # warm-up, untimed
            seen.send(c, dev, f"warmup-{route}", route, 16)
            deadline = time.perf_counter() + 60
            while seen.in_flight and time.perf_counter() < deadline:
                seen.take(c, 0.5)
            final = seen.reqs[f"warmup-{route}"].final or {}
            if final.get("type") != "result" or (final["route"]["backend"] != route):
                raise RuntimeError(f"warm-up {route}: {final}")
        load_avg = os.getloadavg()[0]
        start = time.perf_counter()
        n_slots = math.floor(args.minutes * 60 * args.rate)
        next_rss = start
        late_ms = 0.0
        while k < n_slots and d.proc.poll() is None:
            now = time.perf_counter()
            if now >= next_rss:
                samples.append(sample(pid, now - start))
                next_rss += args.rss_every_s
            slot = start + k / args.rate
            if now < slot:
                seen.take(c, min(slot, next_rss) - now)
                continue
            late_ms = max(late_ms, (now - slot) * 1000)
            if seen.in_flight >= args.max_in_flight:
                skipped += 1
            else:
                seen.send(c, dev, f"soak-{k:06d}", rng.choice(ROUTES), rng.randint(16, 48))
                sent += 1
            k += 1
        load_end = time.perf_counter()
        while seen.in_flight and time.perf_counter() < load_end + args.grace_s:
            seen.take(c, 0.2)
        drained = time.perf_counter()
        while time.perf_counter() < drained + args.settle_s:  # late duplicates, telemetry
            seen.take(c, 0.2)
        end = time.perf_counter()
        died = d.proc.poll()
        if died is None:
            samples.append(sample(pid, end - start))
        rc = h.stop_daemon(d)
        log = [ln for ln in d.logs().splitlines() if "level=warning" in ln or "level=error" in ln]
    reqs = {rid: r for rid, r in seen.reqs.items() if not rid.startswith("warmup")}
    f: dict[str, Any] = {
        "minutes": args.minutes,
        "rate_per_s": args.rate,
        "max_in_flight": args.max_in_flight,
        "load_avg_start": load_avg,
        "slots": k,
        "sent": sent,
        "skipped_at_cap": skipped,
        "schedule_late_ms_max": round(late_ms, 2),
        "drain_s": round(drained - load_end, 2),
        "daemon_exited_during_run": died,
        "daemon_exit_code": rc,
        "daemon_warnings": len(log),
        "daemon_warning_samples": log[:5],
    }
    f.update(replies(reqs, seen, load_end + args.grace_s))
    f["telemetry"] = telemetry(seen, start, end)
    f["rss_mb"], f["cpu_pct_of_one_core"] = memory(samples, load_end - start)
    return f


def replies(reqs: dict[str, Req], seen: Seen, grace_end: float) -> dict[str, Any]:
    kinds: dict[str, Counter[str]] = {x: Counter() for x in ("results", "errors", "finish")}
    served: dict[str, Counter[str]] = {r: Counter() for r in ROUTES}
    ttft: dict[str, list[float]] = {r: [] for r in ROUTES}
    total: dict[str, list[float]] = {r: [] for r in ROUTES}
    lost, late, bad = [], 0, 0
    for rid, r in reqs.items():
        if r.final is None or r.final_at is None:
            lost.append(rid)
            continue
        late += r.final_at > grace_end
        if r.final.get("type") != "result":
            kinds["errors"][str(r.final.get("code"))] += 1
            continue
        kinds["results"][r.route] += 1
        kinds["finish"][str(r.final.get("finish_reason"))] += 1
        route = r.final.get("route") or {}
        served[r.route][f"{route.get('backend')}:{','.join(route.get('reasons', []))}"] += 1
        total[r.route].append((r.final_at - r.t0) * 1000)
        if r.first is not None:
            ttft[r.route].append((r.first - r.t0) * 1000)
        seqs = [s for s, _ in r.chunks]
        bad += seqs != list(range(len(seqs))) or "".join(t for _, t in sorted(r.chunks)) != (
            r.final.get("text")
        )
    # request events: one per request that reached the pipeline (not busy or invalid ones)
    ev = Counter(str(e.get("id")) for e in seen.events if str(e.get("id")) in reqs)
    want = {
        rid
        for rid, r in reqs.items()
        if r.final is not None
        and (r.final.get("type") == "result" or r.final.get("code") not in ("busy", "bad_request"))
    }
    return {
        **{k: dict(v) for k, v in kinds.items()},
        "served": {k: dict(v) for k, v in served.items()},
        "ttft_ms": {r: h.summary(ttft[r], 1) for r in ROUTES},
        "total_ms": {r: h.summary(total[r], 1) for r in ROUTES},
        "lost": len(lost),
        "lost_ids": lost[:20],
        "final_after_grace": late,
        "duplicated_finals": sum(r.finals > 1 for r in reqs.values()),
        "chunks_after_final": sum(r.chunks_after_final for r in reqs.values()),
        "chunk_sequence_or_text_mismatch": bad,
        "replies_for_unknown_ids": dict(seen.unknown),
        "events": {
            "received": sum(ev.values()),
            "expected": len(want),
            "missing": len(want - set(ev)),
            "duplicated": sum(n > 1 for n in ev.values()),
            "outcomes": dict(
                Counter(str(e.get("outcome")) for e in seen.events if str(e.get("id")) in reqs)
            ),
        },
    }


def telemetry(seen: Seen, start: float, end: float) -> dict[str, Any]:
    window = [(t, b) for t, b in seen.telemetry if start <= t <= end]
    gaps = [(a - start, b - a) for (a, _), (b, _) in itertools.pairwise(window)]
    stamps = [float(b.get("ts_unix_s", math.nan)) for _, b in window]
    last = window[-1][1] if window else {}
    return {
        "window_s": round(end - start, 1),
        "received": len(window),
        "expected": round(end - start, 1),
        "ratio": round(len(window) / (end - start), 4),
        "gaps_over_2s": [{"at_s": round(a, 1), "gap_s": round(g, 2)} for a, g in gaps if g > 2],
        "max_gap_s": round(max((g for _, g in gaps), default=0), 3),
        "mean_period_ts_unix_s": round((stamps[-1] - stamps[0]) / (len(stamps) - 1), 4)
        if len(stamps) > 1
        else None,
        "historical": sum(bool(b.get("historical")) for _, b in window),
        "last": {k: last.get(k) for k in ("requests", "errors", "ingress", "routes", "cloud")},
    }


def memory(samples: list[dict[str, Any]], load_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """VmRSS series and growth per hour (all, after the first minute, second half), and CPU."""
    warm, half = min(60.0, load_s / 3), load_s / 2

    def get(x: dict[str, Any], who: str, key: str) -> float:
        kids = sum(c.get(key, 0.0) for c in x["children"].values())
        own = x["daemon"].get(key, math.nan)
        return {"daemon": own, "children": kids, "total": own + kids}[who]

    out: dict[str, Any] = {"samples": len(samples), "warmup_s": round(warm, 1)}
    for who in ("daemon", "children", "total"):
        vm = [(x["t"], get(x, who, "VmRSS")) for x in samples]
        anon = [(x["t"], get(x, who, "RssAnon")) for x in samples]
        out[who] = (
            {
                "first": round(vm[0][1], 1),
                "max": round(max(v for _, v in vm), 1),
                "last": round(vm[-1][1], 1),
                "anon_first": round(anon[0][1], 1),
                "anon_last": round(anon[-1][1], 1),
                "file_last": round(get(samples[-1], who, "RssFile"), 1),
                "growth_mb_per_h_all": slope_per_h(vm),
                "growth_mb_per_h_after_warmup": slope_per_h([p for p in vm if p[0] >= warm]),
                "anon_growth_mb_per_h_after_warmup": slope_per_h([p for p in anon if p[0] >= warm]),
                "growth_mb_per_h_second_half": slope_per_h([p for p in vm if p[0] >= half]),
                "series": [[round(t, 1), round(v, 1)] for t, v in vm],
            }
            if vm
            else {}
        )
    kids = sorted({(k, x["names"][k]) for x in samples for k in x["children"]})
    out["per_process"] = {
        f"{k} {name}": [round(x["children"][k]["VmRSS"], 1) for x in samples if k in x["children"]][
            :: max(1, len(samples) - 1)
        ]
        for k, name in kids
    }
    span = samples[-1]["t"] - samples[0]["t"] if len(samples) > 1 else 0
    cpu = {"daemon": None, "children": None, "total": None}
    if span > 0:
        dc = samples[-1]["daemon_cpu"] - samples[0]["daemon_cpu"]
        cc = samples[-1]["children_cpu"] - samples[0]["children_cpu"]
        cpu = {
            "daemon": round(dc / span * 100, 2),
            "children": round(cc / span * 100, 2),
            "total": round((dc + cc) / span * 100, 2),
        }
    return out, cpu


def main() -> int:
    ap = h.parser(__doc__, "soak")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1.0, help="requests per second")
    ap.add_argument("--max-in-flight", type=int, default=8)
    ap.add_argument("--grace-s", type=float, default=60.0, help="wait for replies after the load")
    ap.add_argument("--settle-s", type=float, default=5.0, help="then linger for duplicates")
    ap.add_argument("--rss-every-s", type=float, default=10.0)
    ap.add_argument(
        "--isolation",
        choices=("process", "thread"),
        default=None,
        help="[local] isolation for the daemon (default: the configured one)",
    )
    args = ap.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.max_in_flight < 1:
        ap.error("--minutes and --rate must be positive, --max-in-flight at least 1")
    started = time.perf_counter()
    f = run(args)
    print(f"sent {f['sent']}: LOST {f['lost']}, DUPLICATED {f['duplicated_finals']} (expect 0)")
    gaps, m = len(f["telemetry"]["gaps_over_2s"]), f["rss_mb"]["daemon"]
    print(f"telemetry gaps > 2 s: {gaps}; daemon VmRSS {m['first']} -> {m['last']} MB")
    h.write(args, f, model=h.DEFAULT_MODEL_FILE, started=started)
    ok = not f["lost"] and not f["duplicated_finals"] and f["daemon_exited_during_run"] is None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
