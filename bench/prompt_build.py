"""What building the prompt costs: the whole rendered string tokenized with ``special=True``
(before issue 12) against edged's builder (placeholders, contents tokenized as text).

    .venv/bin/python bench/prompt_build.py [--rounds 2000]

Both paths run interleaved on the same messages and the same model; prints microseconds per
prompt (minimum and median) and the ratios new/old. Nothing is generated.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from bench.prompts import TOPICS
from edged.backends.llama import prompt_builder
from tests.helpers import DEFAULT_MODEL_FILE

Messages = list[dict[str, str]]


def cases() -> dict[str, Messages]:
    """One short turn; a 10-turn conversation; one long message (about 4,000 characters)."""
    convo: Messages = [{"role": "system", "content": "You are a concise assistant."}]
    for i, topic in enumerate(TOPICS[:5]):
        convo.append({"role": "user", "content": f"Tell me one fact about {topic}. ({i})"})
        convo.append({"role": "assistant", "content": f"Here is a fact about {topic}: " * 3})
    convo.append({"role": "user", "content": "Thanks. Now summarise all of that."})
    long = " ".join(f"Paragraph about {t}, with some words in it." for t in TOPICS) * 9
    return {
        "short": [{"role": "user", "content": "What is the capital of France?"}],
        "conversation-11": convo,
        "long-4k": [{"role": "user", "content": long}],
    }


def timed(fn: Callable[[], list[int]], rounds: int) -> list[float]:
    """Microseconds per call, one sample a call."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    llm = Llama(model_path=str(DEFAULT_MODEL_FILE), n_ctx=512, n_threads=1, verbose=False)
    t0 = time.perf_counter()
    builder = prompt_builder(llm)
    setup_ms = (time.perf_counter() - t0) * 1000
    m = llm._model
    fmt = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=m.token_get_text(llm.token_eos()),
        bos_token=m.token_get_text(llm.token_bos()),
        add_generation_prompt=True,
    )
    print(f"builder set-up at load: {setup_ms:.1f} ms")
    print(f"{'case':18} {'tokens':>6} {'old us (min/p50)':>18} {'new us (min/p50)':>18} "
          f"{'new/old (min/p50)':>18}")  # fmt: skip
    for name, msgs in cases().items():

        def old(msgs: Messages = msgs) -> list[int]:
            prompt = fmt(messages=msgs).prompt  # type: ignore[arg-type]
            return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

        def new(msgs: Messages = msgs) -> list[int]:
            return builder.tokens(msgs)

        assert old() == new(), name  # same ids for contents without control-token text
        olds: list[float] = []
        news: list[float] = []
        for _ in range(10):  # interleaved blocks: the machine's load moves both alike
            olds += timed(old, args.rounds // 10)
            news += timed(new, args.rounds // 10)
        o = (min(olds), statistics.median(olds))
        n = (min(news), statistics.median(news))
        print(f"{name:18} {len(new()):>6} {o[0]:>8.0f} / {o[1]:>7.0f} {n[0]:>8.0f} / {n[1]:>7.0f} "
              f"{n[0] / o[0]:>8.2f} / {n[1] / o[1]:>7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
