"""Tool calls in a chat prompt, and a generated call parsed back.

Two formats (docs/tools.md, "Local models"):

- **generic**, for a chat template that takes no ``tools`` (SmolLM2's plain ChatML): the
  system message gets a block listing the tools as JSON lines and saying how to call one; a
  call is written ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; an assistant
  turn with calls is rendered as that text; a ``tool`` turn becomes the JSON text
  ``{"tool_call_id": ..., "name": ..., "content": ...}`` in a turn of the template's tool role
  (``tool`` where the template renders it, else ``user``).
- **hermes**, for a template that takes ``tools`` and writes ``<tool_call>`` (Hermes, Qwen2.5):
  the tools and the calls go to the template itself; a call is
  ``<tool_call>\\n{json}\\n</tool_call>``.

Everything a client wrote stays message content here, so the prompt builder tokenizes it as
text (``edged.backends.chat_prompt``): no tool description or result becomes a control token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edged.errors import ToolCallInvalid
from edged.types import ChatMessage, ToolCall, ToolSpec


@dataclass(frozen=True, slots=True)
class CallFormat:
    """How calls are written: ``open`` JSON ``close``; ``template_tools``: the chat template
    renders the tools and the calls itself."""

    name: str
    open: str
    close: str
    template_tools: bool


GENERIC = CallFormat("generic", "<tool_call>", "</tool_call>", template_tools=False)
HERMES = CallFormat("hermes", "<tool_call>\n", "\n</tool_call>", template_tools=True)

#: The instructions before the tool list (generic format).
INSTRUCTIONS = (
    "You can call tools. To call one, reply with "
    '<tool_call>{"name": <tool name>, "arguments": <JSON object>}</tool_call> '
    "and nothing else. Tools:"
)


def template_variables(template: str) -> set[str]:
    """The variables a Jinja chat template reads (empty if it does not parse)."""
    import jinja2
    import jinja2.meta

    try:
        return set(jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template)))
    except jinja2.TemplateError:
        return set()


def detect_format(template: str | None) -> CallFormat:
    """The call format for a chat template: hermes when it takes ``tools`` and writes
    ``<tool_call>``; generic otherwise (no template, no ``tools``, or an unknown family)."""
    if template and "<tool_call>" in template and "tools" in template_variables(template):
        return HERMES
    return GENERIC


def compact(value: Any) -> str:
    """Compact JSON text (what the grammar makes the model write)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tools_block(tools: Sequence[ToolSpec]) -> str:
    """The generic format's system block: instructions and one JSON line per tool."""
    lines = [INSTRUCTIONS]
    for t in tools:
        lines.append(
            compact({"name": t.name, "description": t.description, "parameters": t.parameters})
        )
    return "\n".join(lines)


def call_text(call: ToolCall, fmt: CallFormat = GENERIC) -> str:
    """One call as the model writes it."""
    # an earlier turn's broken arguments are shown as the string they were
    return f"{fmt.open}{compact({'name': call.name, 'arguments': _arguments(call)})}{fmt.close}"


def generic_messages(
    messages: Sequence[ChatMessage],
    tools: Sequence[ToolSpec],
    *,
    system_prompt: str | None,
    tool_role: str,
) -> list[dict[str, str]]:
    """``messages`` as role/content pairs in the generic format. ``tools`` (empty: none
    offered) are listed in the system message, the request's or ``system_prompt``."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[dict[str, str]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = "".join(call_text(c) for c in m.tool_calls)
            out.append(
                {"role": "assistant", "content": f"{m.content}\n{calls}" if m.content else calls}
            )
        elif m.role == "tool":
            body = {
                "tool_call_id": m.tool_call_id,
                "name": names.get(m.tool_call_id or ""),
                "content": m.content,
            }
            out.append({"role": tool_role, "content": compact(body)})
        else:
            out.append({"role": m.role, "content": m.content})
    if tools:
        block = tools_block(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}"}
        else:
            head = f"{system_prompt}\n\n{block}" if system_prompt else block
            out.insert(0, {"role": "system", "content": head})
    elif system_prompt and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def parse_call(text: str, fmt: CallFormat = GENERIC) -> ToolCall:
    """The call in ``text`` (``open`` JSON ``close``, as the grammar made the model write
    it) with a fresh id; ToolCallInvalid when it is not one."""
    body = text.strip()
    if body.startswith(fmt.open.strip()):
        body = body[len(fmt.open.strip()) :]
    if body.endswith(fmt.close.strip()):
        body = body[: -len(fmt.close.strip())]
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise ToolCallInvalid(f"the local model's tool call is not JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ToolCallInvalid("the local model's tool call has no name")
    args = obj.get("arguments", {})
    if not isinstance(args, dict):
        raise ToolCallInvalid("the local model's tool call arguments are not a JSON object")
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=obj["name"], arguments=compact(args))


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        return call.arguments


def template_messages(
    messages: Sequence[ChatMessage], *, system_prompt: str | None
) -> list[dict[str, Any]]:
    """``messages`` for a template that takes tools (hermes): calls as the OpenAI shape
    (``tool_calls[i].function.arguments`` an object), tool turns with ``tool_call_id``."""
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _arguments(c)},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    if system_prompt and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def template_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """``tools`` in the OpenAI shape, for a template that takes them."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]
