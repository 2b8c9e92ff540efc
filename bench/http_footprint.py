"""What the HTTP front door costs the daemon: RSS and idle CPU with ``[http]`` on and off.

Two daemons on the real default model (1 thread), one after the other, the same settings
but ``EDGED_HTTP__ENABLED``; each is left idle ``--settle-s`` after coming online, then its
RSS is read and its CPU time counted over ``--idle-s``. With HTTP on, ``--requests`` short
requests then go through the HTTP API (the openai SDK) and as many over MQTT, and the
client-side time of each is reported, so the two ingresses are compared in the same run.
Ratios are on against off (memory, idle CPU) and HTTP against MQTT (time per request).

    .venv/bin/python bench/http_footprint.py [--idle-s 20] [--requests 5]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from tests.helpers import Client, free_port


def idle(pid: int, settle_s: float, idle_s: float) -> dict[str, Any]:
    """RSS (MB) after ``settle_s`` and CPU (% of one core) over the next ``idle_s``."""
    time.sleep(settle_s)
    mem = h.proc_mb(pid)
    c0, t0 = h.cpu_s(pid), time.monotonic()
    time.sleep(idle_s)
    cpu_pct = (h.cpu_s(pid) - c0) / (time.monotonic() - t0) * 100
    return {
        "rss_mb": round(mem["VmRSS"], 1),
        "rss_anon_mb": round(mem["RssAnon"], 1),
        "idle_cpu_pct": round(cpu_pct, 3),
    }


def main() -> None:
    ap = h.parser(__doc__, "http_footprint")
    ap.add_argument("--settle-s", type=float, default=5.0)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    started = time.perf_counter()
    out: dict[str, Any] = {}
    with h.Stack("http") as stack:
        for on in (False, True):
            port = free_port()
            env = {
                "EDGED_LOCAL__N_THREADS": "1",
                "EDGED_HTTP__ENABLED": str(on).lower(),
                "EDGED_HTTP__PORT": str(port),
            }
            d = stack.daemon(env, name="http" if on else "nohttp")
            assert d.proc is not None
            fig = idle(d.proc.pid, args.settle_s, args.idle_s)
            if on:
                import openai

                sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
                http_s, mqtt_s = [], []
                with Client(stack.broker.port) as c:
                    c.subscribe("reply/bench")
                    for i in range(args.requests):
                        text = f"Say one word about the number {i}."
                        t0 = time.perf_counter()
                        sdk.chat.completions.create(
                            model="local",
                            max_tokens=args.max_tokens,
                            messages=[{"role": "user", "content": text}],
                        )
                        http_s.append(time.perf_counter() - t0)
                        r = h.ask(
                            c,
                            d.device_id,
                            {
                                "prompt": text,
                                "route": "local",
                                "max_tokens": args.max_tokens,
                                "stream": False,
                            },
                            "reply/bench",
                        )
                        mqtt_s.append(time.perf_counter() - r["t0"])
                fig["http_request_s_median"] = round(statistics.median(http_s), 4)
                fig["mqtt_request_s_median"] = round(statistics.median(mqtt_s), 4)
                fig["rss_after_requests_mb"] = round(h.proc_mb(d.proc.pid)["VmRSS"], 1)
            out["on" if on else "off"] = fig
            h.stop_daemon(d)
    off, on_ = out["off"], out["on"]
    out["ratios"] = {
        "rss_on_over_off": round(on_["rss_mb"] / off["rss_mb"], 3),
        "rss_delta_mb": round(on_["rss_mb"] - off["rss_mb"], 1),
        "idle_cpu_delta_pct": round(on_["idle_cpu_pct"] - off["idle_cpu_pct"], 3),
        "http_over_mqtt_request_time": round(
            on_["http_request_s_median"] / on_["mqtt_request_s_median"], 3
        ),
    }
    for k, v in out.items():
        print(f"{k}: {v}")
    h.write(args, out, model=h.DEFAULT_MODEL_FILE, n_threads=1, started=started)


if __name__ == "__main__":
    main()
