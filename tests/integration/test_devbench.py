"""`edged bench` on the real model, with a trace as the power source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edged.config import load_config
from tests.helpers import MANIFEST, MODELS_DIR, ROOT, TEST_N_THREADS

pytestmark = pytest.mark.integration


def test_bench_measures_and_stores_figures_the_router_uses(
    model_file: Path, tmp_path: Path
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t_s,power_w\n0,6.0\n1000,6.0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env.update(
        {
            "EDGED_MODELS__DIR": str(MODELS_DIR),
            "EDGED_MODELS__MANIFEST": str(MANIFEST),
            "EDGED_LOCAL__N_THREADS": str(TEST_N_THREADS),
            "EDGED_POWER__SOURCE": "trace",
            "EDGED_POWER__TRACE_FILE": str(trace),
            "EDGED_TELEMETRY__STATE_DIR": str(tmp_path),
        }
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged.cli",
            "bench",
            "--runs",
            "2",
            "--max-tokens",
            "24",
            "--write-profile",
            "--config",
            "configs/edged.toml",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "tokens/s" in out.stdout and "J/token (trace, estimated)" in out.stdout
    figures = json.loads((tmp_path / "device-profile.json").read_text())
    assert figures["model"] == "smollm2-135m-instruct" and figures["runs"] == 2
    # bounds for sane units, not speed: 2 decode threads on a loaded 2-core machine made 1.4
    assert figures["tokens_per_s"] > 0.5 and 0 < figures["ttft_s"] < 5
    # 6 W for the time of one token (plus a share of prompt evaluation)
    per_token_s = 1 / figures["tokens_per_s"]
    assert 6.0 * per_token_s * 0.8 < figures["j_per_token"] < 6.0 * (per_token_s + 0.5)
    # the daemon picks them up: the router's local figures and J per token
    from edged.app import App

    cfg = load_config(
        ROOT / "configs" / "edged.toml",
        environ={"EDGED_TELEMETRY__STATE_DIR": str(tmp_path), "EDGED_LOCAL__BACKEND": "fake"},
    )
    app = App(cfg)
    stats = app.routers.local_stats()
    assert stats.tokens_per_s == figures["tokens_per_s"] and stats.ttft_s == figures["ttft_s"]
    assert app.pipeline.router.cfg.local_j_per_token == figures["j_per_token"]  # type: ignore[attr-defined]
