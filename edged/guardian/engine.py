"""The rule guardian: input checks, the output stream filter, and reports.

Semantic rules embed the text (all-MiniLM-L6-v2 in onnxruntime, shared with the router) on a
worker thread and compare it with each rule's examples by cosine similarity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edged.errors import Blocked
from edged.guardian.matcher import Finding, Matcher
from edged.guardian.rules import STRENGTH, Direction, Pack, Rule
from edged.guardian.stream import StreamFilter, redact
from edged.guardian.tool_rules import ToolRules
from edged.types import (
    Embedder,
    Finished,
    GuardianReport,
    Request,
    StreamEvent,
    TextDelta,
    ToolAudit,
    ToolCall,
    ToolDecision,
    Verdict,
)

log = logging.getLogger("edged.guardian")


@dataclass(frozen=True, slots=True)
class Outcome:
    """The guardian's judgement of one text."""

    action: str
    rules: list[str]
    text: str
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Semantic:
    rule: Rule
    examples: Any  # (k, dim) array


class RuleGuardian:
    """Guardian over rule packs. Cheap to rebuild: a reload builds a new one and swaps it."""

    def __init__(
        self,
        packs: Sequence[Pack],
        embedder: Embedder | None = None,
        max_workers: int = 1,
        *,
        audit: ToolAudit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.packs = list(packs)
        self.tool_rules = ToolRules([(p.name, p.tool_default, p.tool_rules) for p in packs], clock)
        self.audit = audit
        rules = [r for p in packs for r in p.text_rules]
        self.rules = rules
        self._in = Matcher(rules, "input")
        self._out = Matcher(rules, "output")
        self._embedder = embedder
        self._semantic: dict[Direction, list[_Semantic]] = {"input": [], "output": []}
        semantic = [r for r in rules if r.kind == "semantic"]
        if semantic and embedder is None:
            raise ValueError("semantic rules need the embedding model")
        for r in semantic:
            assert r.examples is not None and embedder is not None
            vecs = np.asarray(embedder.embed(list(r.examples)), dtype=np.float32)
            directions: tuple[Direction, ...] = ("input", "output")
            for d in directions:
                if r.applies(d):
                    self._semantic[d].append(_Semantic(r, vecs))
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="guardian")

    # --- judging one text ---------------------------------------------------------------------

    def _semantic_hits(self, text: str, direction: Direction) -> list[Finding]:
        sems = self._semantic[direction]
        if not sems or not text.strip():
            return []
        assert self._embedder is not None
        v = np.asarray(self._embedder.embed([text]), dtype=np.float32)[0]
        hits = []
        for s in sems:
            assert s.rule.threshold is not None
            if float(np.max(s.examples @ v)) >= s.rule.threshold:
                hits.append(Finding(s.rule.id, s.rule.action, 0, len(text), s.rule.id))
        return hits

    def check_text(self, text: str, direction: Direction) -> Outcome:
        """Judge a whole text (blocking when semantic rules exist)."""
        matcher = self._in if direction == "input" else self._out
        findings, _ = matcher.scan(text)
        findings += self._semantic_hits(text, direction)
        if direction == "output":  # force_local means nothing for an answer: record it
            findings = [
                replace(f, action="flag") if f.action == "force_local" else f for f in findings
            ]
        action = max((f.action for f in findings), key=STRENGTH.__getitem__, default="allow")
        ids = sorted({f.rule_id for f in findings})
        new_text = "" if action == "block" else redact(text, findings)
        return Outcome(action, ids, new_text, findings)

    # --- the pipeline's interface ----------------------------------------------------------

    async def check_input(self, request: Request) -> Verdict:
        """Judge every message; raises Blocked, or returns the request to serve."""
        if self._in.empty and not self._semantic["input"]:
            return Verdict(request=request)
        loop = asyncio.get_running_loop()
        outcomes = []
        for m in request.messages:
            # a tool's result is untrusted input, read like a user turn
            if self._semantic["input"] and m.role in ("user", "tool"):
                outcomes.append(
                    await loop.run_in_executor(self._pool, self.check_text, m.content, "input")
                )
            else:
                outcomes.append(self.check_text(m.content, "input"))
        counts: Counter[str] = Counter()
        for o in outcomes:
            counts.update(f.rule_id for f in o.findings)
        blockers = sorted({f.rule_id for o in outcomes for f in o.findings if f.action == "block"})
        if blockers:
            raise Blocked(f"refused by guardian rule(s): {', '.join(blockers)}")
        force_local = any(f.action == "force_local" for o in outcomes for f in o.findings)
        pairs = zip(request.messages, outcomes, strict=True)
        messages = tuple(m if m.content == o.text else replace(m, content=o.text) for m, o in pairs)
        if messages != request.messages:
            request = replace(request, messages=messages)
        return Verdict(request=request, force_local=force_local, actions=dict(counts))

    async def filter_stream(
        self, events: AsyncGenerator[StreamEvent, None], verdict: Verdict
    ) -> AsyncGenerator[StreamEvent, None]:
        """Hold back, redact or stop the stream so nothing forbidden is released."""
        if self._out.empty and not self._semantic["output"]:
            async for ev in events:
                yield ev
            return
        filt = StreamFilter(self._out)
        released: list[str] = []
        async with aclosing(events) as upstream:
            async for ev in upstream:
                if isinstance(ev, TextDelta):
                    step = filt.feed(ev.text)
                elif isinstance(ev, Finished):
                    step = filt.finish()
                else:
                    yield ev
                    continue
                if step.blocked_by:
                    for rid in step.blocked_by:
                        verdict.output[rid] = verdict.output.get(rid, 0) + 1
                    # leaving the `async with` closes the backend's stream: generation stops
                    raise Blocked(
                        f"the answer was stopped by guardian rule(s): {', '.join(step.blocked_by)}"
                    )
                for f in step.applied:
                    verdict.output[f.rule_id] = verdict.output.get(f.rule_id, 0) + 1
                if step.release:
                    released.append(step.release)
                    yield TextDelta(step.release, ev.tokens if isinstance(ev, TextDelta) else 0)
                if not isinstance(ev, TextDelta):
                    loop = asyncio.get_running_loop()
                    hits = await loop.run_in_executor(
                        self._pool, self._semantic_hits, "".join(released), "output"
                    )
                    for f in hits:
                        verdict.output[f.rule_id] = verdict.output.get(f.rule_id, 0) + 1
                    yield ev

    def check_calls(
        self, request: Request, calls: Sequence[ToolCall], verdict: Verdict
    ) -> tuple[ToolCall, ...]:
        """Decide each call by the tool rules; raises Blocked when every one is blocked."""
        released: list[ToolCall] = []
        blockers: set[str] = set()
        for call in calls:
            t0 = time.perf_counter()
            d = self.tool_rules.decide(call.name, call.arguments)
            latency_us = (time.perf_counter() - t0) * 1e6
            for rid in d.rules:
                verdict.tools[rid] = verdict.tools.get(rid, 0) + 1
            if d.decision == "block":
                blockers.update(d.rules)
                log.info(
                    "event=tool_blocked id=%s tool=%s rules=%s",
                    request.id,
                    call.name,
                    ",".join(d.rules),
                )
            else:
                released.append(replace(call, confirm=True) if d.decision == "confirm" else call)
            if self.audit is not None:
                self.audit(
                    ToolDecision(
                        request.id,
                        call.id,
                        call.name,
                        d.decision,
                        d.rules,
                        latency_us,
                        call.arguments,
                        call.name in request.device_tools,
                    )
                )
        if calls and not released:
            raise Blocked(
                f"every tool call was blocked by guardian rule(s): {', '.join(sorted(blockers))}"
            )
        return tuple(released)

    def report(self, verdict: Verdict) -> GuardianReport | None:
        """Rule ids with counts, on input, on output and on tool calls."""
        return GuardianReport(
            input=dict(verdict.actions), output=dict(verdict.output), tools=dict(verdict.tools)
        )

    def close(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=False)
