"""No module under edged/ grows past about 450 lines (issue 13): a module that long has
more than one job, and the next feature should find a seam instead of a longer file."""

from __future__ import annotations

from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "edged"
LIMIT = 460


def test_no_module_is_over_the_limit() -> None:
    sizes = {
        p.relative_to(PKG).as_posix(): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")
    }
    assert len(sizes) > 50, "the scan sees the package"
    over = {name: n for name, n in sizes.items() if n > LIMIT}
    assert not over, f"modules over {LIMIT} lines: {over}"
