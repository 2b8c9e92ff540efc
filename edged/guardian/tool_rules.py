"""Tool rules: the guardian's decision on every tool call before it is released.

In a pack, beside the text rules (``rules.py``)::

    tool_default = "allow"          # or "block": a call no rule allows is blocked
    [[rule]]
    id = "thermostat.range"
    kind = "tool"
    tools = ["set_thermostat"]
    action = "allow"                # block | allow | confirm
    arguments = { type = "object", properties = { celsius = { type = "number",
                  minimum = 16, maximum = 26 } }, required = ["celsius"] }
    max_per_minute = 6              # optional: released calls per tool per minute

``block``: with ``arguments``, only calls whose arguments match the schema are blocked.
``allow``/``confirm``: the arguments must satisfy ``arguments``, else the rule blocks the
call; over ``max_per_minute`` the rule blocks it too. A call is blocked when any pack blocks
it, and when a pack says ``tool_default = "block"`` and no rule of any pack allows it (the
id reported is then ``tool_default:<pack name>``). Pure and cheap: a dict lookup per call
and a compiled schema check (edged.tools.check) per matching rule (bench/tool_rules.py).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edged.errors import BadRequest
from edged.tools.check import Check, compile_check
from edged.tools.schema import TOOL_NAME_RE, check_schema

ToolAction = Literal["block", "allow", "confirm"]
Decision = Literal["allow", "block", "confirm"]
#: Seconds of the rate window of ``max_per_minute``.
RATE_WINDOW_S = 60.0


class ToolRule(BaseModel):
    """One ``kind = "tool"`` rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    kind: Literal["tool"]
    tools: tuple[str, ...]
    action: ToolAction
    description: str | None = None
    arguments: dict[str, Any] | None = None
    max_per_minute: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ToolRule:
        if not self.tools:
            raise ValueError("tools is empty")
        bad = [t for t in self.tools if not TOOL_NAME_RE.fullmatch(t)]
        if bad:
            raise ValueError(f"tools: {bad} are not tool names (1-64 of [A-Za-z0-9_-])")
        if len(set(self.tools)) != len(self.tools):
            raise ValueError("tools names a tool twice")
        if self.arguments is not None:
            try:
                check_schema(self.arguments, "arguments")
            except BadRequest as e:
                raise ValueError(e.message) from None
        if self.max_per_minute is not None and self.action == "block":
            raise ValueError("max_per_minute belongs to allow and confirm rules, not block")
        return self


@dataclass(frozen=True, slots=True)
class CallDecision:
    """The decision on one call: the rule ids behind it (empty when nothing acted)."""

    decision: Decision
    rules: tuple[str, ...]


#: One rule as a tool sees it: (id, action, compiled argument check or None, rate cap).
_Entry = tuple[str, ToolAction, Check | None, int | None]


class ToolRules:
    """Every pack's tool rules, compiled by tool name; holds the rate windows.

    ``clock`` is monotonic seconds (tests pass their own)."""

    def __init__(
        self,
        packs: Sequence[tuple[str, str, Sequence[ToolRule]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        by_tool: dict[str, list[_Entry]] = {}
        for _, _, rules in packs:  # in pack order, then rule order
            for r in rules:
                check = None if r.arguments is None else compile_check(r.arguments)
                for t in r.tools:
                    by_tool.setdefault(t, []).append((r.id, r.action, check, r.max_per_minute))
        self._by_tool = {k: tuple(v) for k, v in by_tool.items()}
        self._defaults = tuple(f"tool_default:{name}" for name, d, _ in packs if d == "block")
        self.count = sum(len(rs) for _, _, rs in packs)
        self.empty = not self._by_tool and not self._defaults
        self._clock = clock
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._capped = {r.id for _, _, rs in packs for r in rs if r.max_per_minute is not None}

    def decide(self, tool: str, arguments: str) -> CallDecision:
        """Decide one call (``arguments`` the JSON text of an object, already validated).
        A released call under a rate cap counts against it."""
        if self.empty:
            return CallDecision("allow", ())
        args: Any = None
        blockers: list[str] = []
        confirms: list[str] = []
        capped: list[tuple[str, int]] = []
        allowed = False
        for rid, action, check, cap in self._by_tool.get(tool, ()):
            if check is not None and args is None:
                args = json.loads(arguments)  # strict JSON: validate_calls checked it
            fits = check is None or check(args)
            if action == "block":
                if fits:
                    blockers.append(rid)
            elif not fits:
                blockers.append(rid)
            else:
                allowed = True
                if action == "confirm":
                    confirms.append(rid)
                if cap is not None:
                    capped.append((rid, cap))
        if not allowed:
            blockers += self._defaults
        if capped:
            now = self._clock()
            for rid, cap in capped:
                w = self._windows.setdefault((rid, tool), deque())
                while w and w[0] <= now - RATE_WINDOW_S:
                    w.popleft()
                if len(w) >= cap:
                    blockers.append(rid)
            if not blockers:
                for rid, _ in capped:
                    self._windows[(rid, tool)].append(now)
        if blockers:
            return CallDecision("block", tuple(blockers))
        if confirms:
            return CallDecision("confirm", tuple(confirms))
        return CallDecision("allow", ())

    def adopt(self, old: ToolRules) -> None:
        """Keep the rate windows of ``old`` (a reload) for the rules that are still here."""
        self._windows.update((k, w) for k, w in old._windows.items() if k[0] in self._capped)
