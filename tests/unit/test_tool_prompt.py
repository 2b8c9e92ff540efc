"""Tool calls in prompts (edged.tools.generic) and what a request's tools map onto
(edged.grammar.spec): pure code, plus prompts built on the default model's vocabulary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from edged.backends.chat_prompt import PromptBuilder, control_tokens, text_tokenizer
from edged.backends.llama.constrained import held_back
from edged.errors import BadRequest, ToolCallInvalid, Unavailable
from edged.grammar import plan_for
from edged.grammar.llg import LlgEngine
from edged.grammar.spec import closed
from edged.tools import generic
from edged.types import (
    ChatMessage,
    ReplyAddress,
    Request,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

TOOL = ToolSpec(
    "set_timer",
    "Start a timer.",
    {
        "type": "object",
        "properties": {"seconds": {"type": "integer", "minimum": 1, "maximum": 60}},
        "required": ["seconds"],
    },
)
CALL = ToolCall("call_1", "set_timer", '{"seconds": 5}')
HISTORY = (
    ChatMessage("user", "Timer for 5 s."),
    ChatMessage("assistant", "", (CALL,)),
    ChatMessage("tool", "started", tool_call_id="call_1"),
)


def request(**kw: Any) -> Request:
    base: dict[str, Any] = dict(
        id="t",
        messages=HISTORY,
        max_tokens=8,
        temperature=0.0,
        stream=False,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("r"),
        received_at_s=0.0,
    )
    return Request(**{**base, **kw})


def test_generic_messages_list_tools_render_calls_and_results() -> None:
    msgs = generic.generic_messages(HISTORY, (TOOL,), system_prompt="Be brief.", tool_role="tool")
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("Be brief.\n\n")
    assert generic.INSTRUCTIONS in msgs[0]["content"]
    assert json.loads(msgs[0]["content"].splitlines()[-1])["name"] == "set_timer"
    assert msgs[2] == {
        "role": "assistant",
        "content": '<tool_call>{"name":"set_timer","arguments":{"seconds":5}}</tool_call>',
    }
    assert json.loads(msgs[3]["content"]) == {
        "tool_call_id": "call_1",
        "name": "set_timer",
        "content": "started",
    }
    # no tools offered: the history still renders, no tool block, the system prompt added
    plain = generic.generic_messages(HISTORY, (), system_prompt="Hi.", tool_role="user")
    assert plain[0] == {"role": "system", "content": "Hi."} and plain[3]["role"] == "user"


def test_parse_call_round_trips_and_refuses_what_is_not_a_call() -> None:
    call = generic.parse_call(generic.call_text(CALL))
    assert (call.name, json.loads(call.arguments)) == ("set_timer", {"seconds": 5})
    assert call.id.startswith("call_") and call.id != CALL.id
    hermes = generic.parse_call(generic.call_text(CALL, generic.HERMES), generic.HERMES)
    assert hermes.name == "set_timer"
    for bad in [
        "<tool_call>{</tool_call>",
        "<tool_call>[1]</tool_call>",
        '<tool_call>{"name":"x","arguments":3}</tool_call>',
    ]:
        with pytest.raises(ToolCallInvalid):
            generic.parse_call(bad)


def test_held_back_is_the_longest_possible_start_of_the_marker() -> None:
    assert held_back("Sure <tool", "<tool_call>") == 5
    assert held_back("Sure <", "<tool_call>") == 1
    assert held_back("a < b", "<tool_call>") == 0
    assert held_back("", "<tool_call>") == 0


def test_plans_for_each_choice_and_format() -> None:
    other = ToolSpec("other", "", {"type": "object"})
    tools = (TOOL, other)
    req = request(tools=tools, tool_choice=ToolChoice("auto"))
    p = plan_for(req, "<tool_call>", "</tool_call>")
    assert p.mode == "lazy" and p.offer_tools and p.grammar is not None
    assert [a["properties"]["name"]["const"] for a in p.grammar.call["anyOf"]] == [  # type: ignore[index]
        "set_timer",
        "other",
    ]
    p = plan_for(request(tools=tools, tool_choice=ToolChoice("function", "other")), "<", ">")
    assert (
        p.mode == "forced"
        and p.grammar
        and p.grammar.call["properties"]["name"]
        == {  # type: ignore[index]
            "const": "other"
        }
    )
    p = plan_for(request(tools=tools, tool_choice=ToolChoice("none")), "<", ">")
    assert p.mode == "text" and not p.offer_tools
    fmt = ResponseFormat("json_object")
    p = plan_for(
        request(tools=tools, tool_choice=ToolChoice("auto"), response_format=fmt), "<", ">"
    )
    assert p.mode == "forced" and p.grammar and p.grammar.call and p.grammar.answer
    assert "start: call | answer" in p.grammar.lark()
    a = plan_for(request(response_format=fmt), "<", ">").grammar
    b = plan_for(request(response_format=ResponseFormat("json_object")), "<", ">").grammar
    assert a is not None and b is not None and a.key == b.key  # one compiled grammar
    with pytest.raises(BadRequest, match="not in tools"):
        plan_for(request(tools=tools, tool_choice=ToolChoice("function", "nope")), "<", ">")


def test_no_llguidance_is_a_clear_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llguidance", None)  # import fails
    with pytest.raises(Unavailable, match="llguidance does not import"):
        LlgEngine(vocab=None)


QWENISH = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\n{%- for t in tools %}\n"
    "{{ t | tojson }}{%- endfor %}\n</tools>\nCall with <tool_call>\n{}\n</tool_call>"
    "<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{%- if m.tool_calls %}{%- for c in m.tool_calls %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
    "\n</tool_call>{%- endfor %}{%- endif %}<|im_end|>\n{%- endfor %}"
    "<|im_start|>assistant\n"
)


def test_a_template_that_takes_tools_gets_them_and_client_text_stays_text(
    model_file: Path,
) -> None:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    assert generic.detect_format(QWENISH) is generic.HERMES
    assert generic.detect_format("{{ messages }}<tool_call>") is generic.GENERIC
    assert generic.detect_format(None) is generic.GENERIC
    llm = Llama(model_path=str(model_file), vocab_only=True, verbose=False)
    fmt = Jinja2ChatFormatter(template=QWENISH, eos_token="", bos_token="")
    builder = PromptBuilder(
        render=lambda messages, **extra: fmt(messages=messages, **extra).prompt,
        tokenize_text=text_tokenizer(llm._model.vocab),
        control_tokens=control_tokens(llm._model.vocab),
    )
    msgs = generic.template_messages(HISTORY, system_prompt=None)
    ids = builder.tokens(msgs, {"tools": generic.template_tools((TOOL,))})
    text = llm.detokenize(ids, special=True).decode()
    assert '"name": "set_timer", "description": "Start a timer."' in text
    assert '<tool_call>\n{"name": "set_timer", "arguments": {"seconds": 5}}\n</tool_call>' in text
    with pytest.raises(BadRequest, match="control token"):
        builder.check_text('{"description": "<|im_end|>"}', "tools")


def test_objects_with_properties_are_closed_for_generation() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
            "c": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"d": {"type": "null"}},
                    "additionalProperties": True,
                },
            },
        },
    }
    out = closed(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert out["properties"]["c"]["items"]["additionalProperties"] is True  # said: kept
    assert closed({"type": "object"}) == {"type": "object"}  # no properties: stays open
    assert closed({"type": "object", "properties": {}})["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the request's schema is not touched
