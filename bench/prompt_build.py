"""What building the prompt costs: the whole rendered string tokenized with ``special=True``
(before issue 12) against edged's builder (placeholders, contents tokenized as text).

Both run interleaved in blocks on the same messages and model, nothing generated; per case
the microseconds per prompt (min and median) and the ratios new/old.

    .venv/bin/python bench/prompt_build.py [--rounds 2000]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.backends.llama import prompt_builder

Messages = list[dict[str, str]]


def cases() -> dict[str, Messages]:
    """One short turn; a 10-turn conversation; one long message (about 4,000 characters)."""
    convo: Messages = [{"role": "system", "content": "You are a concise assistant."}]
    for i, topic in enumerate(h.TOPICS[:5]):
        convo.append({"role": "user", "content": f"Tell me one fact about {topic}. ({i})"})
        convo.append({"role": "assistant", "content": f"Here is a fact about {topic}: " * 3})
    convo.append({"role": "user", "content": "Thanks. Now summarise all of that."})
    long = " ".join(f"Paragraph about {t}, with some words in it." for t in h.TOPICS) * 9
    return {
        "short": [{"role": "user", "content": "What is the capital of France?"}],
        "conversation-11": convo,
        "long-4k": [{"role": "user", "content": long}],
    }


def timed(fn: Callable[[], list[int]], rounds: int) -> list[float]:
    """Microseconds per call, one sample a call."""
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def main() -> int:
    ap = h.parser(__doc__, "prompt_build")
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    llm = h.load_llama(1, n_ctx=512)
    t0 = time.perf_counter()
    builder = prompt_builder(llm)
    f: dict[str, object] = {"builder_setup_ms": (time.perf_counter() - t0) * 1000}
    fmt = h.chat_formatter(llm)
    for name, msgs in cases().items():

        def old(msgs: Messages = msgs) -> list[int]:
            prompt = fmt(messages=msgs).prompt
            return list(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

        def new(msgs: Messages = msgs) -> list[int]:
            return list(builder.tokens(msgs))

        assert old() == new(), name  # same ids for contents without control-token text
        olds: list[float] = []
        news: list[float] = []
        for _ in range(10):  # interleaved blocks: the machine's load moves both alike
            olds += timed(old, max(1, args.rounds // 10))
            news += timed(new, max(1, args.rounds // 10))
        o, n = h.summary(olds, 1), h.summary(news, 1)
        f[name] = {
            "tokens": len(new()),
            "old_us": o,
            "new_us": n,
            "ratio_min": n["min"] / o["min"],
            "ratio_p50": n["p50"] / o["p50"],
        }
        print(
            f"{name:16} {len(new()):5} tokens: old {o['min']:.0f}/{o['p50']:.0f} us, new "
            f"{n['min']:.0f}/{n['p50']:.0f} us (min/p50); new/old "
            f"{n['min'] / o['min']:.2f}/{n['p50'] / o['p50']:.2f}"
        )
    h.write(args, f, model=h.DEFAULT_MODEL_FILE, n_threads=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
