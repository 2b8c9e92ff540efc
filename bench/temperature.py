"""How often the default model answers simple factual questions right, by temperature.

Every question goes through edged's own local backend (``LlamaBackend``: the chat template,
the ``[local]`` settings and system prompt of ``configs/edged.toml``, the daemon's sampling
code), several times per temperature, in one shuffled order so that no temperature always
follows another's KV cache. "Right" is a loose keyword check (``paris`` in the answer to
"What is the capital of France?"): a rough comparison between temperatures on the same
questions, not a measure of the model's knowledge. Samples above 0 are random.

    .venv/bin/python bench/temperature.py [--temps 0.7,0.2,0] [--samples 5] [--max-tokens 64]
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged import models
from edged.backends.llama import LlamaBackend
from edged.config import load_config

#: (question, regular expression a right answer contains; case-insensitive, whole words)
QUESTIONS: list[tuple[str, str]] = [
    ("What is the capital of France?", r"paris"),
    ("What is the capital of Japan?", r"tokyo"),
    ("What is the capital of Italy?", r"rome"),
    ("How many days are in a week?", r"seven|7"),
    ("How many legs does a spider have?", r"eight|8"),
    ("What is the largest planet in the solar system?", r"jupiter"),
    ("Which planet is known as the Red Planet?", r"mars"),
    ("What is the chemical formula of water?", r"h2o|h₂o"),
    ("At what temperature in degrees Celsius does water boil at sea level?", r"100"),
    ("Who wrote Romeo and Juliet?", r"shakespeare"),
    ("What is the largest ocean on Earth?", r"pacific"),
    ("What color is the sky on a clear day?", r"blue"),
    ("Which gas do plants take in from the air for photosynthesis?", r"carbon dioxide|co2"),
    ("How many continents are there?", r"seven|7"),
    ("Who painted the Mona Lisa?", r"leonardo|da vinci"),
    ("On which continent is Egypt?", r"africa"),
]


def right(answer: str, pattern: str) -> bool:
    return re.search(rf"\b(?:{pattern})\b", answer, re.IGNORECASE) is not None


async def run(args: Any) -> dict[str, Any]:
    cfg = load_config(h.ROOT / args.config)
    local = (
        cfg.local
        if args.threads is None
        else cfg.local.model_copy(update={"n_threads": args.threads})
    )
    entry = models.load_manifest(h.ROOT / cfg.models.manifest).get(local.model)
    backend = LlamaBackend(name="local", model_path=h.ROOT / cfg.models.dir / entry.file, cfg=local)
    await backend.start()
    temps = [float(t) for t in args.temps.split(",")]
    jobs = [
        (q, pat, t)
        for q, pat in QUESTIONS
        for t in temps
        for _ in range(1 if t == 0 and not args.repeat_greedy else args.samples)
    ]
    random.Random(args.shuffle_seed).shuffle(jobs)
    rows: list[dict[str, Any]] = []
    try:
        for i, (q, pat, t) in enumerate(jobs):
            req = h.local_request(q, args.max_tokens, t, rid=f"t{i}")
            text, tokens, finish = await h.answer(backend, req)
            rows.append(
                {
                    "question": q,
                    "temperature": t,
                    "answer": text,
                    "tokens": tokens,
                    "finish": finish,
                    "right": right(text, pat),
                }
            )
    finally:
        await backend.close()
    out: dict[str, Any] = {
        "model": local.model,
        "system_prompt": local.system_prompt,
        "n_threads": local.n_threads,
        "questions": len(QUESTIONS),
        "by_temperature": {},
        "answers": rows,
    }
    for t in temps:
        mine = [r for r in rows if r["temperature"] == t]
        per_q = [[r["right"] for r in mine if r["question"] == q] for q, _ in QUESTIONS]
        n_right = sum(r["right"] for r in mine)
        out["by_temperature"][str(t)] = {
            "answers": len(mine),
            "right": n_right,
            "right_pct": round(100 * n_right / len(mine), 1),
            "questions_always_right": sum(all(v) for v in per_q),  # every sample of it right
            "questions_never_right": sum(not any(v) for v in per_q),
            "median_tokens": statistics.median(r["tokens"] for r in mine),
            "hit_max_tokens": sum(r["finish"] == "length" for r in mine),
        }
    return out


def main() -> int:
    ap = h.parser(__doc__, "temperature")
    ap.add_argument("--config", default="configs/edged.toml")
    ap.add_argument("--temps", default="0.7,0.2,0", help="comma-separated temperatures")
    ap.add_argument("--samples", type=int, default=5, help="answers per question and temperature")
    ap.add_argument(
        "--repeat-greedy",
        action="store_true",
        help="also ask --samples times at temperature 0 (default: once)",
    )
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, help="decode threads (default: the config's)")
    ap.add_argument("--shuffle-seed", type=int, default=1)
    args = ap.parse_args()
    started = time.perf_counter()
    out = asyncio.run(run(args))
    for t, f in out["by_temperature"].items():
        print(f"temperature {t}: {f['right']}/{f['answers']} right ({f['right_pct']:.1f}%)")
    h.write(args, out, model=out["model"], n_threads=out["n_threads"], started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
