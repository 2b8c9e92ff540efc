"""Soak: edged under a steady mixed load (``--rate`` requests a second, cloud/local/auto) for
minutes, watched for lost or duplicated replies, telemetry gaps, memory growth and CPU; exit 1
when a reply was lost or duplicated or the daemon died. Method: docs/benchmarks.md.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 1.0] [--max-in-flight 8]
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import queue
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import _harness as h

ROUTES = ("cloud", "local", "auto")
ASKS = ("Write a short story about", "Describe in a few sentences", "Give me three facts about")
REPLY = "reply/soak"
#: (arrival, body) in order: replies by request id, the rest by topic ("telemetry", "request")
Got = dict[str, list[tuple[float, dict[str, Any]]]]


def pump(c: h.Client, got: Got, pending: set[str], wait_s: float) -> None:
    """File what arrives within ``wait_s``; a final reply takes its id off ``pending``."""
    with contextlib.suppress(queue.Empty):
        m = c.get(timeout_s=max(0.001, wait_s))
        while True:
            body = m.json()
            key = str(body.get("id")) if m.topic == REPLY else m.topic.rsplit("/", 1)[1]
            got.setdefault(key, []).append((m.at_s, body))
            if m.topic == REPLY and body.get("type") != "chunk":
                pending.discard(key)
            m = c.inbox.get_nowait()


def sample(pid: int, t: float) -> dict[str, Any]:
    """VmRSS (MB) and CPU (s, reaped children included) of the daemon and its children."""
    rss, cpu = 0.0, h.cpu_s(pid, reaped=True)
    for k in h.descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):  # it just ended
            rss, cpu = rss + h.proc_mb(k)["VmRSS"], cpu + h.cpu_s(k) + h.cpu_s(k, reaped=True)
    own, own_cpu = h.proc_mb(pid)["VmRSS"], h.cpu_s(pid)
    cpu_s = {"daemon": own_cpu, "children": cpu, "total": own_cpu + cpu}
    return {"t": t, "rss": {"daemon": own, "children": rss, "total": own + rss}, "cpu": cpu_s}


def prompt(i: int, rid: str) -> str:
    return f"{ASKS[i % len(ASKS)]} {h.TOPICS[i % len(h.TOPICS)]} ({rid})"


def run(args: Any) -> dict[str, Any]:
    rng = random.Random(h.SEED)
    got: Got = {}
    sent: dict[str, tuple[str, float]] = {}  # id: (route asked for, perf_counter at the publish)
    pending: set[str] = set()
    skipped = k = 0
    env = {"EDGED_TELEMETRY__INTERVAL_S": "1.0"}
    env |= {"EDGED_LOCAL__ISOLATION": args.isolation} if args.isolation else {}
    with h.Stack("soak", cloud=True) as stack, h.Client(stack.broker.port) as c:
        d = stack.daemon(env, name="soak")
        dev, pid, to = d.device_id, d.proc.pid, f"edged/{d.device_id}/request"
        c.subscribe(REPLY, f"edged/{dev}/telemetry", f"edged/{dev}/events/request")
        for i, route in enumerate(("local", "cloud")):  # warm-up, untimed
            body = {"id": f"warmup-{route}", "prompt": prompt(i, f"warmup-{route}")}
            final = h.ask(c, dev, body | {"max_tokens": 16, "route": route}, REPLY, 60)["final"]
            if final.get("type") != "result" or final["route"]["backend"] != route:
                raise RuntimeError(f"warm-up {route}: {final}")
        load_avg = os.getloadavg()[0]
        start = time.perf_counter()
        samples, next_rss = [sample(pid, 0.0)], start + args.rss_every_s
        while k < math.floor(args.minutes * 60 * args.rate) and d.proc.poll() is None:
            now = time.perf_counter()
            if now >= next_rss:
                samples.append(sample(pid, now - start))
                next_rss += args.rss_every_s
            if now < start + k / args.rate:
                pump(c, got, pending, min(start + k / args.rate, next_rss) - now)
                continue
            if len(pending) >= args.max_in_flight:
                skipped += 1
            else:
                rid, route, n = f"soak-{k:06d}", rng.choice(ROUTES), rng.randint(16, 48)
                body = {"id": rid, "prompt": prompt(len(sent) + 2, rid), "max_tokens": n}
                body |= {} if route == "auto" else {"route": route}
                sent[rid] = (route, time.perf_counter())
                pending.add(rid)
                c.publish(to, json.dumps(body), response_topic=REPLY, wait=False)
            k += 1
        load_end = time.perf_counter()
        while pending and time.perf_counter() < load_end + args.grace_s:
            pump(c, got, pending, 0.2)
        drained = time.perf_counter()
        while time.perf_counter() < drained + args.settle_s:  # late duplicates, telemetry
            pump(c, got, pending, 0.2)
        end = time.perf_counter()
        died = d.proc.poll()
        if died is None:
            samples.append(sample(pid, end - start))
        rc = h.stop_daemon(d)
        log = [ln for ln in d.logs().splitlines() if "level=warning" in ln or "level=error" in ln]
    f = {"load_avg_start": load_avg, "sent": len(sent), "skipped_at_cap": skipped}
    f |= {"drain_s": round(drained - load_end, 2), "daemon_exited_during_run": died}
    f |= {"daemon_exit_code": rc, "daemon_warnings": len(log), "daemon_warning_samples": log[:5]}
    f |= replies(sent, got) | {"telemetry": telemetry(got.get("telemetry", []), start, end)}
    return f | memory(samples, load_end - start)


def replies(sent: dict[str, tuple[str, float]], got: Got) -> dict[str, Any]:
    """Each request's chunks and final(s) against what it asked for; its request events."""
    errors, served = Counter[str](), {r: Counter[str]() for r in ROUTES}
    ms: dict[str, dict[str, list[float]]] = {x: {r: [] for r in ROUTES} for x in ("ttft", "total")}
    lost, want, bad, dup, after = [], set(), 0, 0, 0
    for rid, (asked, t0) in sent.items():
        cs = [(at, b) for at, b in got.get(rid, []) if b.get("type") == "chunk"]
        finals = [(at, b) for at, b in got.get(rid, []) if b.get("type") != "chunk"]
        if not finals:
            lost.append(rid)
            continue
        final_at, final = finals[0]
        dup += len(finals) > 1
        after += sum(at > final_at for at, _ in cs)
        if final.get("code") not in ("busy", "bad_request"):
            want.add(rid)  # it reached the pipeline: one request event expected
        if final.get("type") != "result":
            errors[str(final.get("code"))] += 1
            continue
        route = final.get("route") or {}
        served[asked][f"{route.get('backend')}:{','.join(route.get('reasons', []))}"] += 1
        ms["total"][asked].append((final_at - t0) * 1000)
        if cs:
            ms["ttft"][asked].append((cs[0][0] - t0) * 1000)
        seq = [(int(b.get("seq", -1)), str(b.get("text", ""))) for _, b in cs]
        in_order = [s for s, _ in seq] == list(range(len(seq)))
        bad += not in_order or "".join(t for _, t in sorted(seq)) != final.get("text")
    ev = Counter(r for r in (str(b.get("id")) for _, b in got.get("request", [])) if r in sent)
    known = {*sent, "telemetry", "request", "warmup-local", "warmup-cloud"}
    unknown = Counter(str(b.get("type")) for k, xs in got.items() if k not in known for _, b in xs)
    events = {"received": sum(ev.values()), "expected": len(want), "missing": len(want - set(ev))}
    events["duplicated"] = sum(n > 1 for n in ev.values())
    f = {"results": {r: sum(v.values()) for r, v in served.items() if v}, "errors": dict(errors)}
    f["served"] = {k: dict(v) for k, v in served.items()}
    f |= {f"{x}_ms": {r: h.summary(v[r], 1) for r in ROUTES} for x, v in ms.items()}
    f |= {"lost": len(lost), "lost_ids": lost[:20], "duplicated_finals": dup}
    f |= {"chunks_after_final": after, "chunk_sequence_or_text_mismatch": bad}
    return f | {"replies_for_unknown_ids": dict(unknown), "events": events}


