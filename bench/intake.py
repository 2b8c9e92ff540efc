"""Intake under load (issue 12): can edged still say ``busy`` while long requests stream?

The scenario: a Mosquitto on a free loopback port and a daemon with the fake backend
(``--chunk-s`` per chunk, 0.5 s by default; ``ingress.queue_limit`` 8). ``--long`` requests
of ``--long-s`` seconds each (one chunk every ``--chunk-s``) fill the queue; once every one
of them streams, ``--short`` short requests are published on a fixed schedule at ``--rate``
a second (QoS 1, not waiting for the broker's PUBACK). Each short one should be refused with
``busy`` at once. Reported: the busy latency (from publish to the ``busy`` reply arriving)
p50/p99/max, how many short requests got ``busy`` within 1 s, how many got no final reply,
the final-reply counts of the long requests, and the in-flight journal's append latency
(fsync included) on the disk of ``--tmp-dir``.

Before the in-flight journal, replies were acknowledged to the broker only after their final
reply and in arrival order; with Receive Maximum 64 the broker stopped delivering once 64
messages were unacknowledged, so 56 short requests got ``busy`` and the other 44 waited
until the long requests ended (27-28 s with the defaults).

    PYTHONPATH=. .venv/bin/python bench/intake.py [--long 8] [--long-s 30] [--short 100] [--rate 50]

The last line printed is JSON with every figure. Not run in CI; about ``--long-s`` + 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.ingress.journal import Journal, request_record
from edged.types import ChatMessage, ReplyAddress, Request
from tests.helpers import Broker, Client, Daemon, Msg


class TimedClient(Client):
    """A test client that notes when each message arrived (``time.monotonic()``)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.arrivals: queue.Queue[tuple[float, Msg]] = queue.Queue()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        super()._on_message(client, userdata, msg)
        self.arrivals.put((now, self.inbox.get_nowait()))


@dataclass
class Outcome:
    """What one run of the scenario saw."""

    short_sent_s: dict[str, float] = field(default_factory=dict)
    short_final: dict[str, tuple[float, str]] = field(default_factory=dict)  # (arrival, code)
    long_finals: dict[str, list[str]] = field(default_factory=dict)  # id -> final types
    long_first_final_s: float | None = None
    long_last_final_s: float | None = None
    long_started_s: float = 0.0

    def busy_latencies_s(self) -> list[float]:
        return sorted(
            t - self.short_sent_s[rid]
            for rid, (t, code) in self.short_final.items()
            if code == "busy"
        )


def run_scenario(
    broker_port: int,
    device_id: str,
    *,
    long_n: int = 8,
    long_s: float = 30.0,
    chunk_s: float = 0.5,
    short_n: int = 100,
    rate_per_s: float = 50.0,
    timeout_s: float | None = None,
) -> Outcome:
    """Run the scenario against a daemon already online as ``device_id``; returns what the
    client saw. Waits for every long request's final reply (or ``timeout_s``)."""
    out = Outcome()
    reply = f"reply/intake-{uuid.uuid4().hex[:6]}"
    request_topic = f"edged/{device_id}/request"
    pieces = [f"w{i} " for i in range(max(1, round(long_s / chunk_s)))]
    long_ids = [f"long{i}" for i in range(long_n)]
    short_ids = [f"short{i}" for i in range(short_n)]
    timeout_s = timeout_s if timeout_s is not None else long_s * 2 + 30
    streaming: set[str] = set()
    c = TimedClient(broker_port)
    with c:
        c.subscribe(reply)

        def take(wait_s: float) -> bool:
            try:
                t, msg = c.arrivals.get(timeout=wait_s)
            except queue.Empty:
                return False
            body = msg.json()
            rid, kind = body.get("id"), body.get("type")
            if rid in out.long_finals or rid in long_ids:
                if kind == "chunk":
                    streaming.add(rid)
                elif kind in ("result", "error"):
                    out.long_finals.setdefault(rid, []).append(kind)
                    out.long_first_final_s = out.long_first_final_s or t
                    out.long_last_final_s = t
            elif rid in out.short_sent_s and kind in ("result", "error"):
                out.short_final.setdefault(rid, (t, str(body.get("code", kind))))
            return True

        out.long_started_s = time.monotonic()
        for rid in long_ids:
            c.publish(request_topic,
                      json.dumps({"id": rid, "prompt": json.dumps(pieces),
                                  "max_tokens": len(pieces)}),
                      response_topic=reply)  # fmt: skip
        deadline = time.monotonic() + 30
        while len(streaming) < long_n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(streaming)} of {long_n} long requests streamed")
            take(0.5)
        start = time.monotonic()
        for i, rid in enumerate(short_ids):
            due = start + i / rate_per_s
            while (now := time.monotonic()) < due:
                take(min(0.005, due - now))
            out.short_sent_s[rid] = time.monotonic()
            c.publish(request_topic, json.dumps({"id": rid, "prompt": "hi", "max_tokens": 2}),
                      response_topic=reply, wait=False)  # fmt: skip
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and (
            len(out.long_finals) < long_n or len(out.short_final) < short_n
        ):
            take(0.2)
    return out


