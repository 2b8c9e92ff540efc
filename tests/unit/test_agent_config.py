"""[agent] and [tools.NAME] (issue 15 B): the pinned TOML shape loads, and every topic a
device tool may publish on is checked at load time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edged.config import Config, load_config
from edged.errors import ConfigError

LIGHT = {
    "description": "Switch a room's light on or off.",
    "parameters": {
        "type": "object",
        "properties": {
            "room": {"type": "string", "enum": ["kitchen", "hall"]},
            "on": {"type": "boolean"},
        },
        "required": ["room", "on"],
    },
    "topic": "home/{room}/light/set",
    "reply_topic": "home/{room}/light/state",
    "timeout_s": 3,
}

# the line, as pinned (one TOML inline table on one line)
PARAMETERS = (
    '{ type = "object", properties = { room = { type = "string", enum = ["kitchen", "hall"] }, '
    'on = { type = "boolean" } }, required = ["room", "on"] }'
)
PINNED = """
[agent]
tool_topic_prefixes = ["home/"]
max_steps = 4

[tools.light_set]
description = "Switch a room's light on or off."
parameters = PARAMETERS
topic = "home/{room}/light/set"
reply_topic = "home/{room}/light/state"
timeout_s = 3
""".replace("PARAMETERS", PARAMETERS)


def cfg(**over: Any) -> Config:
    data: dict[str, Any] = {"agent": {"tool_topic_prefixes": ["home/"]}, "tools": {}}
    data.update(over)
    return Config.model_validate(data)


def test_the_pinned_toml_shape_loads(tmp_path: Path) -> None:
    p = tmp_path / "edged.toml"
    p.write_text(PINNED)
    c = load_config(p, environ={})
    assert c.agent.tool_topic_prefixes == ["home/"] and c.agent.max_steps == 4
    t = c.tools["light_set"]
    assert t.topic == "home/{room}/light/set" and t.reply_topic == "home/{room}/light/state"
    assert t.timeout_s == 3.0 and t.parameters["required"] == ["room", "on"]


def test_defaults_offer_no_device_tools() -> None:
    c = Config()
    assert c.tools == {} and c.agent.tool_topic_prefixes == [] and c.agent.max_steps == 4


@pytest.mark.parametrize(
    ("tool", "words"),
    [
        ({"topic": "garden/{room}/x"}, "not under one of agent.tool_topic_prefixes"),
        ({"topic": "home/{nope}/x"}, "placeholder {nope} is not a declared parameter"),
        ({"topic": "home/+/x"}, "wildcard"),
        ({"topic": "home/#"}, "wildcard"),
        ({"topic": "{room}/x"}, "first topic level must be literal"),
        ({"topic": "home/{room"}, "brace"),
        ({"topic": "home/\x00/x"}, "control characters"),
        ({"reply_topic": "garden/{room}"}, "reply_topic"),
        ({"reply_topic": "edged/dev/x"}, "edged's own prefix"),
        ({"parameters": {"type": "string"}}, "object schema"),
        (
            {"parameters": {"type": "object", "properties": {"r": {"pattern": "x"}}}},
            "pattern",
        ),
        ({"timeout_s": 0}, "timeout_s"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_tools_are_refused_at_load(tool: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError) as e:  # pydantic ValidationError
        cfg(tools={"light_set": {**LIGHT, **tool}})
    assert words in str(e.value)


def test_edged_own_prefix_is_refused_for_prefixes_and_topics() -> None:
    with pytest.raises(Exception, match="edged's own prefix"):
        cfg(agent={"tool_topic_prefixes": ["edged/"]})
    with pytest.raises(Exception, match="edged's own prefix"):
        Config.model_validate(
            {
                "mqtt": {"topic_prefix": "hub"},
                "agent": {"tool_topic_prefixes": ["hub/lights/"]},
            }
        )
    with pytest.raises(Exception, match="edged's own prefix"):
        cfg(
            agent={"tool_topic_prefixes": ["edged"]},
            tools={"t": {"topic": "edged/dev/request"}},
        )


@pytest.mark.parametrize("prefix", ["", "+/", "home/#", "/home"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(Exception, match="prefix"):
        cfg(agent={"tool_topic_prefixes": [prefix]})


def test_a_bad_name_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "edged.toml"
    p.write_text('[agent]\ntool_topic_prefixes = ["home/"]\n[tools."a b"]\ntopic = "home/x"\n')
    with pytest.raises(ConfigError, match=r"tools: .*a tool name"):
        load_config(p, environ={})


def test_tools_without_agent_prefixes_are_refused() -> None:
    with pytest.raises(Exception, match="not under one of"):
        Config.model_validate({"tools": {"light_set": LIGHT}})


def test_max_steps_bounds() -> None:
    with pytest.raises(Exception, match="max_steps"):
        cfg(agent={"tool_topic_prefixes": ["home/"], "max_steps": 0})
    assert cfg(tools={"light_set": LIGHT}).tools["light_set"].timeout_s == 3.0
