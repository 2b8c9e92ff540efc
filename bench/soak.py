"""Soak: edged under a steady mixed load for minutes, watched for lost or duplicated replies,
telemetry gaps, memory growth and CPU.

It starts its own Mosquitto on a free loopback port, llama.cpp's OpenAI-compatible server as
the "cloud" (1 thread, behind the recording proxy of tests.helpers) and the real daemon with
the real default model and the default guardian pack, the cloud enabled and telemetry every
second. After two untimed warm-up requests (one local, one cloud) it sends ``--rate``
requests a second on a fixed schedule, without waiting for answers: a QoS 1 publish at each
slot, the route drawn (seeded) from ``"cloud"``, ``"local"`` and ``"auto"``, ``max_tokens``
from 16 to 48, a distinct id and prompt each. At most ``--max-in-flight`` requests are
outstanding; a slot that finds the cap reached is skipped and counted. One MQTT v5 client
(TCP_NODELAY) collects the replies, the telemetry and the request events, timing each
message in paho's network thread as it arrives.

When the time is up it waits up to ``--grace-s`` (60) for the outstanding replies, lingers
``--settle-s`` for late duplicates, then stops everything. It reports:

  - time to first chunk and to the final reply, from the publish, p50/p90/p99/max, per
    requested route (and which backend served them);
  - results, and errors by code; LOST requests (no final reply within the grace) and
    DUPLICATED finals (more than one final for an id), both expected 0; chunk sequences
    that are not 0, 1, 2, ... or do not join to the result's text; replies for unknown ids;
  - request events: one per pipeline request expected, missing and duplicated ones;
  - telemetry records received against expected (one per interval), and gaps over 2 s;
  - VmRSS (with RssAnon and RssFile) every ``--rss-every-s`` (10) seconds of the daemon's
    process, of its children (the model worker with ``[local] isolation = "process"``, the
    default) and of both together: first, max, last, and growth per hour (least squares
    over all samples, after the first minute, and over the second half of the load);
  - CPU (user + system) over the load, in % of one core: the daemon, its children (a child
    that died and was reaped counts too), both;
  - warnings and errors in the daemon's log.

The last line printed is JSON with every figure. Not run in CI.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 1.0] [--max-in-flight 8]
                                   [--isolation process|thread]

Exit status 1 when a reply was lost or duplicated, or the daemon exited during the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from bench.prompts import TOPICS
from edged.mqtt.link import props_for
from tests.helpers import DEFAULT_MODEL_FILE, Broker, CloudServer, Daemon

SEED = 20261125
ROUTES = ("cloud", "local", "auto")
TELEMETRY_INTERVAL_S = 1.0
TELEMETRY_GAP_S = 2.0
ASKS = [
    "Write a short story about {}.",
    "Describe {} in a few sentences.",
    "Give me three facts about {}.",
    "Write a poem about {}.",
]


def prompt_for(i: int) -> str:
    ask = ASKS[(i // len(TOPICS)) % len(ASKS)]
    return f"{ask.format(TOPICS[i % len(TOPICS)])} ({i})"


def pct(xs: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else None


def latency(xs: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(xs),
        "p50": pct(xs, 50),
        "p90": pct(xs, 90),
        "p99": pct(xs, 99),
        "max": max(xs) if xs else None,
    }


def fmt(x: float | int | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# --- the daemon's processes, from /proc ------------------------------------------------------


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime; with ``children``, cutime + cstime (children it has waited for)."""
    fields = _stat(pid)
    i = 13 if children else 11
    return (int(fields[i]) + int(fields[i + 1])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the model worker, and whatever else it started)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat(int(name))[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    todo = list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return sorted(out)


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        return " ".join(a.decode(errors="replace") for a in args if a)[:120]
    except OSError:
        return "?"


@dataclass
class TreeSample:
    """The daemon's memory and CPU, and its children's (the model worker), at one moment."""

    t: float
    daemon: dict[str, float]
    children: dict[int, dict[str, float]]
    daemon_cpu_s: float
    #: the children's CPU: the live ones' own, plus the dead ones' the daemon has reaped
    children_cpu_s: float


def sample_tree(pid: int, t: float) -> TreeSample:
    children: dict[int, dict[str, float]] = {}
    children_cpu = cpu_seconds(pid, children=True)
    for c in descendants(pid):
        try:
            children[c] = proc_status(c)
            children_cpu += cpu_seconds(c) + cpu_seconds(c, children=True)
        except (OSError, IndexError, ValueError):
            continue  # it just ended
    return TreeSample(t, proc_status(pid), children, cpu_seconds(pid), children_cpu)


def children_sum(s: TreeSample, key: str) -> float:
    return sum(c.get(key, 0.0) for c in s.children.values())


def slope_per_h(points: Sequence[tuple[float, float]]) -> float | None:
    """Least squares slope of (seconds, MB), in MB per hour."""
    if len(points) < 3:
        return None
    t = np.asarray([p[0] for p in points], dtype=np.float64)
    y = np.asarray([p[1] for p in points], dtype=np.float64)
    if float(t.max() - t.min()) <= 0:
        return None
    return float(np.polyfit(t, y, 1)[0]) * 3600


# --- the client ------------------------------------------------------------------------------


@dataclass
class Req:
    id: str
    route: str
    max_tokens: int
    t0: float
    first: float | None = None
    final_at: float | None = None
    final: dict[str, Any] | None = None
    finals: int = 0
    chunks: list[tuple[int, str]] = field(default_factory=list)
    chunks_after_final: int = 0


def _nodelay(c: paho.Client, u: Any, sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Soak:
    """One MQTT v5 client: publishes the requests, and collects replies, telemetry and request
    events, each timed in paho's network thread as it arrives."""

    def __init__(self, port: int, device_id: str) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.reply_topic = f"reply/soak-{self.tag}"
        self.request_topic = f"edged/{device_id}/request"
        self.telemetry_topic = f"edged/{device_id}/telemetry"
        self.events_topic = f"edged/{device_id}/events/request"
        self.lock = threading.Lock()
        self.reqs: dict[str, Req] = {}
        self.in_flight = 0
        self.unknown: Counter[str] = Counter()
        self.bad_payloads = 0
        self.telemetry: list[tuple[float, dict[str, Any]]] = []
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.finished = threading.Condition(self.lock)
        self.c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"soak-{self.tag}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.c.on_socket_open = _nodelay
        self.c.on_message = self._on_message
        acked = threading.Event()
        self.c.on_subscribe = lambda *a: acked.set()
        self.c.connect("127.0.0.1", port, clean_start=True)
        self.c.loop_start()
        topics = [self.reply_topic, self.telemetry_topic, self.events_topic]
        self.c.subscribe([(t, 1) for t in topics])
        if not acked.wait(10):
            raise RuntimeError("no SUBACK")

    def _on_message(self, c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        try:
            body = json.loads(msg.payload)
        except ValueError:
            with self.lock:
                self.bad_payloads += 1
            return
        with self.lock:
            if msg.topic == self.telemetry_topic:
                self.telemetry.append((now, body))
            elif msg.topic == self.events_topic:
                self.events.append((now, body))
            else:
                self._reply(now, body)

    def _reply(self, now: float, body: dict[str, Any]) -> None:
        r = self.reqs.get(str(body.get("id")))
        if r is None:
            self.unknown[str(body.get("type"))] += 1
            return
        if body.get("type") == "chunk":
            if r.finals:
                r.chunks_after_final += 1
            if r.first is None:
                r.first = now
            r.chunks.append((int(body.get("seq", -1)), str(body.get("text", ""))))
            return
        r.finals += 1
        if r.finals == 1:
            r.final_at = now
            r.final = body
            self.in_flight -= 1
            self.finished.notify_all()

    def outstanding(self) -> int:
        with self.lock:
            return self.in_flight

    def send(self, rid: str, route: str, max_tokens: int, prompt: str) -> None:
        props = props_for(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        body: dict[str, Any] = {"id": rid, "prompt": prompt, "max_tokens": max_tokens}
        if route != "auto":
            body["route"] = route
        payload = json.dumps(body).encode()
        with self.lock:
            # registered before the publish: the first chunk may arrive before publish returns
            self.reqs[rid] = Req(rid, route, max_tokens, time.perf_counter())
            self.in_flight += 1
        info = self.c.publish(self.request_topic, payload, qos=1, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")

    def ask(self, rid: str, route: str, prompt: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """One request, waiting for its final reply (the warm-up)."""
        self.send(rid, route, 16, prompt)
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while self.reqs[rid].final is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no answer to warm-up request {rid}")
                self.finished.wait(left)
            final = self.reqs[rid].final
        assert final is not None
        if final.get("type") != "result":
            raise RuntimeError(f"warm-up request {rid} failed: {final}")
        return final

    def wait_all(self, deadline: float) -> None:
        with self.lock:
            while self.in_flight > 0:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return
                self.finished.wait(left)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# --- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(SEED)
    tmp = Path(tempfile.mkdtemp(prefix="edged-bench-soak-"))
    broker = Broker(tmp / "mosquitto")
    server = CloudServer(DEFAULT_MODEL_FILE, tmp)
    daemon = Daemon(
        broker.port,
        f"soak{uuid.uuid4().hex[:6]}",
        tmp / "edged.log",
        extra_env={
            "EDGED_CLOUD__ENABLED": "true",
            "EDGED_CLOUD__BASE_URL": server.base_url,
            "EDGED_TELEMETRY__INTERVAL_S": str(TELEMETRY_INTERVAL_S),
            "EDGED_LOG__LEVEL": "warning",
            **({"EDGED_LOCAL__ISOLATION": args.isolation} if args.isolation else {}),
        },
    )
    duration_s = args.minutes * 60.0
    cleanup: list[Callable[[], object]] = []
    samples: list[TreeSample] = []
    names: dict[int, str] = {}
    skipped = 0
    sent = 0
    late_ms_max = 0.0
    daemon_died: int | None = None
    daemon_rc: int | None = None
    soak: Soak | None = None
    try:
        cleanup.append(broker.stop)
        broker.start()
        cleanup.append(server.stop)
        server.start()
        cleanup.append(daemon.stop)
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        soak = Soak(broker.port, daemon.device_id)
        cleanup.append(soak.close)
        for route in ("local", "cloud"):
            final = soak.ask(f"warmup-{soak.tag}-{route}", route, prompt_for(1000))
            if route == "cloud" and final["route"]["backend"] != "cloud":
                raise RuntimeError(f"the cloud did not serve the warm-up: {final['route']}")
        load_avg_start = os.getloadavg()

        start = time.perf_counter()
        slot_s = 1.0 / args.rate
        n_slots = math.floor(duration_s * args.rate)
        next_rss = start
        next_progress = start + 60.0
        k = 0
        while k < n_slots:
            now = time.perf_counter()
            if daemon.proc.poll() is not None:
                daemon_died = daemon.proc.returncode
                break
            if now >= next_rss:
                samples.append(sample_tree(pid, now - start))
                for c in samples[-1].children:
                    names.setdefault(c, comm(c))
                next_rss += args.rss_every_s
            if now >= next_progress:
                print(
                    f"[{(now - start) / 60:4.1f} min] sent {sent}, skipped {skipped}, "
                    f"in flight {soak.outstanding()}, VmRSS daemon "
                    f"{samples[-1].daemon['VmRSS']:.1f} MB, children "
                    f"{children_sum(samples[-1], 'VmRSS'):.1f} MB",
                    file=sys.stderr,
                    flush=True,
                )
                next_progress += 60.0
            slot_at = start + k * slot_s
            if now < slot_at:
                time.sleep(max(0.0, min(slot_at, next_rss) - now))
                continue
            late_ms_max = max(late_ms_max, (now - slot_at) * 1000)
            if soak.outstanding() >= args.max_in_flight:
                skipped += 1
            else:
                soak.send(
                    f"soak-{soak.tag}-{k:06d}",
                    rng.choice(ROUTES),
                    rng.randint(16, 48),
                    prompt_for(k),
                )
                sent += 1
            k += 1
        load_end = time.perf_counter()
        soak.wait_all(load_end + args.grace_s)
        drained = time.perf_counter()
        # late duplicates, and a few more telemetry records
        time.sleep(args.settle_s)
        end = time.perf_counter()
        if daemon.proc.poll() is None:
            samples.append(sample_tree(pid, end - start))
        else:
            daemon_died = daemon.proc.returncode
        load_avg_end = os.getloadavg()
    finally:
        for stop in reversed(cleanup):
            try:
                rc = stop()
                if stop == daemon.stop:
                    daemon_rc = int(rc) if isinstance(rc, int) else None
            except Exception as e:
                print(f"cleanup: {stop!r} failed: {e!r}", file=sys.stderr)

    assert soak is not None
    figures = analyse(
        args,
        soak,
        daemon,
        start=start,
        load_end=load_end,
        drained=drained,
        end=end,
        samples=samples,
        names=names,
        sent=sent,
        skipped=skipped,
        slots=k,
        late_ms_max=late_ms_max,
        daemon_died=daemon_died,
        daemon_rc=daemon_rc,
        load_avg=(load_avg_start, load_avg_end),
    )
    if figures["lost"] or figures["duplicated_finals"] or figures["daemon_warnings"] or daemon_died:
        figures["kept_dir"] = str(tmp)  # logs of the broker, the server and the daemon
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def analyse(
    args: argparse.Namespace,
    soak: Soak,
    daemon: Daemon,
    *,
    start: float,
    load_end: float,
    drained: float,
    end: float,
    samples: list[TreeSample],
    names: dict[int, str],
    sent: int,
    skipped: int,
    slots: int,
    late_ms_max: float,
    daemon_died: int | None,
    daemon_rc: int | None,
    load_avg: tuple[tuple[float, ...], tuple[float, ...]],
) -> dict[str, Any]:
    reqs = [r for r in soak.reqs.values() if r.t0 >= start]
    grace_end = load_end + args.grace_s

    # replies
    results: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    finish: Counter[str] = Counter()
    served: dict[str, Counter[str]] = {route: Counter() for route in ROUTES}
    ttft: dict[str, list[float]] = {route: [] for route in ROUTES}
    total: dict[str, list[float]] = {route: [] for route in ROUTES}
    lost: list[str] = []
    late: list[str] = []
    duplicated: dict[str, int] = {}
    bad_chunks: list[str] = []
    chunks_after_final = 0
    for r in reqs:
        if r.finals > 1:
            duplicated[r.id] = r.finals
        chunks_after_final += r.chunks_after_final
        if r.final is None or r.final_at is None:
            lost.append(r.id)
            continue
        if r.final_at > grace_end:
            late.append(r.id)
        body = r.final
        if body.get("type") == "result":
            results[r.route] += 1
            finish[str(body.get("finish_reason"))] += 1
            route = body.get("route") or {}
            served[r.route][f"{route.get('backend')}:{','.join(route.get('reasons', []))}"] += 1
            total[r.route].append((r.final_at - r.t0) * 1000)
            if r.first is not None:
                ttft[r.route].append((r.first - r.t0) * 1000)
            seqs = [s for s, _ in r.chunks]
            text = "".join(t for _, t in sorted(r.chunks))
            if seqs != list(range(len(seqs))) or text != body.get("text"):
                bad_chunks.append(r.id)
        else:
            errors[str(body.get("code"))] += 1

    # request events: one per request that reached the pipeline (not for busy or invalid ones)
    ours = {r.id for r in reqs}
    ev_ids: Counter[str] = Counter()
    ev_outcomes: Counter[str] = Counter()
    for _, ev in soak.events:
        eid = str(ev.get("id"))
        if eid in ours:
            ev_ids[eid] += 1
            ev_outcomes[str(ev.get("outcome"))] += 1
    want_event = {
        r.id
        for r in reqs
        if r.final is not None
        and (r.final.get("type") == "result" or r.final.get("code") not in ("busy", "bad_request"))
    }
    events_missing = sorted(want_event - set(ev_ids))
    events_duplicated = {i: n for i, n in ev_ids.items() if n > 1}

    # telemetry, over the load and the drain (from the load's start to the end of the settle)
    window = [(t, b) for t, b in soak.telemetry if start <= t <= end]
    arrivals = [t for t, _ in window]
    stamps = [float(b.get("ts_unix_s", math.nan)) for _, b in window]
    arrival_gaps = [(a - start, b - a) for a, b in itertools.pairwise(arrivals)]
    gaps = [
        {"at_s": round(at, 1), "gap_s": round(gap, 2)}
        for at, gap in arrival_gaps
        if gap > TELEMETRY_GAP_S
    ]
    stamp_gaps = [b - a for a, b in itertools.pairwise(stamps)]
    window_s = end - start
    expected = window_s / TELEMETRY_INTERVAL_S
    last_tel = window[-1][1] if window else {}

    # memory and CPU
    warm_s = min(60.0, (load_end - start) / 3)
    half_s = (load_end - start) / 2
    pick: dict[str, Callable[[TreeSample, str], float]] = {
        "daemon": lambda x, key: x.daemon.get(key, math.nan),
        "children": children_sum,
        "total": lambda x, key: x.daemon.get(key, math.nan) + children_sum(x, key),
    }
    seen = sorted({c for x in samples for c in x.children})
    memory: dict[str, Any] = {
        "every_s": args.rss_every_s,
        "samples": len(samples),
        "warmup_s": round(warm_s, 1),
        "processes": {str(c): names.get(c, "?") for c in seen},
        # each child's VmRSS and RssAnon, first and last seen: which child grows
        "per_process": {
            str(c): {
                "first": round(sx[0].children[c]["VmRSS"], 1),
                "last": round(sx[-1].children[c]["VmRSS"], 1),
                "anon_first": round(sx[0].children[c].get("RssAnon", math.nan), 1),
                "anon_last": round(sx[-1].children[c].get("RssAnon", math.nan), 1),
                "samples": len(sx),
            }
            for c in seen
            if (sx := [x for x in samples if c in x.children])
        },
    }
    for who, get in pick.items():
        vm = [(x.t, get(x, "VmRSS")) for x in samples]
        anon = [(x.t, get(x, "RssAnon")) for x in samples]
        memory[who] = {
            "first": round(vm[0][1], 1) if vm else None,
            "max": round(max(v for _, v in vm), 1) if vm else None,
            "last": round(vm[-1][1], 1) if vm else None,
            "anon_first": round(anon[0][1], 1) if anon else None,
            "anon_last": round(anon[-1][1], 1) if anon else None,
            "file_last": round(get(samples[-1], "RssFile"), 1) if samples else None,
            "growth_mb_per_h_all": slope_per_h(vm),
            "growth_mb_per_h_after_warmup": slope_per_h([p for p in vm if p[0] >= warm_s]),
            "anon_growth_mb_per_h_after_warmup": slope_per_h([p for p in anon if p[0] >= warm_s]),
            "growth_mb_per_h_second_half": slope_per_h([p for p in vm if p[0] >= half_s]),
            "series": [[round(t, 1), round(v, 1)] for t, v in vm],
        }
    cpu: dict[str, float | None] = {"daemon": None, "children": None, "total": None}
    if len(samples) > 1 and samples[-1].t > samples[0].t:
        span = samples[-1].t - samples[0].t
        d = samples[-1].daemon_cpu_s - samples[0].daemon_cpu_s
        c = samples[-1].children_cpu_s - samples[0].children_cpu_s
        cpu = {
            "daemon": round(d / span * 100, 2),
            "children": round(c / span * 100, 2),
            "total": round((d + c) / span * 100, 2),
        }

    # the daemon's log (at level warning: everything in it is a warning or an error)
    log_lines = [ln for ln in daemon.logs().splitlines() if ln.strip()]
    warn_lines = [ln for ln in log_lines if "level=warning" in ln or "level=error" in ln]

    return {
        "date": time.strftime("%Y-%m-%d"),
        "model": DEFAULT_MODEL_FILE.name,
        "minutes": args.minutes,
        "rate_per_s": args.rate,
        "max_in_flight": args.max_in_flight,
        "seed": SEED,
        "cores": os.cpu_count(),
        "load_avg_start_end": [round(load_avg[0][0], 2), round(load_avg[1][0], 2)],
        "slots": slots,
        "sent": sent,
        "skipped_at_cap": skipped,
        "schedule_late_ms_max": round(late_ms_max, 2),
        "load_s": round(load_end - start, 1),
        "drain_s": round(drained - load_end, 2),
        "results": dict(results),
        "results_total": sum(results.values()),
        "errors": dict(errors),
        "finish_reasons": dict(finish),
        "served": {k: dict(v) for k, v in served.items()},
        "ttft_ms": {route: latency(ttft[route]) for route in ROUTES},
        "total_ms": {route: latency(total[route]) for route in ROUTES},
        "lost": len(lost),
        "lost_ids": lost[:20],
        "final_after_grace": len(late),
        "duplicated_finals": len(duplicated),
        "duplicated_ids": dict(list(duplicated.items())[:20]),
        "chunks_after_final": chunks_after_final,
        "chunk_sequence_or_text_mismatch": len(bad_chunks),
        "replies_for_unknown_ids": dict(soak.unknown),
        "unparseable_messages": soak.bad_payloads,
        "events": {
            "received": sum(ev_ids.values()),
            "outcomes": dict(ev_outcomes),
            "expected": len(want_event),
            "missing": len(events_missing),
            "missing_ids": events_missing[:20],
            "duplicated": len(events_duplicated),
        },
        "telemetry": {
            "interval_s": TELEMETRY_INTERVAL_S,
            "window_s": round(window_s, 1),
            "received": len(window),
            "expected": round(expected, 1),
            "ratio": round(len(window) / expected, 4) if expected else None,
            "gaps_over_2s": gaps,
            "max_gap_s": round(max((g for _, g in arrival_gaps), default=0), 3),
            "max_gap_ts_unix_s": round(max(stamp_gaps, default=0), 3),
            "mean_period_ts_unix_s": (
                round((stamps[-1] - stamps[0]) / (len(stamps) - 1), 4) if len(stamps) > 1 else None
            ),
            "historical": sum(bool(b.get("historical")) for _, b in window),
            "last": {
                key: last_tel.get(key)
                for key in ("requests", "errors", "ingress", "routes", "cloud", "alarms")
            },
        },
        "rss_mb": memory,
        "cpu_pct_of_one_core": cpu,
        "daemon_exited_during_run": daemon_died,
        "daemon_exit_code": daemon_rc,
        "daemon_log_lines": len(log_lines),
        "daemon_warnings": len(warn_lines),
        "daemon_warning_samples": warn_lines[:5],
    }


def short(cmdline: str) -> str:
    for mark, label in (("resource_tracker", "resource tracker"), ("spawn_main", "model worker")):
        if mark in cmdline:
            return label
    return cmdline[:40]


def report(f: dict[str, Any]) -> None:
    print(
        f"soak: {f['minutes']} min at {f['rate_per_s']} requests/s (cap {f['max_in_flight']} in "
        f"flight), {f['model']}, local and cloud (llama_cpp.server, 1 thread), {f['cores']} cores"
    )
    print(
        f"slots {f['slots']}: sent {f['sent']}, skipped at the cap {f['skipped_at_cap']}; "
        f"schedule at most {f['schedule_late_ms_max']:.1f} ms late; drained "
        f"{f['drain_s']:.1f} s after the load"
    )
    print(f"{'':16} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms from publish)")
    for route in ROUTES:
        for label, key in (("first chunk", "ttft_ms"), ("final", "total_ms")):
            s = f[key][route]
            print(
                f"{route + ' ' + label:16} {s['n']:5d} {fmt(s['p50']):>8} {fmt(s['p90']):>8} "
                f"{fmt(s['p99']):>8} {fmt(s['max']):>8}"
            )
    print(f"served: {f['served']}")
    print(
        f"results {f['results_total']} {f['results']}, errors {f['errors'] or 0}, finish "
        f"{f['finish_reasons']}"
    )
    print(
        f"LOST {f['lost']}, DUPLICATED finals {f['duplicated_finals']} (both expected 0); "
        f"finals after the grace {f['final_after_grace']}; chunks after a final "
        f"{f['chunks_after_final']}; chunk seq/text mismatches "
        f"{f['chunk_sequence_or_text_mismatch']}; replies for unknown ids "
        f"{f['replies_for_unknown_ids'] or 0}"
    )
    e = f["events"]
    print(
        f"request events: {e['received']} for {e['expected']} expected, missing {e['missing']}, "
        f"duplicated {e['duplicated']}, outcomes {e['outcomes']}"
    )
    t = f["telemetry"]
    print(
        f"telemetry: {t['received']} records in {t['window_s']:.0f} s, {t['expected']:.0f} "
        f"expected at {t['interval_s']:.0f}/s (ratio {t['ratio']}); gaps > 2 s: "
        f"{len(t['gaps_over_2s'])} {t['gaps_over_2s'][:5]}; max gap {t['max_gap_s']:.2f} s "
        f"(arrival), {t['max_gap_ts_unix_s']:.2f} s (ts_unix_s); mean period "
        f"{t['mean_period_ts_unix_s']} s; historical {t['historical']}"
    )
    print(f"last telemetry: {t['last']}")
    r = f["rss_mb"]
    print(
        f"VmRSS, MB ({r['samples']} samples every {r['every_s']:.0f} s; children: "
        f"{ {pid: short(cmd) for pid, cmd in r['processes'].items()} or 'none' })"
    )
    print(
        f"{'':9} {'first':>7} {'max':>7} {'last':>7} {'anon':>15} {'file':>6} "
        f"{'MB/h after ' + format(r['warmup_s'], '.0f') + ' s':>17} {'anon MB/h':>10} "
        f"{'MB/h all':>9} {'MB/h 2nd half':>13}"
    )
    for who in ("daemon", "children", "total"):
        m = r[who]
        print(
            f"{who:9} {fmt(m['first']):>7} {fmt(m['max']):>7} {fmt(m['last']):>7} "
            f"{fmt(m['anon_first']) + ' -> ' + fmt(m['anon_last']):>15} {fmt(m['file_last']):>6} "
            f"{fmt(m['growth_mb_per_h_after_warmup'], 2):>17} "
            f"{fmt(m['anon_growth_mb_per_h_after_warmup'], 2):>10} "
            f"{fmt(m['growth_mb_per_h_all'], 2):>9} "
            f"{fmt(m['growth_mb_per_h_second_half'], 2):>13}"
        )
    for pid, m in r["per_process"].items():
        print(
            f"  child {pid} ({short(r['processes'][pid])}): VmRSS {m['first']} -> {m['last']}, "
            f"RssAnon {m['anon_first']} -> {m['anon_last']} ({m['samples']} samples)"
        )
    c = f["cpu_pct_of_one_core"]
    print(
        f"CPU, % of one core over the run: daemon {fmt(c['daemon'], 2)}, children "
        f"{fmt(c['children'], 2)}, total {fmt(c['total'], 2)}; load average "
        f"{f['load_avg_start_end'][0]} -> {f['load_avg_start_end'][1]}"
    )
    print(
        f"daemon exited during the run: {f['daemon_exited_during_run']}; exit code at stop "
        f"{f['daemon_exit_code']}; log warnings/errors {f['daemon_warnings']}"
    )
    if "kept_dir" in f:
        print(f"logs kept in {f['kept_dir']}")
    for ln in f["daemon_warning_samples"]:
        print(f"  {ln[:300]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        help="[local] isolation for the daemon (default: the configured one, process)",
    )
    args = ap.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.max_in_flight < 1:
        ap.error("--minutes and --rate must be positive, --max-in-flight at least 1")
    figures = run(args)
    report(figures)
    print(json.dumps(figures))
    ok = (
        figures["lost"] == 0
        and figures["duplicated_finals"] == 0
        and figures["daemon_exited_during_run"] is None
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
