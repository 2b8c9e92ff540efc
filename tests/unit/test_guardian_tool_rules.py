"""Tool rules in guardian packs: parsing (bad packs name file, rule and reason), decisions
(block, allow within a schema, confirm, tool_default across packs, rate caps), and the
pipeline (a blocked call never reaches the reply; all blocked is a ``blocked`` error)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from edged.config import PolicyConfig, RouterConfig
from edged.energy.meter import NullMeter
from edged.errors import Blocked, ConfigError
from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import load_pack, load_packs
from edged.ingress import wire
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.types import (
    ChatMessage,
    Finished,
    ReplyAddress,
    Request,
    Result,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    ToolChoice,
    ToolDecision,
    ToolSpec,
    Usage,
)
from tests.helpers import ROOT
from tests.unit.doubles import Script, Sink

HOME = """
name = "home"
tool_default = "allow"

[[rule]]
id = "door.never"
kind = "tool"
tools = ["unlock_door"]
action = "block"

[[rule]]
id = "thermostat.range"
kind = "tool"
tools = ["set_thermostat"]
action = "allow"
max_per_minute = 2
[rule.arguments]
type = "object"
required = ["celsius"]
properties = { celsius = { type = "number", minimum = 16, maximum = 26 } }

[[rule]]
id = "oven.ask"
kind = "tool"
tools = ["oven_on"]
action = "confirm"

[[rule]]
id = "lights.not.garage"
kind = "tool"
tools = ["light_set"]
action = "block"
arguments = { type = "object", properties = { room = { const = "garage" } }, required = ["room"] }

[[rule]]
id = "no-secrets"
kind = "phrase"
action = "block"
phrases = ["launch code"]
"""
STRICT = """
name = "strict"
tool_default = "block"

