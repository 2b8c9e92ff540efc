"""examples/tool_loop.py (paho-mqtt only) against the real daemon with the fake backend."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.helpers import ROOT, Broker, Daemon

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "tool_loop.py"


def run(broker: Broker, d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--port",
            str(broker.port),
            "--device",
            d.device_id,
            "--timeout-s",
            "30",
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )


def test_the_loop_offers_its_tools_and_ends_on_a_text_answer(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    # the fake backend answers in text (it echoes the last user turn): one turn, no call;
    # the request with the tools was accepted, or the daemon would have said why
    p = run(broker, d, "Wake me at 6:30.")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["Wake me at 6:30."]
    assert "[1 turn(s), alarms set: []]" in p.stderr


def test_the_loop_reports_an_error_reply(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    p = run(broker, d, "--tool-choice", "launch_rocket", "Go.")
    assert p.returncode == 1
    assert "error bad_request: tool_choice.function.name" in p.stderr
