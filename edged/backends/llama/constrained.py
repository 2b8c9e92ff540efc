"""The decode loop for requests with tools or a JSON response_format (blocking).

It drives llama.cpp token by token (``Llama.eval``, the model's logits, the same sampler
chain the text path builds) and holds the output to a grammar (:mod:`edged.grammar`) with the
rejection strategy: sample as usual, check the one sampled token, and only when the grammar
refuses it mask the whole vocabulary and sample again. Tokens the grammar forces (the call's
opening marker, ``{"name":"``, a lone tool's name ...) are evaluated in one batch without
sampling.

Modes (:class:`~edged.grammar.Plan`):

- ``forced``: constrained from the first token: a call, a JSON answer, or either (the first
  character tells: a call starts with ``<``). A JSON answer streams as it is generated.
- ``lazy`` (``tool_choice: auto``): free text streams until the model writes the call's
  marker (``<tool_call>``); up to ``len(marker) - 1`` characters that could begin it are held
  back meanwhile. When the marker is complete, the KV cache is rolled back to the token where
  it starts, the marker is fed to the grammar, and the call continues forced.

A call never streams: when its grammar completes it is parsed and emitted whole as
``ToolCalls``, and the job ends with ``finish_reason`` ``tool_calls``.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.config import LocalModelConfig
from edged.errors import ToolCallInvalid
from edged.grammar import Constraint, Plan
from edged.tools.generic import CallFormat, parse_call
from edged.types import FinishReason, Request, StreamEvent, TextDelta, ToolCalls


@dataclass(slots=True)
class Outcome:
    """How a constrained job ended: finish reason, tokens produced (forced ones included),
    when the first came (monotonic s), samples the grammar refused, tokens sampled, and the
    seconds spent sampling (grammar checks and masks included)."""

    finish: FinishReason
    produced: int
    first_at_s: float | None
    resampled: int
    sampled: int
    sample_s: float


def eval_prompt(llm: Any, tokens: list[int]) -> None:
    """Evaluate ``tokens``, reusing the KV cache's longest common prefix (at least the last
    token is evaluated, so the logits are fresh), as ``Llama.generate`` does."""
    keep = 0
    if llm.n_tokens > 0:
        for a, b in zip(llm._input_ids, tokens, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)
    if keep > 0 and llm._ctx.kv_cache_seq_rm(-1, keep, -1):
        llm.n_tokens = keep
    else:
        llm.reset()
        keep = 0
    llm.eval(tokens[keep:])


class Sampler:
    """The request's sampler chain (built as the text path builds it) over a candidates
    array of the whole vocabulary, refilled from the last logits at each step."""

    def __init__(self, llm: Any, cfg: LocalModelConfig, temperature: float) -> None:
        import llama_cpp

        self._lc = llama_cpp
        self._llm = llm
        n = llm.n_vocab()
        self._n = n
        self._buf = (llama_cpp.llama_token_data * n)()
        self._view = np.ctypeslib.as_array(self._buf)
        self._ids = np.arange(n, dtype=np.int32)
        self._arr = llama_cpp.llama_token_data_array(
            data=self._buf, size=n, selected=-1, sorted=False
        )
        self._ref = ctypes.byref(self._arr)
        self._chain = llm._init_sampler(
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            min_p=cfg.min_p,
            temp=temperature,
            repeat_penalty=cfg.repeat_penalty,
        )
        self.resampled = 0
        self.sampled = 0
        self.sample_s = 0.0

    @property
    def logits(self) -> Any:
        """The candidates' logits, in id order after a fill (a writable view)."""
        return self._view["logit"]

    @property
    def ref(self) -> Any:
        """A pointer to the candidates' ``llama_token_data_array``."""
        return self._ref

    def _fill(self) -> None:
        ptr = self._lc.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        self._view["id"] = self._ids
        self._view["logit"] = np.ctypeslib.as_array(ptr, shape=(self._n,))
        self._view["p"] = 0.0
        self._arr.size = self._n
        self._arr.selected = -1
        self._arr.sorted = False

    def _pick(self) -> int:
        self._lc.llama_sampler_apply(self._chain.sampler, self._ref)
        return int(self._buf[self._arr.selected].id)

    def sample(self, constraint: Constraint | None) -> int:
        """The next token, allowed by ``constraint`` when one is given."""
        t0 = time.perf_counter()
        self._fill()
        tok = self._pick()
        if constraint is not None and not constraint.is_allowed(tok):
            self.resampled += 1
            self._fill()
            constraint.mask(self)
            tok = self._pick()
        self._lc.llama_sampler_accept(self._chain.sampler, tok)
        self.sampled += 1
        self.sample_s += time.perf_counter() - t0
        return tok

    def close(self) -> None:
        """Free the chain."""
        self._chain.close()


