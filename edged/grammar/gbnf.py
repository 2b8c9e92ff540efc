"""The fallback engine: llama.cpp's own grammar sampler on GBNF that edged writes.

Used where llguidance does not import (no wheel for the board: glibc older than 2.28, 32-bit
ARM). llama-cpp-python's ``LlamaGrammar.from_json_schema`` is not used: it drops integer
``minimum``/``maximum``. This converter is range aware for integers; it refuses number
ranges (GBNF cannot say them cheaply) with BadRequest. Properties are written in declared
order, optional ones each optionally. No forced tokens: the model samples every token, and
EOS is allowed only once the grammar is complete.
"""

from __future__ import annotations

import ctypes
import json
import math
from typing import Any

import numpy as np

from edged.errors import BadRequest
from edged.grammar.spec import GrammarSpec

_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_ANNOTATIONS = {"description", "title", "default", "examples", "$comment", "x-guidance"}


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _same_len(a: str, b: str) -> list[str]:
    """Alternatives for the decimal strings from a to b, of one length."""
    if len(a) == 1:
        return [_lit(a) if a == b else f"[{a}-{b}]"]
    if a[0] == b[0]:
        return [f"{_lit(a[0])} ({' | '.join(_same_len(a[1:], b[1:]))})"]
    n = len(a) - 1
    out = [f"{_lit(a[0])} ({' | '.join(_same_len(a[1:], '9' * n))})"]
    if int(a[0]) + 1 <= int(b[0]) - 1:
        lo, hi = int(a[0]) + 1, int(b[0]) - 1
        out.append((_lit(str(lo)) if lo == hi else f"[{lo}-{hi}]") + " [0-9]" * n)
    out.append(f"{_lit(b[0])} ({' | '.join(_same_len('0' * n, b[1:]))})")
    return out


def _nonneg(lo: int, hi: int) -> list[str]:
    out: list[str] = []
    for length in range(len(str(lo)), len(str(hi)) + 1):
        a, b = max(lo, 10 ** (length - 1) if length > 1 else 0), min(hi, 10**length - 1)
        if a <= b:
            out += _same_len(str(a), str(b))
    return out


_BIG = 10**15  # an unbounded side: up to 16 digits


def int_range(lo: int | None, hi: int | None) -> str:
    """A GBNF expression for the JSON integers in [lo, hi] (None: unbounded)."""
    lo = -_BIG if lo is None else lo
    hi = _BIG if hi is None else hi
    alts: list[str] = []
    if lo < 0:
        neg_lo, neg_hi = max(1, -hi), -lo
        if neg_lo <= neg_hi:
            alts += [f'"-" ({p})' for p in _nonneg(neg_lo, neg_hi)]
    if hi >= 0:
        alts += _nonneg(max(lo, 0), hi)
    return "(" + " | ".join(alts) + ")"


def _int_bounds(s: dict[str, Any], path: str) -> tuple[int | None, int | None]:
    """The least and greatest integer a schema allows (None: unbounded)."""
    lows = [math.ceil(s["minimum"])] if "minimum" in s else []
    highs = [math.floor(s["maximum"])] if "maximum" in s else []
    if "exclusiveMinimum" in s:
        lows.append(math.floor(s["exclusiveMinimum"]) + 1)
    if "exclusiveMaximum" in s:
        highs.append(math.ceil(s["exclusiveMaximum"]) - 1)
    lo, hi = (max(lows) if lows else None), (min(highs) if highs else None)
    if lo is not None and hi is not None and lo > hi:
        raise BadRequest(f"{path}: no integer is in the range")
    return lo, hi


