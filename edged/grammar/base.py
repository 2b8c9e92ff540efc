"""The constraint interface the decode loop drives, one token at a time.

A decode loop that edged owns (``edged.backends.llama.constrained``) uses the rejection
strategy: it samples without the constraint, asks :meth:`Constraint.is_allowed` about the
one sampled token, and only when it is refused masks the whole vocabulary
(:meth:`Constraint.mask`) and samples again. Tokens are the model's token ids.
"""

from __future__ import annotations

from typing import Any, Protocol

from edged.grammar.spec import GrammarSpec


class Constraint(Protocol):
    """One request's grammar state (not shared between requests)."""

    def is_allowed(self, token: int) -> bool:
        """Whether ``token`` may come next (EOS only once the grammar is complete)."""
        ...

    def mask(self, cands: Any) -> None:
        """Set every refused token's logit to -inf. ``cands``: the whole vocabulary in id
        order, as ``cands.logits`` (a float32 array view) and ``cands.ref`` (a pointer to the
        ``llama_token_data_array`` it views)."""
        ...

    def accept(self, tokens: list[int]) -> None:
        """Advance past ``tokens`` (each allowed in turn; Internal otherwise)."""
        ...

    def forced(self) -> list[int]:
        """Tokens the grammar forces next, whatever the model says (may be empty)."""
        ...

    def is_done(self) -> bool:
        """True when the grammar is complete and nothing more may follow."""
        ...


class ConstraintEngine(Protocol):
    """Compiles grammar specs for one loaded model (cached) and hands out constraints."""

    name: str

    def constraint(self, spec: GrammarSpec) -> Constraint:
        """A fresh constraint for ``spec``; BadRequest when the engine cannot compile it."""
        ...
