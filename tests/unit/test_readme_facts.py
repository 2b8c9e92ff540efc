"""What README.md states about the defaults holds for the code and the shipped config."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from edged.cli.ask import _summary
from edged.config import Config, load_config
from edged.service.layout import service_config_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
README = " ".join((ROOT / "README.md").read_text().split())


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGED_"):
            monkeypatch.delenv(name)


def test_the_guardian_is_on_with_the_shipped_config_and_off_with_the_built_in_defaults() -> None:
    assert "`configs/edged.toml` (the config `make run` and `make install` use) loads" in README
    assert "with the built-in defaults (no config file) no pack is loaded" in README
    shipped = load_config(ROOT / "configs" / "edged.toml")
    assert [p.name for p in shipped.guardian.packs] == ["default.toml"]
    assert Config().guardian.packs == []
    makefile = (ROOT / "Makefile").read_text()
    assert "CONFIG ?= configs/edged.toml" in makefile and "run --config $(CONFIG)" in makefile
    # make install derives /etc/edged/edged.toml from configs/edged.toml, packs included
    installed = tomllib.loads(service_config_text(ROOT / "configs" / "edged.toml"))
    assert [Path(p).name for p in installed["guardian"]["packs"]] == ["default.toml"]


def test_the_showcase_is_the_shipped_config_without_a_cloud() -> None:
    # README's transcript shows reasons=no_cloud: configs/edged.toml configures no cloud
    assert "reasons=no_cloud" in README
    assert not load_config(ROOT / "configs" / "edged.toml").cloud.enabled


def test_the_ask_summary_lines_shown_are_the_ones_edged_ask_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The keys (and their order) of every ``[route=... client_ttft_ms=...]`` line in the
    README and protocol.md are what ``edged ask`` prints."""
    msg = {
        "route": {"backend": "local", "reasons": ["no_cloud"]},
        "finish_reason": "stop",
        "usage": {"completion_tokens": 9},
        "timing_ms": {"queue": 1.0, "ttft": 2.0, "total": 3.0},
    }
    _summary(msg, 0.0, 0.05)
    printed = capsys.readouterr().err.strip()
    keys = re.findall(r"(\w+)=", printed)
    assert keys[0] == "route" and keys[-1] == "client_ttft_ms"
    shown = []
    for doc in (ROOT / "README.md", ROOT / "docs" / "protocol.md"):
        shown += re.findall(r"^\[route=.*\]$", doc.read_text(), re.MULTILINE)
    assert len(shown) >= 2
    for line in shown:
        assert re.findall(r"(\w+)=", line) == keys, line
