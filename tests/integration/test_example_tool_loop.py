"""examples/tool_loop.py (paho-mqtt only) and ``edged ask --tools/--json-schema`` against the
real daemon with the fake backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT, Broker, Daemon, run_example

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "tool_loop.py"


def run(broker: Broker, d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_example("tool_loop.py", broker.port, d.device_id, *args)


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


def test_the_whole_loop_a_call_run_here_then_the_answer(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    # the fake backend makes the calls its prompt scripts, and answers a tool turn with
    # "tool said: <its content>": ask -> call -> run it here -> tool turn -> answer
    script = {"tool_calls": [{"name": "set_alarm", "arguments": {"hour": 6, "minute": 30}}]}
    p = run(broker, d, json.dumps(script))
    assert p.returncode == 0, p.stderr
    call_line, answer = p.stdout.splitlines()
    assert call_line.startswith('call set_alarm({"hour": 6, "minute": 30}) -> {"ok": true')
    assert answer == 'tool said: {"ok": true, "alarm": "06:30", "label": ""}'
    assert "[2 turn(s), alarms set: [(6, 30, '')]]" in p.stderr


def test_an_invalid_call_never_reaches_the_loop(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    script = {"tool_calls": [{"name": "set_alarm", "arguments": {"hour": 24, "minute": 0}}]}
    p = run(broker, d, json.dumps(script))
    assert p.returncode == 1
    assert "error tool_call_invalid: " in p.stderr and "hour" in p.stderr
    assert p.stdout == ""  # nothing was run


def test_the_loop_reports_an_error_reply(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    p = run(broker, d, "--tool-choice", "launch_rocket", "Go.")
    assert p.returncode == 1
    assert "error bad_request: tool_choice.function.name" in p.stderr


def ask_cli(broker: Broker, d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edged.cli",
            "ask",
            "--device",
            d.device_id,
            "--port",
            str(broker.port),
            "--timeout-s",
            "30",
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDGED_")},
    )


def test_edged_ask_sends_the_tools_and_the_schema(
    make_daemon: Callable[..., Daemon], broker: Broker, tmp_path: Path
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "get_time"}}]))
    p = ask_cli(broker, d, "--tools", str(tools), "--tool-choice", "auto", "hello")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello\n" and "finish=stop" in p.stderr
    script = json.dumps({"tool_calls": [{"name": "get_time", "arguments": {}, "id": "c7"}]})
    p = ask_cli(broker, d, "--tools", str(tools), "--tool-choice", "required", script)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "\ntool call get_time {} (id c7)\n"
    assert "finish=tool_calls" in p.stderr
    # the daemon read them: a schema outside the subset comes back as its bad_request
    bad = [
        {
            "type": "function",
            "function": {
                "name": "t",
                "parameters": {
                    "type": "object",
                    "properties": {"h": {"type": "integer", "multipleOf": 2}},
                },
            },
        }
    ]
    tools.write_text(json.dumps(bad))
    p = ask_cli(broker, d, "--tools", str(tools), "hello")
    assert p.returncode == 1
    assert (
        "error bad_request: tools[0].function.parameters.properties.h: unsupported JSON "
        'Schema keyword "multipleOf"'
    ) in p.stderr
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "x-extra": 1}))
    p = ask_cli(broker, d, "--json-schema", str(schema), "hello")
    assert p.returncode == 1
    assert "error bad_request: response_format.json_schema.schema: unsupported" in p.stderr
    p = ask_cli(broker, d, "--tools", str(tmp_path / "missing.json"), "hello")
    assert p.returncode == 2 and "edged ask: --tools" in p.stderr