class Converter:
    """JSON Schema (the subset, docs/tools.md) to GBNF rules."""

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}

    def rule(self, body: str) -> str:
        """A named rule for ``body`` (one per distinct body)."""
        for name, b in self.rules.items():
            if b == body:
                return name
        name = f"r{len(self.rules)}"
        self.rules[name] = body
        return name

    def node(self, s: Any, path: str) -> str:
        """The expression for schema ``s`` at ``path``."""
        if s is True or s == {}:
            return "value"
        if not isinstance(s, dict):
            raise BadRequest(f"{path}: not a schema the fallback grammar engine takes")
        if "const" in s:
            return _lit(json.dumps(s["const"], separators=(",", ":")))
        if "enum" in s:
            return (
                "("
                + " | ".join(_lit(json.dumps(v, separators=(",", ":"))) for v in s["enum"])
                + ")"
            )
        if "anyOf" in s:
            return self.rule(
                " | ".join(self.node(x, f"{path}.anyOf[{i}]") for i, x in enumerate(s["anyOf"]))
            )
        t = s.get("type")
        if isinstance(t, list):
            return self.rule(" | ".join(self.node({**s, "type": x}, path) for x in t))
        if t is None:
            return "value"
        return self.typed(s, t, path)

    def typed(self, s: dict[str, Any], t: str, path: str) -> str:
        """The expression for a schema of one ``type``."""
        if t == "object":
            return self.object(s, path)
        if t == "array":
            item = self.node(s.get("items", {}), f"{path}.items")
            lo, hi = int(s.get("minItems", 0)), s.get("maxItems")
            if hi is not None and int(hi) == 0:
                return '"[" "]"'
            rest_lo, rest_hi = max(lo - 1, 0), None if hi is None else int(hi) - 1
            rep = f"{{{rest_lo},{'' if rest_hi is None else rest_hi}}}"
            body = f'{item} ("," {item}){rep}'
            return self.rule(f'"[" {body} "]"' if lo else f'"[" ({body})? "]"')
        if t == "string":
            lo, hi = int(s.get("minLength", 0)), s.get("maxLength")
            return self.rule(f'"\\"" char{{{lo},{"" if hi is None else int(hi)}}} "\\""')
        if t == "integer":
            return self.rule(int_range(*_int_bounds(s, path)))
        if t == "number":
            if any(k in s for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
                raise BadRequest(
                    f"{path}: number ranges need the llguidance grammar engine "
                    "(the fallback engine runs here)"
                )
            return "number"
        if t == "boolean":
            return '("true" | "false")'
        if t == "null":
            return '"null"'
        raise BadRequest(f"{path}: type {t!r} is not supported")

    def object(self, s: dict[str, Any], path: str) -> str:
        """Declared properties in order, optional ones optional; an open object without
        ``properties`` is any object."""
        props: dict[str, Any] = s.get("properties") or {}
        if not props:
            return "object" if s.get("additionalProperties", True) is not False else '"{" "}"'
        required = set(s.get("required", []))
        names = list(props)
        kv = [
            f'{_lit(json.dumps(k))} ":" {self.node(v, f"{path}.properties.{k}")}'
            for k, v in props.items()
        ]
        # after[i]: what may follow once a property before i was written
        after = [""] * (len(kv) + 1)
        for i in range(len(kv) - 1, -1, -1):
            piece = f'"," {kv[i]}' if names[i] in required else f'("," {kv[i]})?'
            after[i] = self.rule(f"{piece} {after[i + 1]}".strip())
        # first: the properties when the first one written is at index >= i ("" is none)
        first = ""
        for i in range(len(kv) - 1, -1, -1):
            this = f"{kv[i]} {after[i + 1]}".strip()
            if names[i] in required:
                first = self.rule(this)
            else:
                first = self.rule(f"{this} | {first}" if first else f"({this})?")
        return self.rule(f'"{{" {first} "}}"')

    def grammar(self, spec: GrammarSpec) -> str:
        """The whole GBNF text for ``spec``, ``root`` first."""
        alts = []
        if spec.call is not None:
            body = self.node(spec.call, "tools")
            alts.append(f"{_lit(spec.call_open)} {body} {_lit(spec.call_close)}")
        if spec.answer is not None:
            alts.append(self.node(spec.answer, "response_format.json_schema.schema"))
        lines = [f"root ::= {' | '.join(alts)}", *(f"{k} ::= {v}" for k, v in self.rules.items())]
        return "\n".join([*lines, *_BASE]) + "\n"


_BASE = [
    'value ::= object | array | string | number | "true" | "false" | "null"',
    'object ::= "{" (string ":" value ("," string ":" value)*)? "}"',
    'array ::= "[" (value ("," value)*)? "]"',
    'string ::= "\\"" char* "\\""',
    'number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]+)? ([eE] [-+]? [0-9]+)?',
    f"char ::= {_CHAR}",
]


class GbnfConstraint:
    """One request's llama.cpp grammar sampler."""

    def __init__(self, smpl: Any) -> None:
        import llama_cpp

        self._lc = llama_cpp
        self._smpl = smpl
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_arr = llama_cpp.llama_token_data_array(
            data=self._one, size=1, selected=-1, sorted=False
        )

    def is_allowed(self, token: int) -> bool:
        """Whether ``token`` may come next."""
        self._one[0].id = token  # type: ignore[assignment]
        self._one[0].logit = 1.0
        self._one_arr.size = 1
        self._lc.llama_sampler_apply(self._smpl, ctypes.byref(self._one_arr))
        return bool(self._one[0].logit != -np.inf)

    def mask(self, cands: Any) -> None:
        """-inf for every refused token (on the candidates array itself)."""
        self._lc.llama_sampler_apply(self._smpl, cands.ref)

    def accept(self, tokens: list[int]) -> None:
        """Advance past ``tokens``."""
        for t in tokens:
            self._lc.llama_sampler_accept(self._smpl, t)

    def forced(self) -> list[int]:
        """None: the model samples every token."""
        return []

    def is_done(self) -> bool:
        """Never before EOS (which the grammar allows only once complete)."""
        return False

    def __del__(self) -> None:
        if self._smpl is not None:
            self._lc.llama_sampler_free(self._smpl)
            self._smpl = None


class GbnfEngine:
    """llama.cpp's grammar sampler for one vocabulary; parsed grammars kept in an LRU."""

    name = "gbnf"

    def __init__(self, vocab: Any, kept: int = 32) -> None:
        from collections import OrderedDict

        import llama_cpp

        self._lc = llama_cpp
        self._vocab = vocab
        self._kept = kept
        self._parsed: OrderedDict[str, Any] = OrderedDict()

    def constraint(self, spec: GrammarSpec) -> GbnfConstraint:
        """A fresh grammar sampler for ``spec`` (a clone of the parsed one)."""
        key = spec.key
        proto = self._parsed.get(key)
        if proto is None:
            text = Converter().grammar(spec)
            proto = self._lc.llama_sampler_init_grammar(self._vocab, text.encode(), b"root")
            if not proto:
                raise BadRequest("the schema cannot be compiled to a GBNF grammar")
            self._parsed[key] = proto
            if len(self._parsed) > self._kept:
                self._lc.llama_sampler_free(self._parsed.popitem(last=False)[1])
        else:
            self._parsed.move_to_end(key)
        return GbnfConstraint(self._lc.llama_sampler_clone(proto))
