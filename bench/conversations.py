"""Conversations: time to first token of later turns, three conversations interleaved, with
and without the request field ``conversation`` (the local backend's KV cache), one run.

Each conversation opens with its own note of about ``--note-tokens`` tokens; the turns go
A1 B1 C1 A2 B2 C2 ... for ``--turns`` rounds, each turn sending the whole history
(``messages``) with the previous answers, over MQTT to one daemon (real model, worker
process). The same schedule runs twice on the same daemon: once with ``conversation`` set
(keyed per conversation), once without (llama-cpp-python then reuses only the prefix it
shares with the previous request: the system prompt). TTFT is timed at the client (publish
to first chunk); the ratio is without / with, over turns 2 and later (goal: at least 5x).
The worker's anonymous memory (RssAnon: not the model file's pages) after each pass is
reported against the budget.

    .venv/bin/python bench/conversations.py [--turns 4] [--note-tokens 400] [--threads 1]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h

REPLY = "reply/conversations"
GOAL_X = 5.0
SUBJECTS = {"A": "the lighthouse", "B": "the orchard", "C": "the observatory"}


def note(subject: str, tokens: int) -> str:
    """A note about ``subject`` of roughly ``tokens`` tokens (about 12 per sentence)."""
    lines = [
        f"Entry {i}: at {subject}, the keeper counted {i * 7} items and logged {i + 3} visitors."
        for i in range(max(1, tokens // 20))
    ]
    return "Here is my note.\n" + "\n".join(lines) + "\nRemember it; I will ask about it."


def one_pass(c: h.Client, device_id: str, args: Any, keyed: bool, tag: str) -> dict[str, Any]:
    history: dict[str, list[dict[str, str]]] = {
        k: [{"role": "user", "content": note(s, args.note_tokens)}] for k, s in SUBJECTS.items()
    }
    rows: list[dict[str, Any]] = []
    for turn in range(1, args.turns + 1):
        for k in SUBJECTS:
            body: dict[str, Any] = {
                "messages": history[k],
                "max_tokens": args.max_tokens,
                "temperature": 0,
                "route": "local",
            }
            if keyed:
                body["conversation"] = f"{tag}-{k}"
            r = h.ask(c, device_id, body, REPLY)
            final = r["final"]
            assert final.get("type") == "result", final
            ttft_ms = None if r["first_s"] is None else (r["first_s"] - r["t0"]) * 1000
            usage = final["usage"]
            rows.append(
                {
                    "conversation": k,
                    "turn": turn,
                    "ttft_ms": ttft_ms,
                    "prompt_tokens": usage["prompt_tokens"],
                    "cached_tokens": usage.get("cached_tokens"),
                }
            )
            history[k] = [
                *history[k],
                {"role": "assistant", "content": final["text"]},
                {"role": "user", "content": f"Question {turn}: what did entry {turn} count?"},
            ]
    return {"rows": rows}


def main() -> int:
    ap = h.parser(__doc__, "conversations")
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--note-tokens", type=int, default=400)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-mb", type=float, default=64.0, help="[local] session_cache_mb")
    args = ap.parse_args()
    started = time.perf_counter()
    env = {
        "EDGED_LOCAL__N_THREADS": str(args.threads),
        "EDGED_LOCAL__SESSION_CACHE_MB": str(args.budget_mb),
    }
    passes: dict[str, Any] = {}
    with h.Stack("conversations") as stack:
        d = stack.daemon(env)
        assert d.proc is not None
        with h.Client(stack.broker.port) as c:
            c.subscribe(REPLY)
            h.ask(c, d.device_id, {"prompt": "Say hi.", "max_tokens": 4}, REPLY)  # warm-up
            kids = h.descendants(d.proc.pid)
            rss0 = sum(h.proc_mb(k)["RssAnon"] for k in kids)
            for name, keyed in (("without", False), ("with", True)):
                passes[name] = one_pass(c, d.device_id, args, keyed, f"p{int(time.time())}")
                passes[name]["worker_anon_mb"] = sum(h.proc_mb(k)["RssAnon"] for k in kids)
    later = {
        k: [r["ttft_ms"] for r in v["rows"] if r["turn"] >= 2 and r["ttft_ms"] is not None]
        for k, v in passes.items()
    }
    p50 = {k: h.pct(v, 50) for k, v in later.items()}
    ratio = (p50["without"] or float("nan")) / (p50["with"] or float("nan"))
    cached = [r["cached_tokens"] / r["prompt_tokens"] for r in passes["with"]["rows"][3:]]
    growth = passes["with"]["worker_anon_mb"] - passes["without"]["worker_anon_mb"]
    f = {
        "turns": args.turns,
        "note_tokens": args.note_tokens,
        "prompt_tokens_turn1": passes["with"]["rows"][0]["prompt_tokens"],
        "later_ttft_ms": {k: h.summary(v, 1) for k, v in later.items()},
        "ratio_without_with_p50": round(ratio, 2),
        "goal_5x": "met" if ratio >= GOAL_X else f"MISSED ({ratio:.1f}x)",
        "cached_share_later_turns_p50": h.pct(cached, 50),
        "worker_anon_mb": {"before": rss0, **{k: v["worker_anon_mb"] for k, v in passes.items()}},
        "worker_anon_growth_with_cache_mb": round(growth, 1),
        "budget_mb": args.budget_mb,
        "passes": passes,
    }
    print(
        f"3 conversations x {args.turns} turns interleaved, notes of ~{args.note_tokens} tokens "
        f"(first prompt {f['prompt_tokens_turn1']} tokens), {args.threads} thread(s)"
    )
    for k in ("without", "with"):
        s = f["later_ttft_ms"][k]
        print(f"  {k:8s} conversation: later turns TTFT p50 {s['p50']} ms p90 {s['p90']} ms")
    print(
        f"  ratio {f['ratio_without_with_p50']}x (goal {GOAL_X:.0f}x: {f['goal_5x']}); "
        f"cached share of later prompts p50 {f['cached_share_later_turns_p50']}; "
        f"worker anonymous memory growth with the cache {f['worker_anon_growth_with_cache_mb']} MB "
        f"(budget {args.budget_mb} MB)"
    )
    h.write(args, f, model=h.DEFAULT_MODEL_FILE, n_threads=args.threads, started=started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