[[rule]]
id = "lights.ok"
kind = "tool"
tools = ["light_set"]
action = "allow"
"""


def pack(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def guardian(tmp_path: Path, *texts: str, clock: Clock | None = None) -> RuleGuardian:
    paths = [pack(tmp_path, t, f"p{i}.toml") for i, t in enumerate(texts)]
    return RuleGuardian(load_packs(paths), clock=clock or Clock())


def args(**kw: Any) -> str:
    return json.dumps(kw)


# --- parsing ------------------------------------------------------------------------------------


def test_a_pack_holds_text_and_tool_rules_side_by_side(tmp_path: Path) -> None:
    p = load_pack(pack(tmp_path, HOME))
    assert p.tool_default == "allow"
    assert [r.id for r in p.tool_rules] == [
        "door.never",
        "thermostat.range",
        "oven.ask",
        "lights.not.garage",
    ]
    assert [r.id for r in p.text_rules] == ["no-secrets"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('tools = ["x"]\naction = "deny"', "action: Input should be 'block', 'allow' or 'confirm'"),
        ('tools = []\naction = "block"', "tools is empty"),
        ('tools = ["bad name"]\naction = "block"', "are not tool names"),
        ('tools = ["x", "x"]\naction = "block"', "names a tool twice"),
        ('tools = ["x"]\naction = "allow"\nphrases = ["a"]', "phrases: unknown key"),
        (
            'tools = ["x"]\naction = "allow"\narguments = { type = "object", multipleOf = 2 }',
            'arguments: unsupported JSON Schema keyword "multipleOf"',
        ),
        ('tools = ["x"]\naction = "block"\nmax_per_minute = 3', "max_per_minute belongs to"),
        ('tools = ["x"]\naction = "allow"\nmax_per_minute = 0', "max_per_minute"),
    ],
)
def test_a_bad_tool_rule_names_file_rule_and_reason(tmp_path: Path, body: str, reason: str) -> None:
    path = pack(tmp_path, f'name = "x"\n[[rule]]\nid = "r.one"\nkind = "tool"\n{body}\n')
    with pytest.raises(ConfigError) as e:
        load_pack(path)
    msg = str(e.value)
    assert str(path) in msg and "rule 'r.one' (#1)" in msg and reason in msg


def test_a_bad_tool_default_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tool_default"):
        load_pack(pack(tmp_path, 'name = "x"\ntool_default = "deny"\n'))


def test_tool_rule_ids_are_unique_across_packs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'lights\.ok': id already used"):
        load_packs([pack(tmp_path, STRICT, "a.toml"), pack(tmp_path, STRICT, "b.toml")])


# --- decisions ----------------------------------------------------------------------------------


def test_block_allow_in_bounds_and_out_of_bounds(tmp_path: Path) -> None:
    rules = guardian(tmp_path, HOME).tool_rules
    assert rules.decide("unlock_door", "{}").decision == "block"
    assert rules.decide("unlock_door", "{}").rules == ("door.never",)
    assert rules.decide("set_thermostat", args(celsius=21)).decision == "allow"
    out = rules.decide("set_thermostat", args(celsius=30))
    assert (out.decision, out.rules) == ("block", ("thermostat.range",))
    assert rules.decide("set_thermostat", "{}").decision == "block"  # required
    assert rules.decide("anything_else", "{}").decision == "allow"  # tool_default allow


def test_a_block_rule_with_arguments_blocks_only_the_calls_that_match(tmp_path: Path) -> None:
    rules = guardian(tmp_path, HOME).tool_rules
    assert rules.decide("light_set", args(room="garage")).rules == ("lights.not.garage",)
    assert rules.decide("light_set", args(room="hall")).decision == "allow"


def test_confirm_releases_with_the_rule_named(tmp_path: Path) -> None:
    d = guardian(tmp_path, HOME).tool_rules.decide("oven_on", "{}")
    assert (d.decision, d.rules) == ("confirm", ("oven.ask",))


def test_tool_default_block_in_any_pack_blocks_unnamed_tools(tmp_path: Path) -> None:
    rules = guardian(tmp_path, HOME, STRICT).tool_rules
    d = rules.decide("play_music", "{}")
    assert (d.decision, d.rules) == ("block", ("tool_default:strict",))
    # allowed by a rule of another pack: no default applies
    assert rules.decide("set_thermostat", args(celsius=20)).decision == "allow"
    assert rules.decide("light_set", args(room="hall")).decision == "allow"
    # a block in one pack wins over an allow in another
    assert rules.decide("light_set", args(room="garage")).decision == "block"


def test_the_rate_cap_counts_released_calls_in_a_sliding_minute(tmp_path: Path) -> None:
    clock = Clock()
    rules = guardian(tmp_path, HOME, clock=clock).tool_rules
    ok = args(celsius=20)
    assert rules.decide("set_thermostat", ok).decision == "allow"
    clock.t += 10
    assert rules.decide("set_thermostat", ok).decision == "allow"
    assert rules.decide("set_thermostat", args(celsius=99)).decision == "block"  # not counted
    capped = rules.decide("set_thermostat", ok)
    assert (capped.decision, capped.rules) == ("block", ("thermostat.range",))
    clock.t += 50.5  # the first call left the window
    assert rules.decide("set_thermostat", ok).decision == "allow"
    assert rules.decide("set_thermostat", ok).decision == "block"


def test_no_tool_rules_allow_everything(tmp_path: Path) -> None:
    rules = guardian(tmp_path, 'name = "t"\n').tool_rules
    assert rules.empty and rules.decide("unlock_door", "{}").decision == "allow"


# --- the pipeline -------------------------------------------------------------------------------

TOOLS = tuple(
    ToolSpec(n, n, {"type": "object", "properties": {}})
    for n in ("unlock_door", "set_thermostat", "oven_on", "light_set")
)


def serve(g: RuleGuardian, *calls: ToolCall, text: str = "") -> Sink:
    events: list[StreamEvent] = [TextDelta(text)] if text else []
    events += [ToolCalls(calls), Finished("tool_calls", Usage(5, 5))]
    backends = {"local": Script(events)}
    router = Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends)
    p = Pipeline(guardian=g, router=router, backends=backends, meter=NullMeter())
    req = Request(
        id="r1",
        messages=(ChatMessage("user", "make it cosy"),),
        max_tokens=32,
        temperature=0.0,
        stream=True,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
        tools=TOOLS,
        tool_choice=ToolChoice("auto"),
    )
    sink = Sink()
    asyncio.run(p.handle(req, sink))
    assert len(sink.finals) == 1
    return sink


def test_a_blocked_call_is_left_out_and_named_in_the_report(tmp_path: Path) -> None:
    audit: list[ToolDecision] = []
    g = guardian(tmp_path, HOME)
    g.audit = audit.append
    sink = serve(
        g,
        ToolCall("c1", "unlock_door", "{}"),
        ToolCall("c2", "set_thermostat", args(celsius=21)),
        ToolCall("c3", "oven_on", "{}"),
        text="On it.",
    )
    res = sink.finals[0]
    assert isinstance(res, Result) and res.finish_reason == "tool_calls"
    assert [(c.id, c.confirm) for c in res.tool_calls] == [("c2", False), ("c3", True)]
    assert res.guardian is not None
    assert res.guardian.tools == {"door.never": 1, "oven.ask": 1}
    body = json.loads(wire.encode_result(res))
    assert "unlock_door" not in json.dumps(body) and "unlock_door" not in "".join(sink.chunks)
    assert [c.get("confirm") for c in body["tool_calls"]] == [None, True]
    assert body["guardian"]["tools"] == {"door.never": 1, "oven.ask": 1}
    assert [(a.call_id, a.decision, a.rules) for a in audit] == [
        ("c1", "block", ("door.never",)),
        ("c2", "allow", ()),
        ("c3", "confirm", ("oven.ask",)),
    ]
    assert all(a.request_id == "r1" and a.latency_us >= 0 for a in audit)


def test_all_calls_blocked_is_a_blocked_error_naming_the_rules(tmp_path: Path) -> None:
    sink = serve(
        guardian(tmp_path, HOME, STRICT),
        ToolCall("c1", "unlock_door", "{}"),
        ToolCall("c2", "set_thermostat", args(celsius=40)),
    )
    err = sink.finals[0]
    assert isinstance(err, Blocked) and err.code == "blocked"
    assert "door.never" in err.message and "thermostat.range" in err.message
    assert "tool_default:strict" in err.message  # nothing allowed unlock_door
    assert not any("unlock_door" in c for c in sink.chunks)


def test_a_request_without_tool_rules_releases_calls_untouched(tmp_path: Path) -> None:
    sink = serve(guardian(tmp_path, 'name = "t"\n'), ToolCall("c1", "unlock_door", "{}"))
    res = sink.finals[0]
    assert isinstance(res, Result) and [c.id for c in res.tool_calls] == ["c1"]
    assert res.guardian is not None and res.guardian.tools == {}


# --- the shipped example and the command line ------------------------------------------------

EXAMPLE = ROOT / "configs" / "guardian" / "examples" / "tools.toml"


def test_the_example_pack_is_the_one_in_the_docs() -> None:
    doc = (ROOT / "docs" / "guardian.md").read_text(encoding="utf-8")
    block = doc.split("## Tool rules", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    assert block in EXAMPLE.read_text(encoding="utf-8")
    assert [r.id for r in load_pack(EXAMPLE).tool_rules] == [
        "door.never",
        "lights.not.garage",
        "thermostat.range",
        "oven.ask",
    ]


@pytest.mark.parametrize(
    ("argv", "status", "expect"),
    [
        (["--tool", "unlock_door"], 0, {"decision": "block", "rules": ["door.never"]}),
        (["--tool", "set_thermostat", "--args", '{"celsius": 21}'], 0, {"decision": "allow"}),
        (["--tool", "set_thermostat", "--args", '{"celsius": 30}'], 0, {"decision": "block"}),
        (["--tool", "oven_on"], 0, {"decision": "confirm", "rules": ["oven.ask"]}),
        (["--tool", "oven_on", "--args", "[1]"], 1, {}),
        (["--tool", "oven_on", "--args", "{"], 1, {}),
    ],
)
def test_guard_check_decides_one_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    expect: dict[str, Any],
) -> None:
    from edged.cli import main

    cfg = pack(tmp_path, f'[guardian]\npacks = ["{EXAMPLE}"]\n', "edged.toml")
    assert main(["guard", "check", "--config", str(cfg), *argv]) == status
    out = json.loads(capsys.readouterr().out)
    if status:
        assert "error" in out
    else:
        assert out.items() >= expect.items() and out["latency_us"] >= 0, out


def test_a_reload_keeps_the_rate_windows(tmp_path: Path) -> None:
    clock = Clock()
    old = guardian(tmp_path, HOME, clock=clock).tool_rules
    ok = args(celsius=20)
    assert [old.decide("set_thermostat", ok).decision for _ in range(3)] == [
        "allow",
        "allow",
        "block",
    ]
    new = guardian(tmp_path, HOME, clock=clock).tool_rules
    new.adopt(old)
    assert new.decide("set_thermostat", ok).decision == "block"