def telemetry(got: list[tuple[float, dict[str, Any]]], start: float, end: float) -> Any:
    """Records in the load and settle window against one a second; gaps between them."""
    window = [(t, b) for t, b in got if start <= t <= end]
    gaps = [(a - start, b - a) for (a, _), (b, _) in itertools.pairwise(window)]
    stamps = [float(b.get("ts_unix_s", math.nan)) for _, b in window]
    period = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    f: dict[str, Any] = {"received": len(window), "expected": round(end - start, 1)}
    f["gaps_over_2s"] = [{"at_s": round(a, 1), "gap_s": round(g, 2)} for a, g in gaps if g > 2]
    f["max_gap_s"] = round(max((g for _, g in gaps), default=0), 3)
    f["mean_period_ts_unix_s"] = None if period is None else round(period, 4)
    return f | {"historical": sum(bool(b.get("historical")) for _, b in window)}


def slope_per_h(points: list[tuple[float, float]]) -> float | None:
    """Least squares slope of (seconds, MB), in MB per hour."""
    if len(points) < 3 or points[-1][0] <= points[0][0]:
        return None
    t, y = np.asarray(points).T
    return round(float(np.polyfit(t, y, 1)[0]) * 3600, 2)


def memory(samples: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    """VmRSS with growth per hour (after the warm-up, over the second half), and CPU."""
    warm, half = min(60.0, load_s / 3), load_s / 2
    rss: dict[str, Any] = {"samples": len(samples), "warmup_s": round(warm, 1)}
    for who in samples[0]["rss"]:  # daemon, children, total
        vm = [(x["t"], x["rss"][who]) for x in samples]
        rss[who] = {"first": round(vm[0][1], 1), "last": round(vm[-1][1], 1)}
        rss[who]["growth_mb_per_h_after_warmup"] = slope_per_h([p for p in vm if p[0] >= warm])
        rss[who]["growth_mb_per_h_second_half"] = slope_per_h([p for p in vm if p[0] >= half])
        rss[who]["series"] = [[round(t, 1), round(v, 1)] for t, v in vm]
    span, a, b = samples[-1]["t"] - samples[0]["t"], samples[0]["cpu"], samples[-1]["cpu"]
    cpu = {w: round((b[w] - a[w]) / span * 100, 2) if span > 0 else None for w in a}
    return {"rss_mb": rss, "cpu_pct_of_one_core": cpu}


def main() -> int:
    ap = h.parser(__doc__, "soak")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1.0, help="requests per second")
    ap.add_argument("--max-in-flight", type=int, default=8)
    ap.add_argument("--grace-s", type=float, default=60.0, help="wait for replies after the load")
    ap.add_argument("--settle-s", type=float, default=5.0, help="then linger for duplicates")
    ap.add_argument("--rss-every-s", type=float, default=10.0)
    ap.add_argument("--isolation", choices=("process", "thread"), help="[local] isolation")
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
