"""Intake under load (issue 12): can edged still say ``busy`` while long requests stream?

A daemon with the fake backend (``--chunk-s`` per chunk; ``ingress.queue_limit`` = ``--long``):
``--long`` requests of ``--long-s`` seconds fill the queue; once all of them stream, ``--short``
short requests go out on a fixed schedule at ``--rate`` a second (QoS 1, not waiting for the
PUBACK), and each should be refused with ``busy`` at once. Figures: busy latency (publish to
reply) p50/p99/max, how many got ``busy`` within 1 s or no final reply, the long requests'
finals, and the in-flight journal's append latency (fsync included) on ``--tmp-dir``'s disk.

    .venv/bin/python bench/intake.py [--long 8] [--long-s 30] [--short 100] [--rate 50]
"""

from __future__ import annotations

import json
import queue
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.ingress.journal import Journal, request_record


@dataclass
class Outcome:
    """What one run of the scenario saw (times: ``time.perf_counter()``)."""

    short_sent_s: dict[str, float] = field(default_factory=dict)
    short_final: dict[str, tuple[float, str]] = field(default_factory=dict)  # (arrival, code)
    long_finals: dict[str, list[str]] = field(default_factory=dict)  # id -> final types
    long_first_final_s: float | None = None
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
    """Run the scenario against a daemon already online as ``device_id``. Waits for every
    long request's final reply (or ``timeout_s``)."""
    out = Outcome()
    reply = f"reply/intake-{uuid.uuid4().hex[:6]}"
    topic = f"edged/{device_id}/request"
    pieces = [f"w{i} " for i in range(max(1, round(long_s / chunk_s)))]
    long_ids = [f"long{i}" for i in range(long_n)]
    timeout_s = timeout_s if timeout_s is not None else long_s * 2 + 30
    streaming: set[str] = set()
    with h.Client(broker_port) as c:
        c.subscribe(reply)

        def take(wait_s: float) -> None:
            try:
                m = c.get(timeout_s=wait_s)
            except queue.Empty:
                return
            body = m.json()
            rid, kind = body.get("id"), body.get("type")
            if rid in long_ids:
                if kind == "chunk":
                    streaming.add(rid)
                elif kind in ("result", "error"):
                    out.long_finals.setdefault(rid, []).append(kind)
                    out.long_first_final_s = out.long_first_final_s or m.at_s
            elif rid in out.short_sent_s and kind in ("result", "error"):
                out.short_final.setdefault(rid, (m.at_s, str(body.get("code", kind))))

        out.long_started_s = time.perf_counter()
        for rid in long_ids:
            body = {"id": rid, "prompt": json.dumps(pieces), "max_tokens": len(pieces)}
            c.publish(topic, json.dumps(body), response_topic=reply)
        deadline = time.monotonic() + 30
        while len(streaming) < long_n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(streaming)} of {long_n} long requests streamed")
            take(0.5)
        start = time.perf_counter()
        for i in range(short_n):
            due = start + i / rate_per_s
            while (now := time.perf_counter()) < due:
                take(min(0.005, due - now))
            rid = f"short{i}"
            out.short_sent_s[rid] = time.perf_counter()
            c.publish(
                topic,
                json.dumps({"id": rid, "prompt": "hi", "max_tokens": 2}),
                response_topic=reply,
                wait=False,
            )
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
        req = h.local_request("x" * prompt_bytes, 64, 0.7, route="auto", rid=f"r{i}")
        rec = request_record(req, time.monotonic(), time.time())
        t0 = time.perf_counter()
        j.admit(rec)
        out.append((time.perf_counter() - t0) * 1000)
        j.done(req.id)
    return out


def main() -> int:
    ap = h.parser(__doc__, "intake")
    ap.add_argument("--long", type=int, default=8, help="long requests (fill queue_limit)")
    ap.add_argument("--long-s", type=float, default=30.0, help="length of a long request, s")
    ap.add_argument("--chunk-s", type=float, default=0.5, help="fake backend delay per chunk")
    ap.add_argument("--short", type=int, default=100, help="short requests")
    ap.add_argument("--rate", type=float, default=50.0, help="short requests per second")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="where state and logs go")
    args = ap.parse_args()
    started = time.perf_counter()
    env = {
        "EDGED_LOCAL__BACKEND": "fake",
        "EDGED_LOCAL__FAKE_DELAY_S": str(args.chunk_s),
        "EDGED_INGRESS__QUEUE_LIMIT": str(args.long),
    }
    with h.Stack("intake", tmp_dir=args.tmp_dir) as stack:
        d = stack.daemon(env)
        o = run_scenario(
            stack.broker.port,
            d.device_id,
            long_n=args.long,
            long_s=args.long_s,
            chunk_s=args.chunk_s,
            short_n=args.short,
            rate_per_s=args.rate,
        )
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        fsync_ms = journal_append_ms(Path(tmp))
    lat = [x * 1000 for x in o.busy_latencies_s()]
    codes: dict[str, int] = {}
    for _, code in o.short_final.values():
        codes[code] = codes.get(code, 0) + 1
    first = o.long_first_final_s
    f = {
        "short_codes": codes,
        "short_without_final": args.short - len(o.short_final),
        "busy_within_1s": sum(1 for x in lat if x <= 1000),
        "busy_ms": h.summary(lat, 1),
        "long_finals": dict(sorted(o.long_finals.items())),
        "long_first_final_after_s": None if first is None else round(first - o.long_started_s, 2),
        "journal_append_ms": h.summary(fsync_ms),
    }
    b, j = f["busy_ms"]["p99"], f["journal_append_ms"]["p99"]
    print(f"busy within 1 s: {f['busy_within_1s']} of {args.short} (p99 {b} ms)")
    print(f"journal append (fsync) p99 {j} ms")
    h.write(args, f, started=started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
