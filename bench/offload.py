"""Local decode speed with the model on the GPU against the CPU, in the same run.

Loads the default model twice through edged's own offload code (``offload_kwargs``: the
``[local]`` keys as ``Llama(...)`` arguments): once with ``n_gpu_layers = 0`` (the
baseline) and once with ``--gpu-layers`` (default -1, every layer) plus the given
``--flash-attn`` / ``--kv-cache-type``, and decodes the same prompts greedily in alternating
order. Prints tokens/s of each and the ratio against the CPU. On a llama-cpp-python built
without GPU offload both runs are on the CPU (the figures say ``gpu_offload_built: false``
and the ratio is about 1): that is what this machine can say, not a GPU figure.

    .venv/bin/python bench/offload.py [--rounds 4] [--max-tokens 64] [--threads 2]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.backends.llama.offload import offload_kwargs
from edged.config import LocalModelConfig


def decode_rate(llm: Any, prompt: str, max_tokens: int) -> tuple[float, int]:
    """Tokens/s after the first token, and the tokens generated."""
    tokens = llm.tokenize(prompt.encode(), add_bos=True)
    llm.reset()
    first = last = None
    n = 0
    for _ in llm.generate(tokens, temp=0.0):
        last = time.perf_counter()
        first = first or last
        n += 1
        if n >= max_tokens:
            break
    if first is None or last is None or n < 2:
        return float("nan"), n
    return (n - 1) / max(last - first, 1e-9), n


def main() -> int:
    ap = h.parser(__doc__, "offload")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-layers", type=int, default=-1)
    ap.add_argument("--flash-attn", action="store_true")
    ap.add_argument("--kv-cache-type", choices=["f16", "q8_0", "q4_0"], default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    import llama_cpp

    built = bool(llama_cpp.llama_supports_gpu_offload())
    gpu = LocalModelConfig(
        n_gpu_layers=args.gpu_layers,
        flash_attn=True if args.flash_attn else None,
        kv_cache_type=args.kv_cache_type,
    )
    gpu_kw, warning = offload_kwargs(gpu, built)
    if warning:
        print(f"note: {warning}")
    models = {
        "cpu": h.load_llama(args.threads, n_gpu_layers=0),
        "gpu": h.load_llama(args.threads, **gpu_kw),
    }
    rates: dict[str, list[float]] = {"cpu": [], "gpu": []}
    for i in range(args.rounds):
        order = ["cpu", "gpu"] if i % 2 == 0 else ["gpu", "cpu"]
        for name in order:
            rate, _ = decode_rate(models[name], h.story(i), args.max_tokens)
            rates[name].append(rate)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["gpu"] / med["cpu"] if med["cpu"] else float("nan")
    print(f"gpu offload built: {built}; llama kwargs for the GPU run: {gpu_kw}")
    print(f"cpu  {med['cpu']:.1f} tokens/s (baseline)")
    print(f"gpu  {med['gpu']:.1f} tokens/s  = {ratio:.2f}x the CPU")
    h.write(
        args,
        {
            "gpu_offload_built": built,
            "gpu_kwargs": gpu_kw,
            "tokens_per_s": {k: h.summary(v) for k, v in rates.items()},
            "ratio_gpu_over_cpu": round(ratio, 3),
        },
        model=h.DEFAULT_MODEL_FILE,
        n_threads=args.threads,
        started=started,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
