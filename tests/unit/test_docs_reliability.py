"""docs/reliability.md names, for each promise, the test that proves it: every test file and
test function it names must exist, so the page cannot drift from the suite."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
REF = re.compile(r"`((?:unit/|integration/)?test_\w+\.py)((?:::\w+)?)`|`::(\w+)`")


def test_every_test_the_reliability_page_names_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    refs = 0
    last_file: Path | None = None
    for m in REF.finditer(text):
        name, func, continued = m.group(1), m.group(2), m.group(3)
        if name is not None:
            sub = name if "/" in name else f"integration/{name}"
            last_file = ROOT / "tests" / sub
            assert last_file.is_file(), f"{name}: no such test file"
            func = func.removeprefix("::")
        else:  # "`::other_test`" continues the file named just before it
            assert last_file is not None, continued
            func = continued
        if func:
            body = last_file.read_text(encoding="utf-8")
            assert re.search(rf"^def {func}\(", body, re.M), f"{last_file.name}::{func} is gone"
        refs += 1
    assert refs >= 40  # the page does name tests
