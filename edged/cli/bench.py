"""``edged bench``: measure this device (local tokens/s, time to first token, J per token
where a power sensor exists) and optionally store the figures for the router
(:mod:`edged.figures`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import TYPE_CHECKING

from edged.cli.common import Commands, load, with_config
from edged.config import Config
from edged.figures import DeviceFigures, write_figures
from edged.types import ChatMessage, ReplyAddress, Request, TextDelta

if TYPE_CHECKING:
    from edged.energy.sampler import Sampler

PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle gear works.",
    "Describe a sunrise over the mountains.",
    "List some tips for a good night's sleep.",
)


async def measure(cfg: Config, runs: int = 4, max_tokens: int = 64) -> DeviceFigures:
    """Run ``runs`` greedy generations on the local model with the power sampler on."""
    # imported here, so that the other commands start without the model and power code
    from edged.backends.llama import LlamaBackend
    from edged.energy.meter import EnergyMeter
    from edged.energy.sampler import Sampler
    from edged.models import load_manifest, resolve
    from edged.power.build import build_source, sample_hz
    from edged.power.detect import select_profile
    from edged.power.profile import load_profiles

    loop = asyncio.get_running_loop()
    entry = load_manifest(cfg.models.manifest).get(cfg.local.model)
    backend = LlamaBackend(name="local", model_path=resolve(entry, cfg.models.dir), cfg=cfg.local)
    await backend.start()

    def build() -> Sampler:
        found = select_profile(cfg.power, load_profiles(cfg.power.profiles_dir))
        profile = found.profile if found else None
        source = build_source(cfg.power, profile, cfg.power.sysfs_root)
        return Sampler(source, sample_hz(cfg.power, profile, source))

    sampler = await loop.run_in_executor(None, build)
    sampler.start()
    meter = EnergyMeter(sampler, idle_w=cfg.power.idle_w)
    await asyncio.sleep(1.0)  # a second of readings before the first window
    rates, ttfts, jpt = [], [], []
    modes: set[str] = set()
    try:
        for i in range(runs):
            req = Request(
                id=f"bench-{i}",
                messages=(ChatMessage("user", PROMPTS[i % 4]),),
                max_tokens=max_tokens,
                temperature=0.0,
                stream=True,
                route="local",
                sensitivity="normal",
                reply=ReplyAddress("reply/bench"),
                received_at_s=time.monotonic(),
            )
            meter.begin(req.id)
            t0 = time.monotonic()
            first = last = None
            n = 0
            async for ev in backend.generate(req):
                if isinstance(ev, TextDelta):
                    last = time.monotonic()
                    first = first or last
                    n += ev.tokens
            report = meter.end(req.id, n)
            latest = sampler.latest
            if latest is not None and latest.power_mode is not None and latest.power_mode.name:
                modes.add(latest.power_mode.name)
            if first is not None and last is not None and n > 1:
                ttfts.append(first - t0)
                rates.append((n - 1) / max(last - first, 1e-9))
            if report.joules is not None and n:
                jpt.append(report.joules / n)
    finally:
        sampler.stop()
        await backend.close()
    if not rates:
        raise RuntimeError("the model produced no tokens to measure")
    return DeviceFigures(
        model=cfg.local.model,
        tokens_per_s=round(statistics.median(rates), 2),
        ttft_s=round(statistics.median(ttfts), 4),
        j_per_token=round(statistics.median(jpt), 5) if jpt else None,
        power_source=sampler.source.name,
        estimated=sampler.source.estimated,
        runs=runs,
        measured_unix_s=round(time.time(), 3),
        # one mode, or None: a run across a mode change is not a figure for either
        power_mode=modes.pop() if len(modes) == 1 else None,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure this device and print the figures (``--write-profile`` stores them)."""
    from edged.accel import board_profile, with_board_defaults

    cfg = load(args)
    cfg = with_board_defaults(cfg, board_profile(cfg))  # [accel]: the board's GPU offload
    print(f"measuring {cfg.local.model}: {args.runs} runs of {args.max_tokens} tokens", flush=True)
    f = asyncio.run(measure(cfg, runs=args.runs, max_tokens=args.max_tokens))
    jpt = (
        f"{f.j_per_token:.4f} J/token ({f.power_source}{', estimated' if f.estimated else ''})"
        if f.j_per_token is not None
        else f"J/token unknown (power source: {f.power_source})"
    )
    mode = f" in power mode {f.power_mode}" if f.power_mode else ""
    print(
        f"local decode {f.tokens_per_s:.1f} tokens/s, time to first token "
        f"{f.ttft_s * 1000:.0f} ms, {jpt}{mode}"
    )
    if args.write_profile:
        path = write_figures(cfg, f)
        print(f"stored for the router: {path}")
    return 0


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged bench``."""
    b = sub.add_parser("bench", help="measure this device: tokens/s, time to first token, J/token")
    with_config(b)
    b.add_argument("--runs", type=int, default=4)
    b.add_argument("--max-tokens", type=int, default=64)
    b.add_argument(
        "--write-profile",
        action="store_true",
        help="store the figures for the router (telemetry.state_dir)",
    )
    b.set_defaults(func=cmd_bench)
