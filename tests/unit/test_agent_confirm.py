"""Asking before acting (issue 15 A's confirm, for device tools): the confirm message, the
answer's strict shape, approval, denial and no answer (a denial)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from edged.agent.confirm import MqttApprover, parse_confirm
from edged.agent.loop import Agent
from edged.config import PolicyConfig, RouterConfig
from edged.energy.meter import NullMeter
from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import load_packs
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.types import ChatMessage, ReplyAddress, Request, Result, ToolCall, ToolChoice
from tests.unit.doubles import Sink
from tests.unit.test_agent_loop import CFG, Recorder, Turns, answer, calls, light, request

CALL = ToolCall("call_1", "light_set", '{"room":"kitchen","on":true}')


def req() -> Request:
    return Request(
        id="r1",
        messages=(ChatMessage("user", "x"),),
        max_tokens=8,
        temperature=0.0,
        stream=True,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/app", b"corr"),
        received_at_s=time.monotonic(),
        tool_choice=ToolChoice("auto"),
    )


def test_a_confirm_answer_is_parsed_strictly() -> None:
    assert parse_confirm(b'{"id": "r1", "call_id": "c1", "approve": true}') == ("r1", "c1", True)
    for bad in (
        b'{"id": "r1", "call_id": "c1"}',
        b'{"id": "r1", "call_id": "c1", "approve": "yes"}',
        b'{"id": "r 1", "call_id": "c1", "approve": true}',
        b'{"id": "r1", "call_id": "c1", "approve": true, "x": 1}',
        b"[]",
        b"\xff",
        b"{" * 2000,
    ):
        with pytest.raises(ValueError):
            parse_confirm(bad)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([b'{"id": "r1", "call_id": "call_1", "approve": true}'], True),
        ([b'{"id": "r1", "call_id": "call_1", "approve": false}'], False),
        # answers for another request or call, or malformed ones, are ignored: no answer
        ([b'{"id": "r2", "call_id": "call_1", "approve": true}', b"junk"], False),
    ],
)
def test_approval_denial_and_no_answer(answers: list[bytes], expected: bool) -> None:
    sent: list[tuple[ReplyAddress, bytes]] = []

    async def main() -> bool:
        ap = MqttApprover(lambda a, p: sent.append((a, p)), timeout_s=0.2)

        async def answer_later() -> None:
            await asyncio.sleep(0.02)
            for a in answers:
                ap.on_confirm(a)

        task = asyncio.create_task(answer_later())
        got = await ap.approve(req(), CALL, ("light.ask",))
        await task
        return got

    assert asyncio.run(main()) is expected
    [(addr, body)] = sent
    assert addr == ReplyAddress("reply/app", b"corr")
    assert json.loads(body) == {
        "id": "r1",
        "type": "confirm",
        "call_id": "call_1",
        "tool": "light_set",
        "arguments": CALL.arguments,
        "rules": ["light.ask"],
    }


class Yes:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    async def approve(self, request: Request, call: ToolCall, rules: tuple[str, ...]) -> bool:
        self.asked.append((call.name, rules))
        return self.answer


@pytest.mark.parametrize("approved", [True, False])
def test_a_confirm_call_runs_only_when_approved(tmp_path: Path, approved: bool) -> None:
    p = tmp_path / "home.toml"
    p.write_text(
        'name = "home"\n[[rule]]\nid = "light.ask"\nkind = "tool"\n'
        'tools = ["light_set"]\naction = "confirm"\n'
    )
    g = RuleGuardian(load_packs([p]))
    local = Turns("local", calls(light()), answer("ok"))
    ex, yes = Recorder(), Yes(approved)
    backends: dict[str, Any] = {"local": local}
    router = Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends)
    pipe = Pipeline(
        guardian=g,
        router=router,
        backends=backends,
        meter=NullMeter(),
        agent=Agent(CFG.tools, ex, 3, yes),
    )
    sink = Sink()
    asyncio.run(pipe.handle(request("light_set"), sink))
    [res] = sink.finals
    assert isinstance(res, Result), res
    assert yes.asked == [("light_set", ("light.ask",))]
    assert len(ex.calls) == (1 if approved else 0)
    step = res.steps[0]
    assert step.decision == "confirm"
    assert step.outcome == ("ok" if approved else "not_run")
