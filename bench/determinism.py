"""What ``temperature: 0`` gives: how often the same prompt yields the same text.

edged's local backend (``LlamaBackend``: the daemon's chat template and sampling settings)
answers each prompt ``--runs`` times at temperature 0 in three ways, per thread count:
``fresh`` (KV cache cleared: the whole prompt in one batch, as after a start), ``repeat``
(the same prompt back to back: only its last token evaluated again) and ``interleaved`` (two
prompts in turn: the template's shared prefix reused, the daemon's ordinary case). Per prompt:
distinct texts within each way, across ways and across thread counts, the first token where
texts part, and which way gave which text (A, B, ... in order of first appearance).

    .venv/bin/python bench/determinism.py [--runs 4] [--max-tokens 32] [--threads 1,2]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.backends.llama import LlamaBackend
from edged.config import LocalModelConfig

PROMPTS = [
    "Name a colour.",
    "What is the capital of France?",
    "Name a fruit.",
    "Write one sentence about the sea.",
]
WAYS = ("fresh", "repeat", "interleaved")


async def measure(threads: int, runs: int, max_tokens: int) -> dict[str, Any]:
    b = LlamaBackend(
        name="local", model_path=h.DEFAULT_MODEL_FILE, cfg=LocalModelConfig(n_threads=threads)
    )
    await b.start()
    llm = b.engine.llm
    assert llm is not None

    async def text(p: str) -> str:
        return (await h.answer(b, h.local_request(p, max_tokens, route="auto")))[0]

    out: dict[str, dict[str, list[str]]] = {p: {w: [] for w in WAYS} for p in PROMPTS}
    try:
        for p in PROMPTS:  # fresh: nothing cached
            for _ in range(runs):
                llm.reset()
                out[p]["fresh"].append(await text(p))
        for p in PROMPTS:  # repeat: the same prompt cached from the run before
            await text(p)  # the first one is not a repeat
            for _ in range(runs):
                out[p]["repeat"].append(await text(p))
        for i in range(0, len(PROMPTS), 2):  # interleaved: pairs of prompts in turn
            llm.reset()
            for _ in range(runs):
                for p in PROMPTS[i : i + 2]:
                    out[p]["interleaved"].append(await text(p))
        split: dict[str, int | None] = {}
        for p in PROMPTS:  # the first token index at which two texts differ
            texts = {t for w in WAYS for t in out[p][w]}
            toks = [llm.tokenize(t.encode(), add_bos=False, special=False) for t in texts]
            n = 0
            while all(len(t) > n for t in toks) and len({t[n] for t in toks}) == 1:
                n += 1
            split[p] = n if len(texts) > 1 else None
    finally:
        await b.close()
    return {"texts": out, "first_split_token": split}


def main() -> int:
    ap = h.parser(__doc__, "determinism")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", default="1,2", help="comma-separated decode thread counts")
    args = ap.parse_args()
    started = time.perf_counter()
    counts = [int(t) for t in args.threads.split(",")]
    res = {t: asyncio.run(measure(t, args.runs, args.max_tokens)) for t in counts}
    f: dict[str, Any] = {"runs": args.runs, "max_tokens": args.max_tokens, "prompts": {}}
    print(
        f"distinct texts at temperature 0, {args.runs} runs per way ({', '.join(WAYS)}), "
        "then across ways, across thread counts, and which way gave which text"
    )
    for p in PROMPTS:
        names: dict[str, str] = {}  # each distinct text: A, B, ...
        row: dict[str, Any] = {}
        for t, r in res.items():
            texts = r["texts"][p]
            for w in WAYS:
                for x in texts[w]:
                    names.setdefault(x, chr(ord("A") + len(names)))
            row[str(t)] = {
                **{w: len(set(texts[w])) for w in WAYS},
                "all_ways": len({x for w in WAYS for x in texts[w]}),
                "first_split_token": r["first_split_token"][p],
                "texts_by_way": {w: "".join(names[x] for x in texts[w]) for w in WAYS},
            }
        row["across_threads"] = len(names)
        row["texts"] = {v: k for k, v in names.items()}
        f["prompts"][p] = row
        ways = "; ".join(
            f"{t} thread(s) " + " ".join(row[str(t)]["texts_by_way"].values()) for t in res
        )
        print(f"{p[:34]:34} {len(names)} text(s): {ways}")
    same = sum(r["across_threads"] == 1 for r in f["prompts"].values())
    print(f"prompts with one text in every way and thread count: {same} of {len(PROMPTS)}")
    h.write(args, f, model=h.DEFAULT_MODEL_FILE, n_threads=None, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
