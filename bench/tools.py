"""What a tool call costs on the local model: edged's constrained decode against raw llama.cpp.

Range probes first (fixed ``set_alarm`` calls fed token by token to the llguidance and GBNF
engines: each must accept exactly the valid ones), then four rows interleaved round by round
on the same prompt: raw ``Llama.generate`` (the floor), ``auto``, ``forced`` (``required``)
and ``warm`` (``required`` with the tools' block in the KV cache). docs/benchmarks.md
describes each column (``est``: the grammar's own cost as a decode-rate ratio).

    .venv/bin/python bench/tools.py [--rounds 5] [--threads 1 2] [--max-tokens 64] [--gbnf]
        (--gbnf: the fallback engine, as if no llguidance; --rounds 0: the range probes only)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.backends.llama import LlamaEngine
from edged.config import LocalModelConfig
from edged.grammar.gbnf import GbnfEngine
from edged.grammar.llg import LlgEngine, unavailable_reason
from edged.grammar.spec import GrammarSpec, call_object_schema
from edged.types import Request, ToolCalls, ToolChoice, ToolSpec

MODEL = h.DEFAULT_MODEL_FILE
_DATA = json.loads((Path(__file__).parent / "data" / "tools.json").read_text())
TOOLS: list[dict[str, Any]] = _DATA["tools"]
REQUESTS: list[str] = _DATA["requests"]
SPECS = [ToolSpec(t["name"], t["description"], t["parameters"]) for t in TOOLS]
SETS = {"1-tool": SPECS[:1], "10-tool": SPECS}
ROWS = ("raw", "auto", "forced", "warm")


def _alarm(hour: str, minute: str = "0", label: str = "a") -> str:
    return (
        f'{{"name":"set_alarm","arguments":{{"hour":{hour},"minute":{minute},"label":"{label}"}}}}'
    )


#: (text, valid): texts an engine is fed for the set_alarm call (hour 0..23, minute 0..59,
#: label at most 24 characters).
RANGE_PROBES = [
    (_alarm("23", "59"), True),
    (_alarm("0", "0", ""), True),
    *((_alarm(hour), False) for hour in ("24", "203", "-1", "07")),
    (_alarm("7", "60"), False),
    (_alarm("7", "5", "x" * 25), False),
]


def probe(engine: LlamaEngine) -> dict[str, Any]:
    """Feed each range probe token by token to edged's llguidance and GBNF engines (as the
    JSON answer's grammar, no markers): which does each wrongly accept or refuse?"""
    spec = GrammarSpec(answer=call_object_schema(SETS["1-tool"][0]))
    eos = engine.llm.token_eos()
    out: dict[str, Any] = {}
    engines: list[Any] = [GbnfEngine(engine.vocab)]
    if unavailable_reason() is None:  # not with --gbnf
        engines.insert(0, LlgEngine(engine.vocab))
    for grammar in engines:
        wrong = []
        for text, valid in RANGE_PROBES:
            c = grammar.constraint(spec)
            accepted = True
            for tok in engine.llm.tokenize(text.encode(), add_bos=False, special=False):
                if not c.is_allowed(tok):
                    accepted = False
                    break
                c.accept([tok])
            accepted = accepted and (c.is_done() or c.is_allowed(eos))  # complete, too
            if accepted != valid:
                wrong.append(("accepted " if accepted else "refused ") + text[32:])
        right = len(RANGE_PROBES) - len(wrong)
        print(f"range probes, {grammar.name}: {right}/{len(RANGE_PROBES)} right {wrong or ''}")
        out[grammar.name] = {"right": right, "of": len(RANGE_PROBES), "wrong": wrong}
    return out


def request(tools: list[ToolSpec], ask: str, max_tokens: int, mode: Any) -> Request:
    """A tool request at temperature 0.8."""
    kw = {"route": "auto", "rid": "b", "tools": tuple(tools), "tool_choice": ToolChoice(mode)}
    return h.local_request(ask, max_tokens, 0.8, **kw)  # type: ignore[no-any-return]


def raw(engine: LlamaEngine, tokens: list[int], max_tokens: int) -> dict[str, Any]:
    """``Llama.generate`` on ``tokens``: ms to the first token, decode tokens/s."""
    c = engine.cfg
    engine.llm.reset()
    t0 = time.perf_counter()
    t_first, n = None, 0
    sampling = {"top_k": c.top_k, "top_p": c.top_p, "min_p": c.min_p}
    for tok in engine.llm.generate(tokens, temp=0.8, repeat_penalty=c.repeat_penalty, **sampling):
        if engine._is_eog(engine.vocab, tok):
            break
        n += 1
        if t_first is None:
            t_first = time.perf_counter()
        if n >= max_tokens:
            break
    dt = time.perf_counter() - (t_first or 0)
    assert t_first is not None
    return {
        "first_ms": (t_first - t0) * 1e3,
        "tokens": n,
        "decode_tps": (n - 1) / dt if n > 1 else None,
    }