def held_back(text: str, marker: str) -> int:
    """How many trailing characters of ``text`` could be the start of ``marker``."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


class ConstrainedJob:
    """One request under a grammar (create, then :meth:`run`)."""

    def __init__(
        self,
        *,
        llm: Any,
        cfg: LocalModelConfig,
        request: Request,
        plan: Plan,
        constraint: Constraint,
        fmt: CallFormat,
        tokenize_text: Callable[[str], list[int]],
        is_eog: Callable[[int], bool],
        emit: Callable[[StreamEvent], None],
    ) -> None:
        self.llm, self.cfg, self.request, self.plan = llm, cfg, request, plan
        self.c, self.fmt, self.tokenize_text = constraint, fmt, tokenize_text
        self.is_eog, self.emit = is_eog, emit
        self.marker = fmt.open.strip()
        self.active = plan.mode == "forced"  # the grammar holds the output now
        self.kind: str | None = None  # "call" or "answer" once known (forced part)
        if plan.grammar is not None and plan.grammar.answer is None:
            self.kind = "call"
        elif plan.grammar is not None and plan.grammar.call is None:
            self.kind = "answer"
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # free text (lazy mode) so far
        self.ends: list[int] = []  # len(self.text) after each free token
        self.free: list[int] = []  # the free tokens
        self.emitted = 0  # characters of self.text streamed
        self.unsent_tokens = 0
        self.call: list[int] = []  # the call's tokens, marker included
        self.produced = 0
        self.first_at_s: float | None = None

    def run(self, prompt: list[int], budget: int, cancelled: Callable[[], bool]) -> Outcome:
        """Decode (blocking) until the grammar completes, EOS, ``budget`` tokens, or cancel."""
        sampler = Sampler(self.llm, self.cfg, self.request.temperature)
        try:
            first = self._forced() if self.active else []
            if len(prompt) + len(first) > self.llm.n_ctx():
                first = []  # no room for them: the loop ends at once (cut)
                budget = 0
            self._take(first)
            eval_prompt(self.llm, prompt + first)
            if first:  # the first tokens of the output came with the prompt
                self.first_at_s = time.monotonic()
            finish = self._loop(sampler, budget, cancelled, len(prompt))
        finally:
            sampler.close()
        return Outcome(
            finish,
            self.produced,
            self.first_at_s,
            sampler.resampled,
            sampler.sampled,
            sampler.sample_s,
        )

    def _forced(self) -> list[int]:
        ff = self.c.forced()
        if ff:
            self.c.accept(ff)
        return ff

    def _loop(
        self, sampler: Sampler, budget: int, cancelled: Callable[[], bool], n_prompt: int
    ) -> FinishReason:
        while True:
            if cancelled():
                self._flush_free()
                return "cancelled"
            if self.active and self.c.is_done():
                return self._done()
            if self.produced >= budget:
                return self._cut(budget)
            tok = sampler.sample(self.c if self.active else None)
            if self.is_eog(tok):
                if self.active:  # allowed only once the grammar is complete
                    return self._done()
                self._flush_free()
                return "stop"
            if self.first_at_s is None:
                self.first_at_s = time.monotonic()
            new = [tok]
            if self.active:
                self.c.accept(new)
                new += self._forced()
            if n_prompt + self.produced + len(new) > self.llm.n_ctx():
                return self._cut(budget)
            start = self._take(new)
            if start is not None:  # the marker is complete: roll back to where it starts
                new = self._switch(start, n_prompt)
                if n_prompt + self.produced > self.llm.n_ctx():
                    return self._cut(budget)
            self.llm.eval(new)

    def _take(self, new: list[int]) -> int | None:
        """Account for ``new`` tokens; in free text, the marker's start offset once it is
        complete (None otherwise)."""
        self.produced += len(new)
        if not new:
            return None
        if not self.active:
            self.free.append(new[0])
            self.text += self.decoder.decode(self.llm.detokenize(new))
            self.ends.append(len(self.text))
            self.unsent_tokens += 1
            at = self.text.find(self.marker, max(0, self.emitted - len(self.marker)))
            if at >= 0:
                return at
            self._send(len(self.text) - held_back(self.text, self.marker))
            return None
        if self.kind is None:  # either a call or an answer: the first character tells
            head = self.llm.detokenize(new).decode("utf-8", "replace").lstrip()
            if head:
                self.kind = "call" if head.startswith("<") else "answer"
        if self.kind == "answer":
            piece = self.decoder.decode(self.llm.detokenize(new))
            if piece:
                self.emit(TextDelta(piece, len(new)))
        else:
            self.call.extend(new)
        return None

    def _send(self, upto: int) -> None:
        if upto > self.emitted:
            self.emit(TextDelta(self.text[self.emitted : upto], self.unsent_tokens))
            self.emitted, self.unsent_tokens = upto, 0

    def _flush_free(self) -> None:
        if not self.active:
            self.text += self.decoder.decode(b"", final=True)
            self._send(len(self.text))

    def _switch(self, at: int, n_prompt: int) -> list[int]:
        """Free text ended with the call's marker starting at character ``at``: stream the
        text before it, keep the tokens wholly before it, and continue under the grammar."""
        if self.text[self.emitted : at].strip() or self.emitted:
            self._send(at)
        j = next(i for i, end in enumerate(self.ends) if end > at)
        pre = self.text[(self.ends[j - 1] if j else 0) : at]
        self.llm.n_tokens = n_prompt + j  # the next eval drops the KV cache after this
        marker = self.tokenize_text(self.marker)
        self.c.accept(marker)
        self.active, self.kind = True, "call"
        self.call = marker + self._forced()
        new = (self.tokenize_text(pre) if pre else []) + self.call
        self.produced = j + len(new)
        return new

    def _done(self) -> FinishReason:
        if self.kind == "call":
            text = self.llm.detokenize(self.call).decode("utf-8", "replace")
            self.emit(ToolCalls((parse_call(text, self.fmt),)))
            return "tool_calls"
        tail = self.decoder.decode(b"", final=True)
        if tail:
            self.emit(TextDelta(tail, 0))
        return "stop"

    def _cut(self, budget: int) -> FinishReason:
        if self.active and self.kind == "call":
            raise ToolCallInvalid(
                f"the local model's tool call did not end within {budget} "
                "tokens (max_tokens, or the context)"
            )
        self._flush_free()
        return "length"
