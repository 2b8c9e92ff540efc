"""docs/boards.md's table of accelerator defaults is the board profiles' [accel]."""

from __future__ import annotations

import re
from pathlib import Path

from edged.power.profile import load_profiles

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "boards.md").read_text()


def rows() -> dict[str, list[str]]:
    block = DOC.split("<!-- accel-table -->")[1].split("<!-- /accel-table -->")[0]
    out = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def test_the_table_is_the_profiles() -> None:
    profiles = load_profiles(ROOT / "hwprofiles")
    table = rows()
    assert set(table) == {n for n, p in profiles.items() if p.accel.n_gpu_layers is not None}
    for name, (layers, fa, cmake, eps) in table.items():
        a = profiles[name].accel
        assert int(layers) == a.n_gpu_layers, name
        assert fa == ("-" if a.flash_attn is None else str(a.flash_attn).lower()), name
        assert cmake == (f"`{a.llama_cmake_args}`" if a.llama_cmake_args else "-"), name
        assert [e.strip() for e in eps.split(",")] == list(a.onnx_providers), name


def test_the_page_says_nothing_ran_on_real_hardware() -> None:
    assert "**Nothing on this page was run on a Jetson, a Snapdragon board or any GPU.**" in DOC
    assert re.search(r"What was \*\*not\*\* tried", DOC)
