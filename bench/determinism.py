"""What ``temperature: 0`` gives: how often the same prompt yields the same text.

edged's local backend (``edged.backends.llama.LlamaBackend``, the daemon's chat template
and sampling settings, no system prompt of its own) answers each prompt ``--runs`` times at
temperature 0, in three ways, with 1 and with 2 decode threads:

  fresh        the KV cache is cleared before each run: the whole prompt is evaluated in one
               batch, as for the first request after a start
  repeat       the same prompt back to back: llama-cpp-python reuses the cached prefix and
               evaluates only the prompt's last token again (a batch of one)
  interleaved  two prompts in turn: each reuses the chat template's shared prefix and
               evaluates the rest (the daemon's ordinary case: requests differ)

For every prompt it counts the distinct texts within each way, across the three ways, and
across the thread counts, and for texts that differ, the first token where they part; then
which way gave which text (A, B, ... in order of first appearance; ``--show`` prints them).

    .venv/bin/python bench/determinism.py [--runs 4] [--max-tokens 32] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edged.backends.llama import LlamaBackend
from edged.config import LocalModelConfig
from edged.types import ChatMessage, Finished, ReplyAddress, Request, TextDelta
from tests.helpers import DEFAULT_MODEL_FILE

PROMPTS = [
    "Name a colour.",
    "What is the capital of France?",
    "Name a fruit.",
    "Write one sentence about the sea.",
]
WAYS = ("fresh", "repeat", "interleaved")


def request(prompt: str, max_tokens: int) -> Request:
    return Request(id="det", messages=(ChatMessage("user", prompt),), max_tokens=max_tokens,
                   temperature=0.0, stream=True, route="auto", sensitivity="normal",
                   reply=ReplyAddress("reply/det"), received_at_s=time.monotonic())  # fmt: skip


async def answer(b: LlamaBackend, prompt: str, max_tokens: int) -> tuple[str, int]:
    text, tokens = [], 0
    async for ev in b.generate(request(prompt, max_tokens)):
        if isinstance(ev, TextDelta):
            text.append(ev.text)
        elif isinstance(ev, Finished):
            tokens = ev.usage.completion_tokens
    return "".join(text), tokens


def first_split(texts: list[str], b: LlamaBackend) -> int | None:
    """The first token index at which two of ``texts`` differ (None when all are equal)."""
    if len(set(texts)) < 2:
        return None
    assert b._llm is not None
    toks = [b._llm.tokenize(t.encode(), add_bos=False, special=False) for t in set(texts)]
    n = 0
    while all(len(t) > n for t in toks) and len({t[n] for t in toks}) == 1:
        n += 1
    return n


async def measure(threads: int, runs: int, max_tokens: int) -> dict[str, Any]:
    b = LlamaBackend(name="local", model_path=DEFAULT_MODEL_FILE,
                     cfg=LocalModelConfig(n_threads=threads))  # fmt: skip
    await b.start()
    assert b._llm is not None
    out: dict[str, dict[str, list[str]]] = {p: {w: [] for w in WAYS} for p in PROMPTS}
    try:
        for p in PROMPTS:  # fresh: nothing cached
            for _ in range(runs):
                b._llm.reset()
                out[p]["fresh"].append((await answer(b, p, max_tokens))[0])
        for p in PROMPTS:  # repeat: the same prompt cached from the run before
            await answer(b, p, max_tokens)  # the first one is not a repeat
            for _ in range(runs):
                out[p]["repeat"].append((await answer(b, p, max_tokens))[0])
        for i in range(0, len(PROMPTS), 2):  # interleaved: pairs of prompts in turn
            pair = PROMPTS[i : i + 2]
            b._llm.reset()
            for _ in range(runs):
                for p in pair:
                    out[p]["interleaved"].append((await answer(b, p, max_tokens))[0])
        splits = {p: first_split([t for w in WAYS for t in out[p][w]], b) for p in PROMPTS}
    finally:
        await b.close()
    return {"texts": out, "first_split_token": splits}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", default="1,2", help="comma-separated decode thread counts")
    ap.add_argument("--show", action="store_true", help="print the distinct texts too")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    started = time.perf_counter()
    by_threads = {t: asyncio.run(measure(t, args.runs, args.max_tokens)) for t in thread_counts}

    print(f"{DEFAULT_MODEL_FILE.name}, temperature 0, {args.runs} runs per way, "
          f"max_tokens {args.max_tokens}: distinct texts")  # fmt: skip
    head = f"{'prompt':36} {'threads':>7} " + " ".join(f"{w:>11}" for w in WAYS)
    print(head + f" {'all ways':>9} {'split at':>9}")
    figures: dict[str, Any] = {"runs": args.runs, "max_tokens": args.max_tokens, "prompts": {}}
    for p in PROMPTS:
        row: dict[str, Any] = {}
        for t, res in by_threads.items():
            texts = res["texts"][p]
            counts = {w: len(set(texts[w])) for w in WAYS}
            every = len({x for w in WAYS for x in texts[w]})
            split = res["first_split_token"][p]
            row[str(t)] = {**counts, "all_ways": every, "first_split_token": split}
            print(f"{p[:36]:36} {t:>7} " + " ".join(f"{counts[w]:>11}" for w in WAYS)
                  + f" {every:>9} {'-' if split is None else split:>9}")  # fmt: skip
        across = {x for res in by_threads.values() for w in WAYS for x in res["texts"][p][w]}
        row["across_threads"] = len(across)
        figures["prompts"][p] = row
        # which way gave which text: A, B, ... in order of first appearance
        names: dict[str, str] = {}
        for res in by_threads.values():
            for w in WAYS:
                for x in res["texts"][p][w]:
                    names.setdefault(x, chr(ord("A") + len(names)))
        row["texts_by_way"] = {
            str(t): {w: "".join(names[x] for x in res["texts"][p][w]) for w in WAYS}
            for t, res in by_threads.items()
        }
        print("    " + "; ".join(f"{t} thread(s): " + ", ".join(f"{w} {v}" for w, v in ways.items())
                                 for t, ways in row["texts_by_way"].items()))  # fmt: skip
        if args.show:
            for x, name in names.items():
                print(f"    {name}: {x!r}")
    same = sum(r["across_threads"] == 1 for r in figures["prompts"].values())
    print(f"prompts with one text in every way and thread count: {same} of {len(PROMPTS)}")
    figures["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(f"elapsed {figures['elapsed_s']:.0f} s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
