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
from dataclasses import asdict, dataclass, field, replace
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
    #: The board's power mode (Jetson nvpmodel name) during the run; None: no modes.
    power_mode: str | None = None
    #: Figures per power mode, kept across runs in different modes: name -> tokens_per_s,
    #: j_per_token, tokens_per_j (None where unknown), measured_unix_s.
    by_mode: dict[str, dict[str, float | None]] = field(default_factory=dict)


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


def with_mode(figures: DeviceFigures, previous: DeviceFigures | None) -> DeviceFigures:
    """``figures`` with its power mode's entry in ``by_mode``, added to the entries of the
    other modes stored before (``previous``, same model)."""
    by_mode = dict(previous.by_mode) if previous is not None else {}
    if figures.power_mode is not None:
        jpt = figures.j_per_token
        by_mode[figures.power_mode] = {
            "tokens_per_s": figures.tokens_per_s,
            "j_per_token": jpt,
            "tokens_per_j": round(1.0 / jpt, 3) if jpt else None,
            "measured_unix_s": figures.measured_unix_s,
        }
    return replace(figures, by_mode=by_mode)


def write_figures(cfg: Config, figures: DeviceFigures) -> Path:
    """Store the figures atomically for the daemon's router (the entries of other power
    modes measured before are kept: :func:`with_mode`)."""
    figures = with_mode(figures, load_figures(cfg))
    path = profile_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    os.replace(tmp, path)
    return path
