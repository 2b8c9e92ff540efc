"""How often the default model answers simple factual questions right, by temperature.

The default model (SmolLM2-135M-Instruct, Q4_1) is tiny; a request that does not say
``temperature`` gets the default, and this measures what that default costs in right
answers. Every question is asked through edged's own local backend (``LlamaBackend``: the
model's chat template, the ``[local]`` settings and system prompt of ``configs/edged.toml``,
the same sampling code the daemon runs), several times per temperature, in a shuffled order
so that no temperature always follows another's KV cache.

"Right" is a loose keyword check (``paris`` in the answer to "What is the capital of
France?"): an answer that names the keyword inside a wrong statement still counts, and a
right answer in other words does not. It is a rough comparison between temperatures on the
same questions, not a measure of the model's knowledge. Samples above temperature 0 are
random (``local.seed`` -1), so the figures move a little from run to run.

    .venv/bin/python bench/temperature.py [--temps 0.7,0.2,0] [--samples 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edged.backends.llama import LlamaBackend
from edged.config import load_config
from edged.types import ChatMessage, Finished, ReplyAddress, Request, TextDelta

ROOT = Path(__file__).resolve().parent.parent

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
    """The loose keyword check."""
    return re.search(rf"\b(?:{pattern})\b", answer, re.IGNORECASE) is not None


def request(i: int, question: str, temperature: float, max_tokens: int) -> Request:
    return Request(
        id=f"t{i}",
        messages=(ChatMessage("user", question),),
        max_tokens=max_tokens,
        temperature=temperature,
        stream=True,
        route="local",
        sensitivity="normal",
        reply=ReplyAddress("reply/bench"),
        received_at_s=time.monotonic(),
    )


async def ask(backend: LlamaBackend, req: Request) -> tuple[str, int, str]:
    parts: list[str] = []
    tokens, finish = 0, "?"
    async for ev in backend.generate(req):
        if isinstance(ev, TextDelta):
            parts.append(ev.text)
        elif isinstance(ev, Finished):
            tokens, finish = ev.usage.completion_tokens, ev.finish_reason
    return "".join(parts), tokens, finish


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(ROOT / args.config)
    local = cfg.local
    if args.threads is not None:
        local = local.model_copy(update={"n_threads": args.threads})
    from edged import models

    entry = models.load_manifest(ROOT / cfg.models.manifest).get(local.model)
    path = ROOT / cfg.models.dir / entry.file
    backend = LlamaBackend(name="local", model_path=path, cfg=local)
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
    t0 = time.monotonic()
    try:
        for i, (q, pat, t) in enumerate(jobs):
            text, tokens, finish = await ask(backend, request(i, q, t, args.max_tokens))
            rows.append({"question": q, "temperature": t, "answer": text, "tokens": tokens,
                         "finish": finish, "right": right(text, pat)})  # fmt: skip
    finally:
        await backend.close()
    out: dict[str, Any] = {
        "model": local.model,
        "system_prompt": local.system_prompt,
        "max_tokens": args.max_tokens,
        "samples_per_question": args.samples,
        "questions": len(QUESTIONS),
        "wall_s": round(time.monotonic() - t0, 1),
        "by_temperature": {},
    }
    for t in temps:
        mine = [r for r in rows if r["temperature"] == t]
        per_q = {q: [r["right"] for r in mine if r["question"] == q] for q, _ in QUESTIONS}
        out["by_temperature"][str(t)] = {
            "answers": len(mine),
            "right": sum(r["right"] for r in mine),
            "right_pct": round(100 * sum(r["right"] for r in mine) / len(mine), 1),
            # a question counts as "always right" when every sample of it was
            "questions_always_right": sum(all(v) for v in per_q.values()),
            "questions_never_right": sum(not any(v) for v in per_q.values()),
            "median_tokens": statistics.median(r["tokens"] for r in mine),
            "hit_max_tokens": sum(r["finish"] == "length" for r in mine),
            "wrong_examples": [
                {"question": r["question"], "answer": r["answer"]} for r in mine if not r["right"]
            ][: args.examples],
        }
    if args.all_answers:
        out["rows"] = rows
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/edged.toml")
    p.add_argument("--temps", default="0.7,0.2,0", help="comma-separated temperatures")
    p.add_argument("--samples", type=int, default=5, help="answers per question and temperature")
    p.add_argument("--repeat-greedy", action="store_true",
                   help="also ask --samples times at temperature 0 (default: once)")  # fmt: skip
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, help="decode threads (default: the config's)")
    p.add_argument("--shuffle-seed", type=int, default=1)
    p.add_argument("--examples", type=int, default=4, help="wrong answers shown per temperature")
    p.add_argument("--all-answers", action="store_true", help="include every answer")
    p.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = p.parse_args()
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"{out['model']}, {out['questions']} questions, system prompt {out['system_prompt']!r}, "
          f"max_tokens {out['max_tokens']}, {out['wall_s']} s")  # fmt: skip
    print(f"{'temperature':>11} {'right':>12} {'always right':>13} {'never right':>12} "
          f"{'median tokens':>14}")  # fmt: skip
    for t, f in out["by_temperature"].items():
        print(f"{t:>11} {f['right']:>4}/{f['answers']:<3} {f['right_pct']:5.1f}% "
              f"{f['questions_always_right']:>10}/{out['questions']} "
              f"{f['questions_never_right']:>9}/{out['questions']} "
              f"{f['median_tokens']:>14}")  # fmt: skip
    for t, f in out["by_temperature"].items():
        for ex in f["wrong_examples"]:
            print(f"  T={t} wrong: {ex['question']!r} -> {ex['answer']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