def journal_append_ms(directory: Path, n: int = 200, prompt_bytes: int = 1024) -> list[float]:
    """Latency of one journal ``admit`` record (checksummed line, write, fsync), ms."""
    j = Journal(directory / "bench.journal")
    j.load()
    out = []
    for i in range(n):
        req = Request(id=f"r{i}", messages=(ChatMessage("user", "x" * prompt_bytes),),
                      max_tokens=64, temperature=0.7, stream=True, route="auto",
                      sensitivity="normal", reply=ReplyAddress("reply/x", b"corr"),
                      received_at_s=time.monotonic())  # fmt: skip
        rec = request_record(req, time.monotonic(), time.time())
        t0 = time.perf_counter()
        j.admit(rec)
        out.append((time.perf_counter() - t0) * 1000)
        j.done(req.id)
    return sorted(out)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long", type=int, default=8, help="long requests (fill queue_limit)")
    ap.add_argument("--long-s", type=float, default=30.0, help="length of a long request, s")
    ap.add_argument("--chunk-s", type=float, default=0.5, help="fake backend delay per chunk")
    ap.add_argument("--short", type=int, default=100, help="short requests")
    ap.add_argument("--rate", type=float, default=50.0, help="short requests per second")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="where state and logs go")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="edged-intake-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker")
        broker.start()
        d = Daemon(broker_port=broker.port, device_id=f"bench{uuid.uuid4().hex[:6]}",
                   log_path=root / "edged.log",
                   extra_env={"EDGED_LOCAL__BACKEND": "fake",
                              "EDGED_LOCAL__FAKE_DELAY_S": str(args.chunk_s),
                              "EDGED_INGRESS__QUEUE_LIMIT": str(args.long),
                              "EDGED_LOG__LEVEL": "info"})  # fmt: skip
        try:
            d.start()
            o = run_scenario(broker.port, d.device_id, long_n=args.long, long_s=args.long_s,
                             chunk_s=args.chunk_s, short_n=args.short,
                             rate_per_s=args.rate)  # fmt: skip
        finally:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
            broker.stop()
        fsync_ms = journal_append_ms(root)
    lat = o.busy_latencies_s()
    codes: dict[str, int] = {}
    for _, code in o.short_final.values():
        codes[code] = codes.get(code, 0) + 1
    first_final = (o.long_first_final_s - o.long_started_s) if o.long_first_final_s else None
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "long": args.long,
        "long_s": args.long_s,
        "short": args.short,
        "rate_per_s": args.rate,
        "short_codes": codes,
        "short_without_final": args.short - len(o.short_final),
        "busy_within_1s": sum(1 for x in lat if x <= 1.0),
        "busy_p50_ms": None if not lat else round(statistics.median(lat) * 1000, 1),
        "busy_p99_ms": None if not lat else round((pct(lat, 0.99) or 0) * 1000, 1),
        "busy_max_ms": None if not lat else round(lat[-1] * 1000, 1),
        "long_finals": {k: v for k, v in sorted(o.long_finals.items())},
        "long_first_final_after_s": None if first_final is None else round(first_final, 2),
        "journal_append_p50_ms": round(statistics.median(fsync_ms), 3),
        "journal_append_p99_ms": round(pct(fsync_ms, 0.99) or 0, 3),
        "journal_append_max_ms": round(fsync_ms[-1], 3),
    }
    print(f"short requests: {codes} ({figures['short_without_final']} without a final reply)")
    print(f"busy within 1 s: {figures['busy_within_1s']} of {args.short}")
    print(f"busy latency p50/p99/max: {figures['busy_p50_ms']} / {figures['busy_p99_ms']} / "
          f"{figures['busy_max_ms']} ms")  # fmt: skip
    print(f"long requests' finals: {figures['long_finals']}; the first after "
          f"{figures['long_first_final_after_s']} s")  # fmt: skip
    print(
        f"journal append (fsync) p50/p99/max: {figures['journal_append_p50_ms']} / "
        f"{figures['journal_append_p99_ms']} / {figures['journal_append_max_ms']} ms"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
