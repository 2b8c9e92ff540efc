"""scripts/llama-cmake-args.sh: CUDA on a Jetson with the CUDA toolkit, the CPU build
everywhere else; run against fake roots (JETSON_ROOT), never this machine's /."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "llama-cmake-args.sh"
# /etc/nv_tegra_release as L4T writes it (first line), JetPack 6.2 / L4T 36.4.3
RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"


def run(root: Path | None, **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/bin:/bin", **env}
    if root is not None:
        full["JETSON_ROOT"] = str(root)
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=full, check=True, timeout=30
    )


def jetson(
    tmp_path: Path, *, nvcc: bool, model: str = "NVIDIA Jetson Orin Nano Developer Kit"
) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(RELEASE)
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    if nvcc:
        bin_dir = root / "usr" / "local" / "cuda" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "nvcc").write_text("#!/bin/sh\n")
        os.chmod(bin_dir / "nvcc", 0o755)
    return root


def test_orin_with_cuda_builds_for_sm87(tmp_path: Path) -> None:
    root = jetson(tmp_path, nvcc=True)
    p = run(root)
    nvcc = root / "usr/local/cuda/bin/nvcc"
    assert p.stdout.split() == [
        "-DGGML_CUDA=on",
        f"-DCMAKE_CUDA_COMPILER={nvcc}",
        "-DCMAKE_CUDA_ARCHITECTURES=87",
    ]
    assert "L4T 36.4.3, JetPack 6.2" in p.stderr


def test_xavier_builds_for_sm72(tmp_path: Path) -> None:
    p = run(jetson(tmp_path, nvcc=True, model="NVIDIA Jetson Xavier NX Developer Kit"))
    assert "-DCMAKE_CUDA_ARCHITECTURES=72" in p.stdout


def test_jetson_without_the_toolkit_stays_on_the_cpu_and_says_so(tmp_path: Path) -> None:
    p = run(jetson(tmp_path, nvcc=False))
    assert p.stdout == ""
    assert "no nvcc" in p.stderr and "CPU build" in p.stderr


def test_not_a_jetson_is_todays_cpu_build(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    p = run(tmp_path)
    assert p.stdout == "" and p.stderr == ""


def test_the_cpu_build_can_be_forced(tmp_path: Path) -> None:
    p = run(jetson(tmp_path, nvcc=True), EDGED_LLAMA_CPU="1")
    assert p.stdout == ""


@pytest.mark.skipif(Path("/etc/nv_tegra_release").exists(), reason="this machine is a Jetson")
def test_this_machine_gets_the_cpu_build() -> None:
    assert run(None).stdout == ""


def test_make_passes_the_args_to_pip() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert (
        makefile.count("$${CMAKE_ARGS-$$(scripts/llama-cmake-args.sh)}") == 3
    )  # deps, llama-gpu, install
