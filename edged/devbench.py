"""``edged bench``: measure this device (local tokens/s, time to first token, J per token
where a power sensor exists) and optionally store the figures for the router.

The router uses measured speeds to decide whether a request can finish before its deadline,
and J per token to weigh serving locally against the radio; until the daemon has served
requests itself, the stored figures stand in.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edged.backends.llama import LlamaBackend
from edged.config import Config
from edged.energy.meter import EnergyMeter
from edged.energy.sampler import Sampler
from edged.models import load_manifest, resolve
from edged.power.hwprofile import build_source, load_profiles, sample_hz, select_profile
from edged.types import ChatMessage, ReplyAddress, Request, TextDelta

PROFILE_FILE = "device-profile.json"
PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle gear works.",
    "Describe a sunrise over the mountains.",
    "List some tips for a good night's sleep.",
)


@dataclass(frozen=True, slots=True)
class DeviceFigures:
    """What ``edged bench`` measured (None where it could not)."""

    model: str
    tokens_per_s: float
    ttft_s: float
    j_per_token: float | None
    power_source: str
    estimated: bool
    runs: int
    measured_unix_s: float


def profile_path(cfg: Config) -> Path:
    """Where the stored figures live (beside the energy counter)."""
    return cfg.telemetry.state_dir / PROFILE_FILE


def load_figures(cfg: Config) -> DeviceFigures | None:
    """The stored figures for the configured model, or None."""
    try:
        data = json.loads(profile_path(cfg).read_text())
        figures = DeviceFigures(**data)
    except (OSError, ValueError, TypeError):
        return None
    return figures if figures.model == cfg.local.model else None


async def measure(cfg: Config, runs: int = 4, max_tokens: int = 64) -> DeviceFigures:
    """Run ``runs`` greedy generations on the local model with the power sampler on."""
    loop = asyncio.get_running_loop()
    entry = load_manifest(cfg.models.manifest).get(cfg.local.model)
    backend = LlamaBackend(name="local", model_path=resolve(entry, cfg.models.dir),
                           cfg=cfg.local)  # fmt: skip
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
    try:
        for i in range(runs):
            req = Request(id=f"bench-{i}", messages=(ChatMessage("user", PROMPTS[i % 4]),),
                          max_tokens=max_tokens, temperature=0.0, stream=True, route="local",
                          sensitivity="normal", reply=ReplyAddress("reply/bench"),
                          received_at_s=time.monotonic())  # fmt: skip
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
    )


def write_figures(cfg: Config, figures: DeviceFigures) -> Path:
    """Store the figures atomically for the daemon's router."""
    path = profile_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    os.replace(tmp, path)
    return path
