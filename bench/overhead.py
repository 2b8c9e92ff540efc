"""What edged costs on top of llama.cpp, measured in one run on the same model and prompts.

The same greedy answers three ways, interleaved round by round (a fresh prompt each round):
raw ``Llama.generate`` plus a token count (the floor), ``Llama.create_completion(stream=True)``,
and the daemon over MQTT (QoS 1, loopback Mosquitto) timed at the client as chunks arrive.
Decode rate is (tokens - 1) / (last token - first token); for edged, from the first chunk to
the final reply (the text comes gathered, a few tokens per chunk). Added time to first token: direct
(client TTFT minus llama.cpp's own time in the daemon, from its debug log) and A/B (edged minus
raw per round). CPU per generated token of the daemon (its own process, the model worker
left out) and of the broker, from /proc over the edged rounds. Then the daemon's memory
without the model file's pages, and its idle CPU.

    .venv/bin/python bench/overhead.py [--rounds 8] [--max-tokens 128] [--threads 1|all]
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.config import LocalModelConfig


class Raw:
    """A baseline on its own model instance (each keeps only its own last prompt cached, as
    the daemon's does), with the daemon's sampling settings."""

    def __init__(self, threads: int) -> None:
        c = LocalModelConfig(n_threads=threads)
        self.sampling = {"top_k": c.top_k, "top_p": c.top_p, "min_p": c.min_p}
        self.sampling["repeat_penalty"] = c.repeat_penalty
        self.llm = h.load_llama(threads)
        self.fmt = h.chat_formatter(self.llm)

    def _timed(self, tokens: Any, max_tokens: int, t0: float, stop: int | None) -> dict[str, float]:
        n, first, last = 0, t0, t0
        for tok in tokens:
            if tok == stop:
                break
            last = time.perf_counter()
            first = last if n == 0 else first
            n += 1
            if n >= max_tokens:
                break
        rate = (n - 1) / (last - first) if n > 1 else float("nan")
        return {"tokens": n, "ttft_ms": (first - t0) * 1000, "tok_s": rate}

    def generate(self, text: str, max_tokens: int) -> dict[str, float]:
        t0 = time.perf_counter()
        prompt = str(self.fmt(messages=h.chat(text)).prompt)
        toks = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        gen = self.llm.generate(toks, temp=0.0, **self.sampling)
        return self._timed(gen, max_tokens, t0, self.llm.token_eos())

    def stream(self, text: str, max_tokens: int) -> dict[str, float]:
        t0 = time.perf_counter()
        prompt = str(self.fmt(messages=h.chat(text)).prompt)
        gen = self.llm.create_completion(
            prompt, max_tokens=max_tokens, stream=True, temperature=0.0, **self.sampling
        )
        return self._timed(gen, max_tokens, t0, None)


def via_edged(
    c: h.Client, device_id: str, text: str, max_tokens: int, cpu: dict[int, float]
) -> dict[str, Any]:
    """One request; adds the CPU seconds each pid of ``cpu`` (the daemon's own process, the
    model worker left out, and the broker) spent over it."""
    body = {"messages": h.chat(text), "max_tokens": max_tokens, "temperature": 0.0}
    before = {pid: h.cpu_s(pid) for pid in cpu}
    r = h.ask(c, device_id, body, "reply/overhead")
    for pid, t in before.items():
        cpu[pid] += h.cpu_s(pid) - t
    final = r["final"]
    if final.get("type") != "result" or r["first_s"] is None:
        raise RuntimeError(f"edged failed: {final}")
    n = int(final["usage"]["completion_tokens"])
    # from the first chunk to the final reply: chunks are gathered ([local] emit_flush_ms),
    # so the last chunk's arrival says little about when the decode ended; the final reply
    # follows the last token at once
    span = r["final_s"] - r["first_s"]
    return {
        "tokens": n,
        "ttft_ms": (r["first_s"] - r["t0"]) * 1000,
        "tok_s": (n - 1) / span if n > 1 else float("nan"),
        "id": final["id"],
        "chunks": len(r["chunks"]),
    }


def rss_split(pid: int) -> dict[str, float]:
    """VmRSS and how much of it is pages of the mmap-ed model file, MB (from smaps)."""
    model_kb = total_kb = 0
    is_model = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                is_model = line.rstrip().endswith(h.DEFAULT_MODEL_FILE.name)
            elif first == "Rss:":
                kb = int(line.split()[1])
                total_kb += kb
                model_kb += kb if is_model else 0
    return {
        "rss_mb": total_kb / 1024,
        "model_file_rss_mb": model_kb / 1024,
        "rss_without_model_file_mb": (total_kb - model_kb) / 1024,
    }


def main() -> int:
    ap = h.parser(__doc__, "overhead")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument(
        "--threads",
        type=lambda v: (os.cpu_count() or 1) if v == "all" else int(v),
        default=1,
        help="decode threads, all three paths ('all': every core)",
    )
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--isolation", choices=["process", "thread"], default="process")
    ap.add_argument("--guardian", choices=["off", "default"], default="off", help="rule packs")
    ap.add_argument("--chunk-flush-ms", type=float, help="[ingress] chunk_flush_ms (0: off)")
    ap.add_argument("--emit-flush-ms", type=float, help="[local] emit_flush_ms (0: off)")
    args = ap.parse_args()
    started = time.perf_counter()
    env = {
        "EDGED_LOCAL__N_THREADS": str(args.threads),
        "EDGED_LOG__LEVEL": "debug",
        "EDGED_LOCAL__ISOLATION": args.isolation,
        **({"EDGED_GUARDIAN__PACKS": "[]"} if args.guardian == "off" else {}),
    }
    for value, key in (
        (args.chunk_flush_ms, "INGRESS__CHUNK"),
        (args.emit_flush_ms, "LOCAL__EMIT"),
    ):
        if value is not None:
            env[f"EDGED_{key}_FLUSH_MS"] = str(value)
    res: dict[str, list[dict[str, Any]]] = {"raw": [], "stream": [], "edged": []}
    with h.Stack("overhead") as stack:
        daemon = stack.daemon(env)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        raw, stream = Raw(args.threads), Raw(args.threads)
        with h.Client(stack.broker.port) as c:
            c.subscribe("reply/overhead")
            assert stack.broker.proc is not None
            cpu = dict.fromkeys((pid, stack.broker.proc.pid), 0.0)
            paths = {
                "raw": raw.generate,
                "stream": stream.stream,
                "edged": lambda t, n: via_edged(c, daemon.device_id, t, n, cpu),
            }
            for k, fn in enumerate(paths.values()):  # warm-up: model paged in, first calls paid
                fn(h.story(97 + k), 8)
            cpu.update(dict.fromkeys(cpu, 0.0))  # the warm-up not counted
            for i in range(args.rounds):
                order = list(paths) if i % 2 == 0 else list(reversed(paths))
                for name in order:
                    res[name].append(paths[name](h.story(i), args.max_tokens))
        mem = rss_split(pid)
        kids = h.descendants(pid)
        mem["children_rss_mb"] = sum(rss_split(k)["rss_mb"] for k in kids)
        c0 = h.cpu_s(pid) + sum(h.cpu_s(k) for k in kids)
        time.sleep(args.idle_s)
        idle_pct = (h.cpu_s(pid) + sum(h.cpu_s(k) for k in kids) - c0) / args.idle_s * 100
        log = daemon.logs()
    model_ttft = {
        m[1]: float(m[2])
        for m in re.finditer(
            r"event=first_token id=(\S+) prompt_tokens=\d+ model_ttft_ms=([\d.]+)", log
        )
    }
    loaded = re.search(r"rss_before_mb=([\d.]+) rss_after_mb=([\d.]+)", log)
    tokens = {k: [int(r["tokens"]) for r in v] for k, v in res.items()}
    rate = {k: h.pct([r["tok_s"] for r in v], 50) or float("nan") for k, v in res.items()}
    ttft = {k: h.pct([r["ttft_ms"] for r in v], 50) for k, v in res.items()}
    direct = [e["ttft_ms"] - model_ttft[str(e["id"])] for e in res["edged"]]
    ab = [e["ttft_ms"] - r["ttft_ms"] for e, r in zip(res["edged"], res["raw"], strict=True)]
    f = {
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "isolation": args.isolation,
        "guardian": args.guardian,
        "tokens": tokens,
        "same_tokens": tokens["raw"] == tokens["edged"],
        "rate_tok_s_p50": rate,
        "ttft_ms_p50": ttft,
        "ratio_edged_raw": rate["edged"] / rate["raw"],
        "ratio_stream_raw": rate["stream"] / rate["raw"],
        "added_ttft_ms_direct": h.summary(direct),
        "added_ttft_ms_ab": h.summary(ab),
        "rss_before_model_mb": float(loaded[1]) if loaded else None,
        "memory_mb": mem,
        "idle_s": args.idle_s,
        "idle_cpu_pct": idle_pct,
        "threads": args.threads,
        "chunk_flush_ms": args.chunk_flush_ms,
        "emit_flush_ms": args.emit_flush_ms,
        "edged_tokens": sum(tokens["edged"]),
        "edged_chunks": sum(int(r["chunks"]) for r in res["edged"]),
        "cpu_us_per_token": {
            k: v / max(sum(tokens["edged"]), 1) * 1e6
            for k, v in zip(("daemon", "broker"), cpu.values(), strict=True)
        },
    }
    print(
        f"{args.rounds} rounds x {args.max_tokens} tokens, {args.threads} thread(s), greedy; "
        f"tokens per round {'the same' if f['same_tokens'] else 'DIFFERENT'} raw/edged"
    )
    for k in res:
        print(
            f"{k:7} {rate[k]:7.1f} tok/s p50  ratio {rate[k] / rate['raw']:.3f}  "
            f"TTFT p50 {ttft[k]:.2f} ms"
        )
    dp, ap50 = f["added_ttft_ms_direct"]["p50"], f["added_ttft_ms_ab"]["p50"]
    print(
        f"edged/raw tokens/s {f['ratio_edged_raw']:.3f} (goal >= 0.98); TTFT edged adds "
        f"{dp:.2f} ms direct ({h.goal(dp, 5)}, goal <= 5), {ap50:.2f} ms A/B (p50)"
    )
    cpt = f["cpu_us_per_token"]
    both = cpt["daemon"] + cpt["broker"]
    print(
        f"CPU per generated token (/proc, edged rounds): daemon {cpt['daemon']:.0f} us, broker "
        f"{cpt['broker']:.0f} us, together {both:.0f} us ({h.goal(both, 200)}, goal <= 200); "
        f"{f['edged_chunks']} chunks for {f['edged_tokens']} tokens"
    )
    print(
        f"daemon RSS {mem['rss_mb']:.1f} MB, without model pages "
        f"{mem['rss_without_model_file_mb']:.1f} MB, children {mem['children_rss_mb']:.1f} MB, "
        f"before the model {f['rss_before_model_mb']} MB (goal <= 80); idle CPU "
        f"{idle_pct:.2f}% of a core over {args.idle_s:g} s (goal <= 1%)"
    )
    h.write(args, f, model=h.DEFAULT_MODEL_FILE, n_threads=args.threads, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
