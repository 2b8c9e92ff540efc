"""Constrained decoding: what a request's tools and response_format hold the model to
(:mod:`.spec`), the interface a decode loop drives (:mod:`.base`), the llguidance engine
(:mod:`.llg`) and the fallback on llama.cpp's grammar sampler (:mod:`.gbnf`). Imports only
types, errors, config and :func:`edged.tools.validate.canonical` (the cache key)."""

from edged.grammar.base import Constraint, ConstraintEngine
from edged.grammar.spec import TEXT, GrammarSpec, Plan, call_object_schema, plan_for

__all__ = [
    "TEXT",
    "Constraint",
    "ConstraintEngine",
    "GrammarSpec",
    "Plan",
    "call_object_schema",
    "plan_for",
]
