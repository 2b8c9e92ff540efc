"""The figures ``edged bench --write-profile`` stores for the router: local tokens/s, time to
first token and J per token on this device.

The router uses measured speeds to decide whether a request can finish before its deadline,
and J per token to weigh serving locally against the radio; until the daemon has served
requests itself, the stored figures stand in. The daemon reads them (:func:`load_figures`);
the ``bench`` command measures and writes them (:mod:`edged.cli.bench`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from edged.config import Config

PROFILE_FILE = "device-profile.json"


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


def write_figures(cfg: Config, figures: DeviceFigures) -> Path:
    """Store the figures atomically for the daemon's router."""
    path = profile_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    os.replace(tmp, path)
    return path
