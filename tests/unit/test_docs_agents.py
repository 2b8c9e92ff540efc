"""docs/agents.md's smart-home example holds: its config loads, its pack loads and blocks
the door, its request parses with that config, and its topics fill as it says."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edged.agent.fill import fill_topic
from edged.config import load_config
from edged.guardian.rules import load_pack
from edged.ingress import wire
from edged.types import Request

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "agents.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def test_the_example_config_pack_and_request_hold(tmp_path: Path) -> None:
    config, pack = blocks("toml")[:2]
    (tmp_path / "edged.toml").write_text(config)
    cfg = load_config(tmp_path / "edged.toml", environ={})
    assert cfg.agent.tool_topic_prefixes == ["home/"] and cfg.agent.max_steps == 4
    light = cfg.tools["light_set"]
    args = {"room": "kitchen", "on": True}
    assert fill_topic(light.topic, args) == "home/kitchen/light/set"
    assert light.reply_topic is not None
    assert fill_topic(light.reply_topic, args) == "home/kitchen/light/state"
    (tmp_path / "home.toml").write_text(pack)
    rules = load_pack(tmp_path / "home.toml").tool_rules
    assert [(r.id, r.action, r.tools) for r in rules] == [("door.never", "block", ("unlock_door",))]
    request = blocks("json")[0]
    r = wire.parse_request(
        request.encode(),
        cfg=cfg,
        default_reply_topic=lambda rid: f"edged/{cfg.device_id}/response/{rid}",
        response_topic=None,
        correlation_data=None,
        received_at_s=0.0,
    )
    assert isinstance(r, Request), r
    assert r.device_tools == ("light_set", "unlock_door")
    assert json.loads(request)["device_tools"] == list(cfg.tools)
