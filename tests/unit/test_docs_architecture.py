"""docs/architecture.md's layout names every module under edged/, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "edged"
DOC = ROOT / "docs" / "architecture.md"


def layout() -> dict[str, str]:
    """The layout block as {entry: its text}: "" for the top-level modules, "guardian" for
    ``guardian/``, and so on (``mqtt/link.py`` counts for ``mqtt``)."""
    text = DOC.read_text()
    start = text.index("```\nedged/\n") + len("```\nedged/\n")
    block = text[start : text.index("```", start)]
    entries: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        m = re.match(r"^  (\S+)", line)
        if m:
            first = m.group(1)
            current = first.split("/")[0] if "/" in first else ""
        entries[current] = entries.get(current, "") + "\n" + line
    return entries


def named(text: str) -> set[str]:
    """Module names a stretch of the layout mentions: ``rules.py``, ``ina3221``, ``__init__``."""
    return {w.removesuffix(".py") for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:\.py)?", text)}


def test_every_module_is_in_the_layout() -> None:
    entries = layout()
    missing = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.name == "__init__.py":
            continue  # a package's __init__ is named with the package
        pkg = rel.parts[0] if len(rel.parts) > 1 else ""
        if pkg not in entries or path.stem not in named(entries[pkg]):
            missing.append(str(rel))
    assert not missing, f"not in docs/architecture.md's layout: {missing}"


def test_every_file_the_layout_names_exists() -> None:
    for pkg, text in layout().items():
        for name in re.findall(r"([a-z_][a-z0-9_]*)\.py", text):
            if "/" in name:
                continue
            here = PKG / pkg / f"{name}.py" if pkg else PKG / f"{name}.py"
            assert here.is_file(), f"docs/architecture.md names {here.relative_to(ROOT)}"


def test_the_layout_is_read() -> None:
    entries = layout()
    assert {"", "backends", "router", "guardian", "mqtt", "power"} <= set(entries)
    assert "process" in named(entries["backends"])
