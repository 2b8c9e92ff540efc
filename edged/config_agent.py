"""``[agent]`` and ``[tools.NAME]``: device tools that edged executes over MQTT (issue 15 B,
docs/agents.md). Split out of config.py, which holds the two fields and re-exports these.

```toml
[agent]
tool_topic_prefixes = ["home/"]  # device tools may publish only under these
max_steps = 4                    # model turns per request

[tools.light_set]
description = "Switch a room's light on or off."
parameters = { type = "object", properties = { room = { type = "string" } }, required = ["room"] }
topic = "home/{room}/light/set"          # {name} placeholders come from the arguments
reply_topic = "home/{room}/light/state"  # optional: the first message here is the result
timeout_s = 3
```

Checked at load: every ``parameters`` is an object schema of the supported subset
(edged.tools.schema); every ``{name}`` placeholder is a declared parameter; ``topic`` and
``reply_topic`` lie under one of ``tool_topic_prefixes`` (their first level has no
placeholder) and never under edged's own ``mqtt.topic_prefix``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edged.errors import BadRequest
from edged.tools.schema import TOOL_NAME_RE, check_parameters

#: One ``{name}`` placeholder of a topic template.
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
MAX_TEMPLATE_BYTES = 256


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class AgentConfig(_Model):
    """The on-device agent loop: where device tools may publish, and how many model turns
    one request may take."""

    tool_topic_prefixes: list[str] = Field(
        default_factory=list,
        description="Device tools may publish (and wait for replies) only under these topic "
        "prefixes; never under edged's own mqtt.topic_prefix. Empty: no device tools.",
    )
    max_steps: int = Field(4, ge=1, le=32, description="Model turns per request, at most.")
    confirm_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="How long a device-tool call released by a guardian confirm rule waits for "
        "the app's approval on edged/<device_id>/confirm; no answer in time is a denial.",
    )

    @field_validator("tool_topic_prefixes")
    @classmethod
    def _prefixes(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p or "+" in p or "#" in p or "{" in p or "}" in p or not p.split("/")[0]:
                raise ValueError(
                    f"prefix {p!r} must be non-empty, start with a topic level and contain no "
                    "wildcard or brace"
                )
        return v


class ToolConfig(_Model):
    """One device tool: what the model is told, and where a call is published."""

    description: str = Field("", description="What the tool does, for the model.")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments (the subset of docs/tools.md; an object).",
    )
    topic: str = Field(
        description="Where a call's arguments are published (QoS 1); {name} placeholders are "
        "filled from the arguments, each value one topic level."
    )
    reply_topic: str | None = Field(
        None, description="The first message here after the publish is the tool's result."
    )
    timeout_s: float = Field(3.0, gt=0, le=600, description="Longest wait for the reply, s.")

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            check_parameters(v, "parameters")
        except BadRequest as e:
            raise ValueError(e.message) from None
        return v

    @field_validator("topic", "reply_topic")
    @classmethod
    def _template(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        params = info.data.get("parameters")
        declared = set((params or {}).get("properties", {}))
        problem = template_problem(v, declared)
        if problem is not None:
            raise ValueError(problem)
        return v


def placeholders(template: str) -> list[str]:
    """The placeholder names of a topic template, in order."""
    return PLACEHOLDER_RE.findall(template)


def template_problem(template: str, declared: set[str]) -> str | None:
    """Why ``template`` is not a usable topic template, or None."""
    if not template or len(template.encode("utf-8")) > MAX_TEMPLATE_BYTES:
        return f"must be 1-{MAX_TEMPLATE_BYTES} bytes"
    literal = PLACEHOLDER_RE.sub("", template)
    if "{" in literal or "}" in literal:
        return "a brace that is not a {name} placeholder"
    if "+" in literal or "#" in literal:
        return "contains an MQTT wildcard"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in literal):
        return "contains control characters"
    first = template.split("/", maxsplit=1)[0]
    if "{" in first or not first:
        return "the first topic level must be literal text (no placeholder)"
    for name in placeholders(template):
        if name not in declared:
            return f"placeholder {{{name}}} is not a declared parameter ({sorted(declared)})"
    return None


def _under(template: str, prefix: str) -> bool:
    """True when every filling of ``template`` starts with ``prefix``."""
    head = template.split("{", 1)[0]
    return head.startswith(prefix)


def check_tools_topics(
    tools: dict[str, ToolConfig], agent: AgentConfig | None, topic_prefix: str
) -> None:
    """Raise ValueError naming the first tool whose topics are not allowed."""
    prefixes = [] if agent is None else agent.tool_topic_prefixes
    for p in prefixes:
        if p.split("/")[0] == topic_prefix:
            raise ValueError(f"agent.tool_topic_prefixes: {p!r} is under edged's own prefix")
    for name, tool in tools.items():
        if not TOOL_NAME_RE.fullmatch(name):
            raise ValueError(f"tools.{name}: a tool name is 1-64 characters of [A-Za-z0-9_-]")
        for key, template in (("topic", tool.topic), ("reply_topic", tool.reply_topic)):
            if template is None:
                continue
            if template.split("/")[0] == topic_prefix:
                raise ValueError(
                    f"tools.{name}.{key}: {template!r} is under edged's own prefix {topic_prefix!r}"
                )
            if not any(_under(template, p) for p in prefixes):
                raise ValueError(
                    f"tools.{name}.{key}: {template!r} is not under one of "
                    f"agent.tool_topic_prefixes {prefixes}"
                )


def _agent_checked(v: AgentConfig, info: ValidationInfo) -> AgentConfig:
    mqtt = info.data.get("mqtt")
    check_tools_topics({}, v, getattr(mqtt, "topic_prefix", "edged"))
    return v


def _tools_checked(v: dict[str, ToolConfig], info: ValidationInfo) -> dict[str, ToolConfig]:
    mqtt = info.data.get("mqtt")
    if "agent" not in info.data:  # [agent] itself failed: that error says why
        return v
    check_tools_topics(v, info.data["agent"], getattr(mqtt, "topic_prefix", "edged"))
    return v


#: ``Config.agent``: checked against ``mqtt.topic_prefix`` (declared after ``mqtt``).
AgentField = Annotated[AgentConfig, AfterValidator(_agent_checked)]
#: ``Config.tools``: checked against ``agent`` and ``mqtt`` (declared after both).
ToolsField = Annotated[dict[str, ToolConfig], AfterValidator(_tools_checked)]
