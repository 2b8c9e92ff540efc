"""Telemetry counts tool calls and blocks (issue 15): the record's ``tools`` through the real
pipeline, agent loop, guardian and reporter (scripted backends, a recording executor in place
of MQTT; tests/integration/test_agent_mqtt.py reads them through the real broker)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from edged.agent.loop import Agent
from edged.config import PolicyConfig, RouterConfig
from edged.energy.meter import NullMeter
from edged.guardian import Guardian, PassGuardian
from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import load_packs
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.telemetry.reporter import EnergyCounter, Reporter
from edged.types import Result, ToolCall, ToolSpec
from tests.unit.doubles import Sink
from tests.unit.test_agent_loop import ALARM, CFG, Recorder, Turns, answer, calls, light, request

ROOT = Path(__file__).resolve().parents[2]
GARAGE = ToolSpec("open_garage", "", {"type": "object", "properties": {}})
PACK = """name = "home"
[[rule]]
id = "door.never"
kind = "tool"
tools = ["unlock_door", "open_garage"]
action = "block"
[[rule]]
id = "notes.ask"
kind = "tool"
tools = ["notes"]
action = "confirm"
"""


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, topic: str, record: dict[str, Any]) -> None:
        self.sent.append((topic, record))


def reporter(tmp_path: Path, sender: Sender | None = None) -> Reporter:
    return Reporter(
        device_id="kitchen-1",
        telemetry_topic="edged/kitchen-1/telemetry",
        events_topic="edged/kitchen-1/events/request",
        sender=sender or Sender(),
        sampler=None,
        counter=EnergyCounter(tmp_path / "energy.json"),
        interval_s=10.0,
        events=sender is not None,
        tool_events_topic="edged/kitchen-1/events/tool",
    )


def serve(rep: Reporter, guardian: Guardian, local: Turns, executor: Recorder, req: Any) -> Any:
    backends: dict[str, Any] = {"local": local}
    router = Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends)
    p = Pipeline(
        guardian=guardian,
        router=router,
        backends=backends,
        meter=NullMeter(),
        agent=Agent(CFG.tools, executor, CFG.agent.max_steps, None, rep.observe_step),
    )
    sink = Sink()

    async def main() -> None:
        await p.handle(req, sink)
        await asyncio.gather(*rep._pending)

    asyncio.run(main())
    [final] = sink.finals
    return final


def valid(snap: dict[str, Any]) -> None:
    """The record's ``tools`` against its part of docs/schemas/telemetry.schema.json (the
    whole record is checked in test_telemetry_schemas.py)."""
    full = json.loads((ROOT / "docs/schemas/telemetry.schema.json").read_text())
    part = {"$defs": full["$defs"], **full["properties"]["tools"]}
    errors = [e.message for e in Draft202012Validator(part).iter_errors(snap["tools"])]
    assert not errors, errors


def test_decisions_and_device_outcomes_are_counted_client_and_device_apart(
    tmp_path: Path,
) -> None:
    rep = reporter(tmp_path)
    pack = tmp_path / "home.toml"
    pack.write_text(PACK)
    guardian = RuleGuardian(load_packs([pack]), audit=rep.observe_tool)
    # one turn of five device calls: published, timed out, blocked, not confirmed, refused
    device = (
        light("kitchen", "c1"),
        light("hall", "c2"),
        ToolCall("c3", "unlock_door", "{}"),
        ToolCall("c4", "notes", "{}"),
        light("+", "c5"),
    )
    local = Turns("local", calls(*device), answer("Done."))
    ex = Recorder({"home/hall/light/state": None})
    res = serve(rep, guardian, local, ex, request("light_set", "unlock_door", "notes"))
    assert isinstance(res, Result), res
    assert [s.outcome for s in res.steps] == ["ok", "timeout", "not_run", "not_run", "not_run"]
    # a client turn: one call allowed, one blocked (left out of the result)
    garage = ToolCall("c6", "open_garage", "{}")
    alarm = ToolCall("c7", "set_alarm", "{}")
    res = serve(
        rep,
        guardian,
        Turns("local", calls(alarm, garage)),
        Recorder(),
        request(client=(ALARM, GARAGE)),
    )
    assert isinstance(res, Result) and res.tool_calls == (alarm,), res
    snap = json.loads(json.dumps(rep.snapshot()))
    valid(snap)
    assert snap["tools"] == {
        "client": {"calls": 2, "allow": 1, "block": 1, "confirm": 0},
        "device": {
            **{"calls": 5, "allow": 3, "block": 1, "confirm": 1},
            **{"published": 2, "timeouts": 1, "not_confirmed": 1, "refused": 1},
        },
        "rules": {"door.never": 2, "notes.ask": 1},
    }
    assert len(ex.calls) == 2  # what "published" counted


def test_a_turn_whose_every_call_is_blocked_is_counted_though_the_request_fails(
    tmp_path: Path,
) -> None:
    rep = reporter(tmp_path)
    pack = tmp_path / "home.toml"
    pack.write_text(PACK)
    guardian = RuleGuardian(load_packs([pack]), audit=rep.observe_tool)
    garage = ToolCall("c1", "open_garage", "{}")
    err = serve(rep, guardian, Turns("local", calls(garage)), Recorder(), request(client=(GARAGE,)))
    assert not isinstance(err, Result) and err.code == "blocked"
    tools = rep.snapshot()["tools"]
    assert tools["client"] == {"calls": 1, "allow": 0, "block": 1, "confirm": 0}
    assert tools["rules"] == {"door.never": 1}


def test_without_rule_packs_every_call_is_counted_and_audited_as_allowed(tmp_path: Path) -> None:
    sender = Sender()
    rep = reporter(tmp_path, sender)
    guardian = PassGuardian(audit=rep.observe_tool)
    local = Turns("local", calls(light()), answer("On."))
    assert isinstance(serve(rep, guardian, local, Recorder(), request("light_set")), Result)
    alarm = ToolCall("c2", "set_alarm", "{}")
    serve(rep, guardian, Turns("local", calls(alarm)), Recorder(), request(client=(ALARM,)))
    tools = rep.snapshot()["tools"]
    assert tools["client"] == {"calls": 1, "allow": 1, "block": 0, "confirm": 0}
    assert tools["device"]["calls"] == tools["device"]["allow"] == tools["device"]["published"] == 1
    assert tools["rules"] == {}
    audit = [r for t, r in sender.sent if t.endswith("/events/tool")]
    assert [(e["tool"], e["decision"], e["rules"]) for e in audit] == [
        ("light_set", "allow", []),
        ("set_alarm", "allow", []),
    ]


def test_a_fresh_record_has_every_count_at_zero(tmp_path: Path) -> None:
    snap = reporter(tmp_path).snapshot()
    valid(json.loads(json.dumps(snap)))
    tools = snap["tools"]
    assert set(tools["client"].values()) == set(tools["device"].values()) == {0}
    assert tools["rules"] == {}
