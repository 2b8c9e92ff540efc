"""What edged costs on top of llama.cpp, measured in one run on the same model and prompts.

Three ways to generate the same greedy answers, interleaved round by round so that machine
noise hits them alike:

  raw      ``Llama.generate`` plus a token count (the floor)
  stream   ``Llama.create_completion(stream=True)`` (what most servers do)
  edged    the daemon over MQTT (QoS 1, loopback, real Mosquitto), timed at the client:
           first chunk and last chunk as they arrive

Decode rate is (tokens - 1) / (last token time - first token time); time to first token
(TTFT) is from the call (raw, stream) or from the publish (edged). Both use the same chat
template and sampling settings; each round uses a fresh prompt so no run reuses another's
KV cache. Then the daemon's memory without the model file and its idle CPU.

    .venv/bin/python bench/overhead.py [--rounds 8] [--max-tokens 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from bench.prompts import TOPICS
from edged.config import LocalModelConfig
from edged.mqtt.link import props_for
from tests.helpers import DEFAULT_MODEL_FILE, Broker, Daemon

SYSTEM = "You are a helpful assistant. Answer briefly."


def prompt_for(i: int) -> str:
    return f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}. Story {i}."


class Raw:
    """The baselines, on the model loaded in this process with the daemon's settings."""

    def __init__(self, threads: int) -> None:
        # One model instance per baseline, as the daemon has its own: each keeps only its own
        # previous prompt in its KV cache, like the daemon does.
        self.cfg = LocalModelConfig(n_threads=threads)
        self.llm = Llama(
            model_path=str(DEFAULT_MODEL_FILE),
            n_ctx=self.cfg.n_ctx,
            n_batch=self.cfg.n_batch,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        m = self.llm._model
        self.fmt = Jinja2ChatFormatter(
            self.llm.metadata["tokenizer.chat_template"],
            eos_token=m.token_get_text(self.llm.token_eos()),
            bos_token=m.token_get_text(self.llm.token_bos()),
            add_generation_prompt=True,
        )
        self.eos = self.llm.token_eos()

    def _prompt(self, text: str) -> str:
        msgs: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        return str(self.fmt(messages=msgs).prompt)

    def generate(self, text: str, max_tokens: int) -> dict[str, float]:
        t0 = time.perf_counter()
        toks = self.llm.tokenize(self._prompt(text).encode(), add_bos=False, special=True)
        n = 0
        first = last = t0
        for tok in self.llm.generate(
            toks,
            temp=0.0,
            top_k=self.cfg.top_k,
            top_p=self.cfg.top_p,
            min_p=self.cfg.min_p,
            repeat_penalty=self.cfg.repeat_penalty,
        ):
            if tok == self.eos:
                break
            last = time.perf_counter()
            if n == 0:
                first = last
            n += 1
            if n >= max_tokens:
                break
        return {
            "tokens": n,
            "ttft_ms": (first - t0) * 1000,
            "tok_s": (n - 1) / (last - first) if n > 1 else float("nan"),
        }

    def stream(self, text: str, max_tokens: int) -> dict[str, float]:
        t0 = time.perf_counter()
        n = 0
        first = last = t0
        for _ in self.llm.create_completion(
            self._prompt(text),
            max_tokens=max_tokens,
            stream=True,
            temperature=0.0,
            top_k=self.cfg.top_k,
            top_p=self.cfg.top_p,
            min_p=self.cfg.min_p,
            repeat_penalty=self.cfg.repeat_penalty,
        ):
            last = time.perf_counter()
            if n == 0:
                first = last
            n += 1
        return {
            "tokens": n,
            "ttft_ms": (first - t0) * 1000,
            "tok_s": (n - 1) / (last - first) if n > 1 else float("nan"),
        }


class EdgedClient:
    """An MQTT v5 client that times replies as they arrive (in paho's network thread)."""

    def __init__(self, port: int, device_id: str) -> None:
        self.topic = f"reply/bench-{uuid.uuid4().hex[:6]}"
        self.request_topic = f"edged/{device_id}/request"
        self.c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bench-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.c.on_socket_open = lambda c, u, s: s.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.c.on_message = self._on_message
        self.done = threading.Event()
        self.sub = threading.Event()
        self.c.on_subscribe = lambda *a: self.sub.set()
        self.c.connect("127.0.0.1", port, clean_start=True)
        self.c.loop_start()
        self.c.subscribe(self.topic, qos=1)
        self.sub.wait(10)

    def _on_message(self, c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        body = json.loads(msg.payload)
        if body["type"] == "chunk":
            if self.first is None:
                self.first = now
            self.last = now
        else:
            self.final = body
            self.done.set()

    def generate(self, text: str, max_tokens: int) -> dict[str, float]:
        self.first: float | None = None
        self.last: float | None = None
        self.final: dict[str, Any] = {}
        self.done.clear()
        props = props_for(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topic
        self.rid = f"bench-{uuid.uuid4().hex[:10]}"
        body = {
            "id": self.rid,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        payload = json.dumps(body).encode()
        t0 = time.perf_counter()
        self.c.publish(self.request_topic, payload, qos=1, properties=props)
        if not self.done.wait(120):
            raise RuntimeError("edged did not answer")
        if self.final.get("type") != "result" or self.first is None or self.last is None:
            raise RuntimeError(f"edged failed: {self.final}")
        n = int(self.final["usage"]["completion_tokens"])
        return {
            "tokens": n,
            "ttft_ms": (self.first - t0) * 1000,
            "tok_s": (n - 1) / (self.last - self.first) if n > 1 else float("nan"),
            "server_ttft_ms": float(self.final["timing_ms"]["ttft"]),
            "id": self.rid,
        }


def rss_breakdown(pid: int, model_file: Path) -> dict[str, float]:
    """VmRSS, and how much of it is pages of the mmap-ed model file, in MB."""
    model_kb = 0
    total_kb = 0
    current_is_model = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                current_is_model = line.rstrip().endswith(model_file.name)
            elif first == "Rss:":
                kb = int(line.split()[1])
                total_kb += kb
                if current_is_model:
                    model_kb += kb
    return {
        "rss_mb": total_kb / 1024,
        "model_file_rss_mb": model_kb / 1024,
        "rss_without_model_file_mb": (total_kb - model_kb) / 1024,
    }


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the model worker, multiprocessing's resource tracker)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="decode threads, all three paths")
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--verbose", "-v", action="store_true", help="print every round")
    ap.add_argument(
        "--isolation",
        choices=["process", "thread"],
        default="process",
        help="where the daemon runs the model (its [local] isolation)",
    )
    ap.add_argument(
        "--guardian",
        choices=["off", "default"],
        default="off",
        help="off: no rule packs (the serving overhead alone); default: the "
        "shipped pack, whose hold-back keeps the first word until the next token",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    broker = Broker(tmp / "mosquitto")
    broker.start()
    daemon = Daemon(
        broker.port,
        f"bench{uuid.uuid4().hex[:6]}",
        tmp / "edged.log",
        extra_env={
            "EDGED_LOCAL__N_THREADS": str(args.threads),
            "EDGED_LOG__LEVEL": "debug",
            "EDGED_LOCAL__ISOLATION": args.isolation,
            **({"EDGED_GUARDIAN__PACKS": "[]"} if args.guardian == "off" else {}),
        },
    )
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    raw = Raw(args.threads)
    stream = Raw(args.threads)
    client = EdgedClient(broker.port, daemon.device_id)
    try:
        # warm-up: page the model in everywhere, first-call costs out of the way
        raw.generate(prompt_for(99), 8)
        stream.stream(prompt_for(98), 8)
        client.generate(prompt_for(97), 8)
        res: dict[str, list[dict[str, float]]] = {"raw": [], "stream": [], "edged": []}
        for i in range(args.rounds):
            p = prompt_for(i)
            order = [("raw", raw.generate), ("edged", client.generate), ("stream", stream.stream)]
            if i % 2:
                order.reverse()
            for name, fn in order:
                res[name].append(fn(p, args.max_tokens))
        mem = rss_breakdown(pid, DEFAULT_MODEL_FILE)
        kids = children(pid)
        mem["children_rss_mb"] = sum(rss_breakdown(k, DEFAULT_MODEL_FILE)["rss_mb"] for k in kids)
        c0 = cpu_seconds(pid) + sum(cpu_seconds(k) for k in kids)
        time.sleep(args.idle_s)
        idle_pct = (cpu_seconds(pid) + sum(cpu_seconds(k) for k in kids) - c0) / args.idle_s * 100
    finally:
        client.c.disconnect()
        client.c.loop_stop()
        daemon.stop()
        broker.stop()

    log_text = daemon.logs()
    model_ttft = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r"event=first_token id=(\S+) prompt_tokens=\d+ model_ttft_ms=([\d.]+)", log_text
        )
    }
    loaded = re.search(r"rss_before_mb=([\d.]+) rss_after_mb=([\d.]+)", log_text)
    rss_before = float(loaded.group(1)) if loaded else float("nan")

    tokens = {k: [r["tokens"] for r in v] for k, v in res.items()}
    same_tokens = tokens["raw"] == tokens["edged"]
    rate = {k: p50([r["tok_s"] for r in v]) for k, v in res.items()}
    ttft = {k: p50([r["ttft_ms"] for r in v]) for k, v in res.items()}
    ab_added = [e["ttft_ms"] - r["ttft_ms"] for e, r in zip(res["edged"], res["raw"], strict=True)]
    # Direct: the client's TTFT minus the time llama.cpp itself took in the daemon (prompt
    # templating, tokenizing, prompt evaluation, first sample) for the same request.
    direct = [e["ttft_ms"] - model_ttft[str(e["id"])] for e in res["edged"]]
    print(
        f"model {DEFAULT_MODEL_FILE.name}, {args.rounds} rounds, max_tokens "
        f"{args.max_tokens}, {args.threads} decode thread(s), greedy"
    )
    print(
        f"tokens per round raw={tokens['raw']} edged={tokens['edged']} "
        f"({'same' if same_tokens else 'DIFFERENT'})"
    )
    if args.verbose:
        for i, e in enumerate(res["edged"]):
            print(
                f"round {i}: raw ttft {res['raw'][i]['ttft_ms']:.2f} ms; edged ttft at client "
                f"{e['ttft_ms']:.2f} ms, in the daemon {e['server_ttft_ms']:.2f} ms, "
                f"in llama.cpp {model_ttft[str(e['id'])]:.2f} ms"
            )
    print(f"{'path':8} {'tok/s p50':>10} {'ratio':>7} {'TTFT p50 ms':>12}")
    for k in ("raw", "stream", "edged"):
        print(f"{k:8} {rate[k]:10.1f} {rate[k] / rate['raw']:7.3f} {ttft[k]:12.2f}")
    print(f"edged tokens/s / raw: {rate['edged'] / rate['raw']:.3f} (goal >= 0.98)")
    print(
        f"TTFT edged adds, direct (client TTFT - llama.cpp time in the daemon), p50: "
        f"{p50(direct):.2f} ms (min {min(direct):.2f}, max {max(direct):.2f}) (goal <= 5 ms)"
    )
    print(
        f"TTFT edged adds, A/B against raw per round, p50: {p50(ab_added):.2f} ms "
        f"(min {min(ab_added):.2f}, max {max(ab_added):.2f}; prompt-evaluation noise included)"
    )
    print(
        f"isolation {args.isolation}, guardian {args.guardian}: daemon RSS after serving "
        f"{mem['rss_mb']:.1f} MB (of which model file pages {mem['model_file_rss_mb']:.1f} MB; "
        f"{mem['rss_without_model_file_mb']:.1f} MB without them); its child processes (the "
        f"model worker, multiprocessing's resource tracker) {mem['children_rss_mb']:.1f} MB; "
        f"RSS before the model was loaded (the process that loads it): {rss_before:.1f} MB "
        f"(goal: the daemon without the model <= 80 MB)"
    )
    tick_pct = 100 / os.sysconf("SC_CLK_TCK") / args.idle_s
    idle_txt = f"{idle_pct:.2f}%" if idle_pct > 0 else f"< {tick_pct:.2f}% (under one clock tick)"
    print(
        f"daemon (and worker) idle CPU over {args.idle_s:.0f} s: {idle_txt} of one core "
        "(goal <= 1%)"
    )
    print(
        json.dumps(
            {
                "rate_tok_s": rate,
                "ttft_ms_p50": ttft,
                "ratio_edged_raw": rate["edged"] / rate["raw"],
                "added_ttft_ms_direct_p50": p50(direct),
                "added_ttft_ms_ab_p50": p50(ab_added),
                "rss_before_model_mb": rss_before,
                "memory_mb": mem,
                "idle_cpu_pct": idle_pct,
                "tokens": tokens,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
