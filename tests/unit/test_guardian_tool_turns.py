"""A tool's result is untrusted input: the guardian's input rules read ``tool`` turns as they
read user turns, and redacting one keeps its ``tool_call_id`` (and an assistant turn keeps
its calls)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edged.errors import Blocked
from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import load_packs
from edged.types import ChatMessage, ReplyAddress, Request, ToolCall, ToolChoice, ToolSpec

ROOT = Path(__file__).resolve().parents[2]
G = RuleGuardian(
    load_packs(
        [ROOT / "configs/guardian/examples/phrases.toml", ROOT / "configs/guardian/default.toml"]
    )
)
CALL = ToolCall("call_1", "read_notes", "{}")


def request(tool_result: str) -> Request:
    return Request(
        id="g1",
        messages=(
            ChatMessage("user", "read my notes"),
            ChatMessage("assistant", "", tool_calls=(CALL,)),
            ChatMessage("tool", tool_result, tool_call_id="call_1"),
        ),
        max_tokens=16,
        temperature=0.0,
        stream=True,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
        tools=(ToolSpec("read_notes", "", {"type": "object", "properties": {}}),),
        tool_choice=ToolChoice("auto"),
    )


def test_a_block_rule_fires_on_a_tool_result() -> None:
    with pytest.raises(Blocked, match=r"phrase\.launch-codes"):
        asyncio.run(G.check_input(request("the launch codes are 1234")))


def test_a_force_local_rule_on_a_tool_result_keeps_the_next_step_on_the_device() -> None:
    assert asyncio.run(G.check_input(request("notes: my diagnosis is fine"))).force_local
    assert asyncio.run(G.check_input(request("mail alice@example.com"))).force_local


def test_redacting_a_tool_result_keeps_the_turns_shape(tmp_path: Path) -> None:
    pack = tmp_path / "redact.toml"
    pack.write_text(
        'name = "t"\n[[rule]]\nid = "phrase.codename"\nkind = "phrase"\naction = "redact"\n'
        'applies_to = "input"\nphrases = ["project falcon"]\n'
    )
    g = RuleGuardian(load_packs([pack]))
    verdict = asyncio.run(g.check_input(request("status of project falcon: late")))
    assert verdict.actions == {"phrase.codename": 1}
    tool = verdict.request.messages[2]
    assert "falcon" not in tool.content and "late" in tool.content
    assert tool.role == "tool" and tool.tool_call_id == "call_1"
    assert verdict.request.messages[1].tool_calls == (CALL,)
    assert verdict.request.tools == request("x").tools


def test_a_harmless_tool_result_passes_unchanged() -> None:
    req = request("6:30 alarm set")
    verdict = asyncio.run(G.check_input(req))
    assert verdict.request == req and not verdict.force_local
