"""`edged doctor` end to end: the real CLI, the shipped config and profiles, a fake sysfs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, Broker

pytestmark = pytest.mark.integration

NANO = "tests/fixtures/sysfs/jetson-orin-nano"


BROKER_PORT: list[int] = []  # set by the autouse fixture: doctor also checks the broker


@pytest.fixture(autouse=True)
def _broker_port(broker: Broker) -> None:
    BROKER_PORT[:] = [broker.port]


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env = {"EDGED_MQTT__PORT": str(BROKER_PORT[0]), **env}
    return subprocess.run(
        [sys.executable, "-m", "edged.cli", "doctor", "--config", "configs/edged.toml", *args],
        check=False,
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_doctor_on_an_orin_nano_tree_is_healthy(model_file: Path) -> None:
    r = doctor("--sysfs-root", NANO)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "profile: jetson-orin-nano" in out
    assert "device-tree compatible 'nvidia,p3767-0005'" in out
    assert "power source: ina3221" in out
    for rail in ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"):
        assert rail in out
    assert "total 6.02 W" in out  # 4.984 V x 1.208 A
    assert "smollm2-135m-instruct (needed)" in out
    assert "guardian packs: 1 loaded" in out
    assert out.rstrip().endswith("ok")


def test_doctor_names_a_missing_pack_and_fails(model_file: Path) -> None:
    r = doctor("--sysfs-root", NANO, EDGED_GUARDIAN__PACKS='["/nope.toml"]')
    assert r.returncode != 0
    problems = [line for line in r.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, r.stdout
    assert "/nope.toml" in problems[0] and "not found" in problems[0]
    assert "Fix:" in problems[0]


def test_doctor_fails_when_a_configured_source_cannot_read(tmp_path: Path) -> None:
    # power.source asks for INA3221 rails, the tree has none: one problem line, exit 1
    r = doctor(
        "--sysfs-root",
        "tests/fixtures/sysfs/coral-dev-board",
        EDGED_POWER__SOURCE="ina3221",
        EDGED_LOCAL__BACKEND="fake",
    )
    assert r.returncode == 1, r.stdout + r.stderr
    problems = [line for line in r.stdout.splitlines() if line.startswith("problem:")]
    assert problems and all("Fix:" in p for p in problems)
    assert any("ina3221" in p for p in problems)


def test_doctor_names_an_unreachable_broker() -> None:
    from tests.helpers import free_port

    r = doctor("--sysfs-root", NANO, EDGED_MQTT__PORT=str(free_port()))
    assert r.returncode == 1
    assert "MQTT broker" in r.stdout and "does not answer" in r.stdout and "Fix:" in r.stdout


def test_doctor_reports_the_broker_and_cloud(model_file: Path) -> None:
    r = doctor(
        "--sysfs-root",
        NANO,
        EDGED_CLOUD__ENABLED="true",
        EDGED_CLOUD__BASE_URL="http://127.0.0.1:9/v1",
    )
    assert "MQTT v5 ok" in r.stdout
    assert "cloud: http://127.0.0.1:9/v1: unreachable" in r.stdout  # not fatal: stays local


def test_doctor_on_an_orin_nano_super_shows_offload_ep_and_power_mode(
    model_file: Path, tmp_path: Path
) -> None:
    import shutil

    import llama_cpp

    root = tmp_path / "root"
    shutil.copytree(ROOT / NANO, root)
    shutil.copytree(ROOT / "tests/fixtures/sysfs/jetson-orin-nano-super", root, dirs_exist_ok=True)
    r = doctor("--sysfs-root", str(root))
    out = r.stdout
    assert "n_gpu_layers=-1, flash_attn=True (defaults from jetson-orin-nano)" in out
    assert "onnxruntime " in out and "embeddings on " in out
    assert "power mode" in out and "25W (id 1, from status, gpu 918 MHz, cpu0 1344 MHz)" in out
    if not llama_cpp.llama_supports_gpu_offload():
        assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in out and "the local model runs on the CPU" in out
        # the profile suggested the GPU: a warning, not a problem
        assert r.returncode == 0, out + r.stderr
        asked = doctor("--sysfs-root", str(root), EDGED_LOCAL__N_GPU_LAYERS="-1")
        assert asked.returncode == 1
        assert "Fix: rebuild it, or set [local] n_gpu_layers = 0" in asked.stdout


def test_doctor_checks_every_named_backend_and_policy_orders(model_file: Path) -> None:
    import json

    from tests.scripted_cloud import ScriptedCloud

    lan = ScriptedCloud()
    lan.start()
    try:
        backends = {
            "edge": {"kind": "openai", "trust": "lan", "base_url": lan.base_url, "model": "m"},
            "far": {
                "kind": "openai",
                "trust": "public",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "m",
            },
            "gemma": {"kind": "llama", "trust": "device", "model": "no-such-model"},
        }
        order = json.dumps({"odd": {"order": ["lan", "nowhere"]}})
        r = doctor(
            "--sysfs-root", NANO, EDGED_BACKENDS=json.dumps(backends), EDGED_ROUTER__POLICIES=order
        )
    finally:
        lan.stop()
    out = r.stdout
    assert "backend edge (lan): " in out and lan.base_url in out
    assert "backend far (public): http://127.0.0.1:9/v1: unreachable" in out
    assert "backend gemma (device): model no-such-model: MISSING" in out
    assert r.returncode == 1
    assert "problem: backend gemma:" in out
    assert "problem: policy odd: order names ['nowhere']" in out
    assert "problem: backend far" not in out  # a remote that is down is routed around
