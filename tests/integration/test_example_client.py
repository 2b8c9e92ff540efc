"""examples/voice_client.py (paho-mqtt only, no edged code) against the real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.helpers import ROOT, Broker, Daemon
from tests.helpers import run_example as run_script

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "voice_client.py"


def run_example(broker: Broker, d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_script("voice_client.py", broker.port, d.device_id, *args, timeout_s=60)


def test_example_client_streams_the_answer_and_prints_the_result(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    # the fake backend streams a JSON list of strings back one chunk per string
    chunks = ["The sky", " is", " blue."]
    p = run_example(broker, d, json.dumps(chunks))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "The sky is blue."
    assert lines[1].startswith("route:  local (")
    assert lines[2].startswith("timing: queue ") and "first token" in lines[2]
    assert lines[3].startswith("tokens: ") and "finish stop" in lines[3]
    assert lines[4].startswith("energy: ")


def test_example_client_reports_an_error_reply(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    p = run_example(broker, d, "--max-tokens", "1000000", "Hello")
    assert p.returncode == 1
    assert "error bad_request: max_tokens" in p.stderr


def test_example_client_without_a_device_gives_up(broker: Broker) -> None:
    p = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--port",
            str(broker.port),
            "--device",
            "nobody-here",
            "--timeout-s",
            "1",
            "Hello",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert p.returncode == 2
    assert "no reply within 1 s" in p.stderr