def edged(engine: LlamaEngine, req: Request, cold: bool = True) -> dict[str, Any]:
    """One request through ``LlamaEngine.decode``, timed from the call (``cold``: the KV
    cache cleared first; else the previous request's prefix is reused)."""
    if cold:
        engine.llm.reset()
    got: list[Any] = []
    t0 = time.monotonic()
    engine.decode(req, threading.Event(), got.append)
    end = time.monotonic()
    bad = [e for e in got if isinstance(e, BaseException)]
    if bad:
        raise bad[0]
    out = engine.last_outcome
    assert out is not None and out.first_at_s is not None
    n, dt = out.produced, end - out.first_at_s
    return {
        "first_ms": (out.first_at_s - t0) * 1e3,
        "tokens": n,
        "whole_ms": (end - t0) * 1e3,
        "decode_tps": (n - 1) / dt if n > 1 and dt > 0 else None,
        "resampled": out.resampled,
        "sample_ms": out.sample_s * 1e3 / max(1, out.sampled),
        "call": any(isinstance(e, ToolCalls) for e in got),
    }


def med(xs: list[Any]) -> float:
    """Median of the known values (NaN if none)."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def table(threads: int, name: str, rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One table's summaries, row by row (medians over the rounds)."""
    base_tps = med([x["decode_tps"] for x in rows["raw"]])
    base_first = med([x["first_ms"] for x in rows["raw"]])
    s_auto = med([x["sample_ms"] for x in rows["auto"]])
    raw_ms = 1e3 / base_tps
    out = []
    for row, xs in rows.items():
        tps = med([x["decode_tps"] for x in xs])
        s = {
            "threads": threads,
            "set": name,
            "row": row,
            "rounds": xs,
            "decode_tps": tps,
            "first_ms": med([x["first_ms"] for x in xs]),
            "ratio": tps / base_tps,
            "tokens": med([x["tokens"] for x in xs]),
        }
        if row != "raw":
            s["sample_ms"] = med([x["sample_ms"] for x in xs])
            s["resampled"] = med([x["resampled"] for x in xs])
            s["calls"] = sum(x["call"] for x in xs)
        if row in ("forced", "warm"):
            s["est"] = raw_ms / (raw_ms + s["sample_ms"] - s_auto)
            s["whole_call_ms"] = med([x["whole_ms"] for x in xs])
        if row == "forced":  # warm: its prompt is not cold, so no like-for-like floor
            s["added_ms"] = s["whole_call_ms"] - (base_first + s["tokens"] * raw_ms)
            print(f"   forced: est {s['est']:.2f}, calls {s['calls']}/{len(xs)}", end="")
            print(f", whole call {s['whole_call_ms']:.0f} ms (+{s['added_ms']:.0f} over raw)")
        out.append(s)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run and print the tables; figures as JSON with --json."""
    ap = h.parser(__doc__, "tools")
    ap.description, ap.formatter_class = __doc__, argparse.RawTextHelpFormatter
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--gbnf", action="store_true", help="the fallback engine (no llguidance)")
    args = ap.parse_args(argv)
    figures: dict[str, Any] = {"tables": []}
    for threads in args.threads:
        engine = LlamaEngine(
            name="bench", model_path=MODEL, cfg=LocalModelConfig(n_threads=threads, n_ctx=2048)
        )
        engine.load()
        t = time.perf_counter()
        if args.gbnf:
            sys.modules["llguidance"] = None  # type: ignore[assignment]
        grammar = engine.grammar()
        tok_ms = (time.perf_counter() - t) * 1e3
        print(f"\n== n_threads {threads}: {grammar.name}, set up in {tok_ms:.0f} ms")
        if "probes" not in figures:
            figures["probes"] = probe(engine)
        for name, tools in (SETS if args.rounds else {}).items():
            spec = engine.plan(request(tools, "x", 1, "required")).grammar
            assert spec is not None
            times = []
            for _ in range(2):  # compile, then from the cache
                t = time.perf_counter()
                grammar.constraint(spec)
                times.append((time.perf_counter() - t) * 1e3)
            print(f"-- {name}: compile {times[0]:.1f} ms, cached {times[1]:.2f} ms")
            rows: dict[str, list[dict[str, Any]]] = {r: [] for r in ROWS}
            for r in range(args.rounds):
                ask = REQUESTS[r % len(REQUESTS)]
                prompt = engine.prompt_tokens(request(tools, ask, 1, "required"))
                rows["raw"].append(raw(engine, prompt, args.max_tokens))
                for mode in ("auto", "forced"):
                    choice = "required" if mode == "forced" else mode
                    rows[mode].append(edged(engine, request(tools, ask, args.max_tokens, choice)))
                other = REQUESTS[(r + 1) % len(REQUESTS)]  # the same tools, the next ask
                req = request(tools, other, args.max_tokens, "required")
                rows["warm"].append(edged(engine, req, cold=False))
            figures["tables"].append(
                {
                    "threads": threads,
                    "set": name,
                    "engine": grammar.name,
                    "tokenizer_ms": tok_ms,
                    "compile_ms": times[0],
                    "compile_cached_ms": times[1],
                    "rows": table(threads, name, rows),
                }
            )
        engine.llm.close()
    h.write(args, figures, model=MODEL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
