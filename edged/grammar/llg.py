"""The llguidance engine: range-aware JSON Schema grammars, a token bitmask per step.

llguidance (MIT, no Python dependencies) compiles a grammar (Lark with ``%json`` schemas)
into a matcher over the model's own vocabulary. Its tokenizer is built from the llama.cpp
vocabulary once per loaded model (about a second for a 50k vocabulary). Each distinct grammar
is compiled once and kept in a bounded LRU; a request gets a ``deep_copy`` of the compiled
matcher, which is cheap. docs/design/tool-calling.md has the measurements behind the choice.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np

from edged.errors import BadRequest, Internal, Unavailable
from edged.grammar.spec import GrammarSpec

log = logging.getLogger("edged.grammar")

#: Compiled grammars kept per model.
KEPT = 32


def unavailable_reason() -> str | None:
    """Why llguidance cannot be used here (None: it imports)."""
    try:
        import llguidance  # noqa: F401
    except ImportError as e:
        return f"the grammar engine llguidance does not import here ({e})"
    return None


class LlgConstraint:
    """One request's llguidance matcher."""

    def __init__(self, matcher: Any, n_vocab: int) -> None:
        self._m = matcher
        self._n_vocab = n_vocab
        self._bits = np.zeros(((n_vocab + 31) // 32,), dtype=np.int32)

    def is_allowed(self, token: int) -> bool:
        """Whether ``token`` may come next."""
        return bool(self._m.validate_tokens([token]) == 1)

    def mask(self, cands: Any) -> None:
        """-inf for every refused token."""
        self._m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.size * 4)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self._n_vocab]
        cands.logits[allowed == 0] = -np.inf

    def accept(self, tokens: list[int]) -> None:
        """Advance past ``tokens``."""
        if not self._m.consume_tokens(tokens):
            raise Internal(f"the grammar refused a token it allowed: {self._m.get_error()}")

    def forced(self) -> list[int]:
        """Tokens forced next."""
        return list(self._m.compute_ff_tokens())

    def is_done(self) -> bool:
        """Complete, nothing may follow."""
        return bool(self._m.is_stopped())


class LlgEngine:
    """llguidance for one llama.cpp vocabulary."""

    name = "llguidance"

    def __init__(self, vocab: Any, kept: int = KEPT) -> None:
        """``vocab``: the loaded model's ``llama_vocab`` pointer. Builds the tokenizer
        (about a second); Unavailable when llguidance does not import."""
        reason = unavailable_reason()
        if reason is not None:
            raise Unavailable(reason)
        import llama_cpp
        import llguidance.llamacpp

        t0 = time.monotonic()
        with warnings.catch_warnings():  # it calls a deprecated binding once per token
            warnings.simplefilter("ignore", DeprecationWarning)
            self._tok = llguidance.llamacpp.lltokenizer_from_vocab(vocab)
        self.tokenizer_s = time.monotonic() - t0
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self._kept = kept
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        #: Grammars compiled, and requests served from the cache (counters).
        self.compiles = 0
        self.hits = 0
        self.last_compile_ms: float | None = None

    def constraint(self, spec: GrammarSpec) -> LlgConstraint:
        """A fresh matcher for ``spec`` (compiled once per distinct spec)."""
        key = spec.key
        proto = self._compiled.get(key)
        if proto is None:
            proto = self._compile(spec)
            self._compiled[key] = proto
            if len(self._compiled) > self._kept:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
            self.hits += 1
        return LlgConstraint(proto.deep_copy(), self._n_vocab)

    def _compile(self, spec: GrammarSpec) -> Any:
        import llguidance

        t0 = time.perf_counter()
        grammar = llguidance.LLMatcher.grammar_from_lark(spec.lark())
        matcher = llguidance.LLMatcher(self._tok, grammar, log_level=0)
        if matcher.is_error():
            what = "the tool schemas" if spec.call is not None else "response_format's schema"
            raise BadRequest(f"{what} cannot be compiled to a grammar: {matcher.get_error()}")
        self.compiles += 1
        self.last_compile_ms = (time.perf_counter() - t0) * 1000
        log.debug("event=grammar_compiled ms=%.1f", self.last_compile_ms)
        return matcher
