"""What constrained decoding costs on the default model: unconstrained vs each grammar engine.

Groundwork for issue 14 (tool calling). One process, one model (``Llama``, the default GGUF),
one decode loop written here on llama-cpp-python's low-level API, so that every engine pays the
same Python per-token overhead and differs only in what it does to the candidates:

  none            no constraint (the floor; the model is still asked for a JSON call)
  gbnf-lcp        llama.cpp grammar sampler, GBNF from llama-cpp-python's Python converter
                  (``LlamaGrammar.from_json_schema``: ignores integer minimum/maximum), applied
                  to the whole vocabulary before sampling, as ``Llama._init_sampler`` does
  gbnf-lcp-rej    same grammar, llama.cpp's rejection strategy (common/sampling.cpp): sample
                  unconstrained, check that one token against the grammar, and only if it is
                  rejected apply the grammar to the whole vocabulary and sample again
  gbnf-range      GBNF from the small range-aware converter below, whole vocabulary
  gbnf-range-rej  same grammar, rejection strategy
  llguidance      llguidance ``LLMatcher`` (JSON schema compiled by llguidance), token bitmask
                  every step
  llguidance-rej  llguidance, rejection strategy (``validate_tokens`` on the sampled token)
  (xgrammar and outlines-core were measured by this bench up to commit 8c5c76d: see
  docs/design/tool-calling.md; the decision made, they are no longer installed or run)

Two schemas: ``small`` (one tool, set_alarm, with integer ranges) and ``tools10`` (anyOf of 10
call objects ``{"name": const, "arguments": {...}}``). The prompt lists the tools in a generic
text format and asks for a JSON call; sampling is temperature 0.8, top-k 40, top-p 0.95,
min-p 0.05 with a new seed each round (at temperature 0 a tiny model would hide range bugs).

For each run: prompt-eval time (``Llama.eval`` of the prompt) apart from decode time (first
sample to last token), decode tokens/s = generated tokens / decode time, sampling ms per token,
and whether the output parses and validates against the schema (``jsonschema``, which checks
integer minimum/maximum). Engines are interleaved round by round so machine noise hits them
alike; medians and min-max over rounds are printed, and ratios against ``none`` in the same run.
Compile times (median of 5 fresh compiles) and one-off per-model setup are printed first.

    .venv/bin/python bench/grammar.py [--rounds 5] [--threads 1 2] [--max-tokens 96]
        [--engines none gbnf-lcp ...] [--schemas small tools10] [--json PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jsonschema  # type: ignore[import-untyped]
import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp.llama_grammar import LlamaGrammar

from bench import _harness as h

MODEL = h.DEFAULT_MODEL_FILE

# --------------------------------------------------------------------------------------------
# Schemas

ROOMS = ["kitchen", "living_room", "bedroom", "bathroom", "hall"]

TOOLS: list[dict[str, Any]] = [
    {
        "name": "set_alarm",
        "description": "Set an alarm at a time of day.",
        "parameters": {
            "type": "object",
            "properties": {
                "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                "minute": {"type": "integer", "minimum": 0, "maximum": 59},
                "label": {"type": "string", "maxLength": 24},
            },
            "required": ["hour", "minute", "label"],
            "additionalProperties": False,
        },
    },
    {
        "name": "set_timer",
        "description": "Start a countdown timer.",
        "parameters": {
            "type": "object",
            "properties": {"seconds": {"type": "integer", "minimum": 1, "maximum": 86400}},
            "required": ["seconds"],
            "additionalProperties": False,
        },
    },
    {
        "name": "light_control",
        "description": "Switch or dim a light.",
        "parameters": {
            "type": "object",
            "properties": {
                "room": {"enum": ROOMS},
                "state": {"enum": ["on", "off"]},
                "brightness_pct": {"type": "integer", "minimum": 0, "maximum": 100},
            },
            "required": ["room", "state", "brightness_pct"],
            "additionalProperties": False,
        },
    },
    {
        "name": "set_thermostat",
        "description": "Set the target temperature.",
        "parameters": {
            "type": "object",
            "properties": {
                "room": {"enum": ROOMS},
                "target_c": {"type": "integer", "minimum": 5, "maximum": 30},
            },
            "required": ["room", "target_c"],
            "additionalProperties": False,
        },
    },
    {
        "name": "play_music",
        "description": "Play music.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 40},
                "volume": {"type": "integer", "minimum": 0, "maximum": 10},
                "shuffle": {"type": "boolean"},
            },
            "required": ["query", "volume", "shuffle"],
            "additionalProperties": False,
        },
    },
    {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
    {
        "name": "send_message",
        "description": "Send a text message to a contact.",
        "parameters": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "maxLength": 32},
                "text": {"type": "string", "maxLength": 80},
            },
            "required": ["to", "text"],
            "additionalProperties": False,
        },
    },
    {
        "name": "add_reminder",
        "description": "Remind the user of something in some minutes.",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "maxLength": 60},
                "in_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
            },
            "required": ["text", "in_minutes"],
            "additionalProperties": False,
        },
    },
    {
        "name": "shopping_list_add",
        "description": "Add items to the shopping list.",
        "parameters": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"type": "string", "maxLength": 24}},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
            },
            "required": ["items", "quantity"],
            "additionalProperties": False,
        },
    },
    {
        "name": "lock_door",
        "description": "Lock or unlock a door.",
        "parameters": {
            "type": "object",
            "properties": {
                "door": {"enum": ["front", "back", "garage"]},
                "locked": {"type": "boolean"},
                "note": {"type": ["string", "null"], "maxLength": 24},
            },
            "required": ["door", "locked", "note"],
            "additionalProperties": False,
        },
    },
]


def call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one whole call of ``tool``: ``{"name": <const>, "arguments": {...}}``."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool["name"]}, "arguments": tool["parameters"]},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "small": call_schema(TOOLS[0]),
    "tools10": {"anyOf": [call_schema(t) for t in TOOLS]},
}
SCHEMA_TOOLS = {"small": TOOLS[:1], "tools10": TOOLS}

REQUESTS = [
    "Wake me up at 6:30 tomorrow for the gym.",
    "Set an alarm for 7:45, label it school run.",
    "I need an alarm at 22:15 to take my pills.",
    "Alarm at 5 in the morning please, for the flight.",
    "Please set an alarm at half past eight called standup.",
    "Set an alarm for noon, lunch.",
    "Could you set an alarm at 23:59 named new day?",
    "Turn off the kitchen light.",
    "Remind me to call mum in 20 minutes.",
]


def system_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """The generic tool format: tools as JSON lines, the call as one JSON object."""
    lines = [
        "You can call tools. To call one, reply with only a JSON object "
        '{"name": <tool name>, "arguments": <object>}.',
        "Tools:",
    ]
    for t in tools:
        lines.append(json.dumps(t, separators=(",", ":")))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# A small range-aware JSON-Schema -> GBNF converter (the subset issue 14 names; enough for the
# bench; the real one belongs in edged with path-naming errors).

STRING_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def _digits_same_len(a: str, b: str) -> list[str]:
    """GBNF alternatives matching decimal strings of len(a) == len(b) between a and b."""
    if len(a) == 1:
        return [f'"{a}"' if a == b else f"[{a}-{b}]"]
    if a[0] == b[0]:
        return [f'"{a[0]}" {p}' for p in _digits_same_len(a[1:], b[1:])]
    n = len(a) - 1
    out = [f'"{a[0]}" {p}' for p in _digits_same_len(a[1:], "9" * n)]
    lo, hi = int(a[0]) + 1, int(b[0]) - 1
    if lo <= hi:
        head = f'"{lo}"' if lo == hi else f"[{lo}-{hi}]"
        out.append(head + " [0-9]" * n)
    out += [f'"{b[0]}" {p}' for p in _digits_same_len("0" * n, b[1:])]
    return out


def _nonneg_range(lo: int, hi: int) -> list[str]:
    """Alternatives for the canonical decimal integers in [lo, hi], 0 <= lo <= hi."""
    out: list[str] = []
    for length in range(len(str(lo)), len(str(hi)) + 1):
        a = max(lo, 10 ** (length - 1) if length > 1 else 0)
        b = min(hi, 10**length - 1)
        if a <= b:
            out += _digits_same_len(str(a), str(b))
    return out


def int_range_gbnf(lo: int | None, hi: int | None) -> str:
    """A GBNF expression for JSON integers in [lo, hi] (None: unbounded on that side)."""
    alts: list[str] = []
    if lo is None and hi is None:
        return '("-"? ("0" | [1-9] [0-9]{0,15}))'
    if hi is None:
        if lo is None or lo < 0:
            raise ValueError("bench converter: one-sided negative bound")
        # lo.. unbounded: same length as lo and >= lo, or more digits
        alts = _nonneg_range(lo, 10 ** len(str(lo)) - 1)
        alts.append("[1-9] [0-9]{" + str(len(str(lo))) + ",15}")
        return "(" + " | ".join(alts) + ")"
    if lo is None:
        raise ValueError("bench converter: maximum without minimum")
    if lo < 0:
        neg_lo, neg_hi = max(1, -hi), -lo
        if neg_lo <= neg_hi:
            alts += [f'"-" {p}' for p in _nonneg_range(neg_lo, neg_hi)]
    if hi >= 0:
        alts += _nonneg_range(max(lo, 0), hi)
    return "(" + " | ".join(alts) + ")"


class RangeGbnf:
    """Schema -> GBNF for the subset; raises ValueError naming the path on anything else."""

    SUPPORTED: ClassVar[set[str]] = {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "minimum",
        "maximum",
        "items",
        "anyOf",
        "maxLength",
        "minLength",
        "description",
        "title",
    }

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self.n = 0

    def _rule(self, body: str) -> str:
        for name, b in self.rules.items():
            if b == body:
                return name
        self.n += 1
        name = f"r{self.n}"
        self.rules[name] = body
        return name

    def convert(self, schema: dict[str, Any]) -> str:
        """The whole grammar text, root first."""
        root = self.node(schema, "$")
        lines = [f"root ::= {root}", 'ws ::= " "?', f"char ::= {STRING_CHAR}"]
        lines += [f"{k} ::= {v}" for k, v in self.rules.items()]
        return "\n".join(lines) + "\n"

    def node(self, s: dict[str, Any], path: str) -> str:
        bad = set(s) - self.SUPPORTED
        if bad:
            raise ValueError(f"{path}: unsupported keyword(s) {sorted(bad)}")
        if "const" in s:
            return json.dumps(json.dumps(s["const"]))
        if "enum" in s:
            return "(" + " | ".join(json.dumps(json.dumps(v)) for v in s["enum"]) + ")"
        if "anyOf" in s:
            alts = [self.node(x, f"{path}.anyOf[{i}]") for i, x in enumerate(s["anyOf"])]
            return self._rule(" | ".join(alts))
        t = s.get("type")
        if isinstance(t, list):
            alts = [self.node({**s, "type": x}, f"{path}.type[{i}]") for i, x in enumerate(t)]
            return self._rule(" | ".join(alts))
        if t == "object":
            props: dict[str, Any] = s.get("properties", {})
            req = s.get("required", [])
            if set(props) != set(req) or s.get("additionalProperties", True) is not False:
                raise ValueError(f"{path}: bench converter needs all properties required, closed")
            parts = []
            for i, (k, v) in enumerate(props.items()):
                sep = '"," ws ' if i else ""
                parts.append(
                    f'{sep}{json.dumps(json.dumps(k))} ws ":" ws {self.node(v, f"{path}.{k}")}'
                )
            inner = " ".join(parts)
            return self._rule(f'"{{" ws {inner} ws "}}"' if parts else '"{" ws "}"')
        if t == "array":
            item = self.node(s.get("items", {"type": "string"}), f"{path}[]")
            return self._rule(f'"[" ws ({item} (ws "," ws {item})*)? ws "]"')
        if t == "string":
            lo, hi = s.get("minLength", 0), s.get("maxLength")
            rep = f"{{{lo},{hi}}}" if hi is not None else (f"{{{lo},}}" if lo else "*")
            return self._rule(f'"\\"" char{rep} "\\""')
        if t == "integer":
            return self._rule(int_range_gbnf(s.get("minimum"), s.get("maximum")))
        if t == "number":
            if "minimum" in s or "maximum" in s:
                raise ValueError(f"{path}: number ranges not in the bench converter")
            return self._rule('"-"? ("0" | [1-9] [0-9]*) ("." [0-9]+)? ([eE] [-+]? [0-9]+)?')
        if t == "boolean":
            return '("true" | "false")'
        if t == "null":
            return '"null"'
        raise ValueError(f"{path}: unsupported type {t!r}")


# --------------------------------------------------------------------------------------------
# Candidates buffer shared by the loop and the engines


class Cands:
    """A full-vocabulary llama_token_data_array, refilled from the context's logits each step."""

    def __init__(self, llm: Llama) -> None:
        self.llm = llm
        self.n_vocab = llm.n_vocab()
        self.buf = (llama_cpp.llama_token_data * self.n_vocab)()
        self.view = np.ctypeslib.as_array(self.buf)
        self.ids = np.arange(self.n_vocab, dtype=np.int32)
        self.arr = llama_cpp.llama_token_data_array(
            data=self.buf, size=self.n_vocab, selected=-1, sorted=False
        )
        self.ref = ctypes.byref(self.arr)

    def fill(self) -> None:
        """Copy the last position's logits in, in token-id order."""
        ptr = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        self.view["id"] = self.ids
        self.view["logit"] = logits
        self.view["p"] = 0.0
        self.arr.size = self.n_vocab
        self.arr.selected = -1
        self.arr.sorted = False

    def mask_bits(self, bitmask: np.ndarray) -> None:
        """Set the logit of every token whose bit is 0 to -inf (array in id order)."""
        allowed = np.unpackbits(bitmask.view(np.uint8), bitorder="little")[: self.n_vocab]
        self.view["logit"][allowed == 0] = -np.inf


# --------------------------------------------------------------------------------------------
# Engines


class Engine:
    """No constraint."""

    name = "none"
    rejection = False

    def reset(self) -> None:
        """Back to the start of the grammar."""

    def apply(self, c: Cands) -> None:
        """Constrain the whole candidates array."""

    def valid(self, token: int) -> bool:
        """Whether one sampled token is allowed next."""
        return True

    def accept(self, token: int) -> None:
        """Advance past ``token``."""

    def close(self) -> None:
        """Free native state."""


class Gbnf(Engine):
    """llama.cpp's grammar sampler on a GBNF text."""

    def __init__(self, name: str, llm: Llama, gbnf: str, rejection: bool) -> None:
        self.name = name
        self.rejection = rejection
        self.smpl = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
        if not self.smpl:
            raise RuntimeError(f"{name}: llama.cpp refused the grammar")
        self.one = (llama_cpp.llama_token_data * 1)()
        self.one_arr = llama_cpp.llama_token_data_array(
            data=self.one, size=1, selected=-1, sorted=False
        )

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self.smpl)

    def apply(self, c: Cands) -> None:
        llama_cpp.llama_sampler_apply(self.smpl, c.ref)

    def valid(self, token: int) -> bool:
        self.one[0].id = token  # type: ignore[assignment]
        self.one[0].logit = 1.0
        self.one_arr.size = 1
        llama_cpp.llama_sampler_apply(self.smpl, ctypes.byref(self.one_arr))
        return bool(self.one[0].logit != -np.inf)

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self.smpl, token)

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self.smpl)


class Llg(Engine):
    """llguidance's matcher."""

    def __init__(self, name: str, tok: Any, grammar: str, n_vocab: int, rejection: bool) -> None:
        import llguidance

        self.name = name
        self.rejection = rejection
        self.m = llguidance.LLMatcher(tok, grammar, log_level=0)
        if self.m.is_error():
            raise RuntimeError(self.m.get_error())
        self.bits = np.full(((n_vocab + 31) // 32,), -1, dtype=np.int32)

    def reset(self) -> None:
        self.m.reset()

    def apply(self, c: Cands) -> None:
        self.m.unsafe_compute_mask_ptr(self.bits.ctypes.data, self.bits.size * 4)
        c.mask_bits(self.bits)

    def valid(self, token: int) -> bool:
        return bool(self.m.validate_tokens([token]) == 1)

    def accept(self, token: int) -> None:
        if not self.m.consume_token(token):
            raise RuntimeError(f"llguidance: {self.m.get_error()}")


# --------------------------------------------------------------------------------------------
# One-off per-model setup for the engines that need a tokenizer of their own


class Setup:
    """Per-model state for each engine, with how long it took (ms)."""

    def __init__(self, llm: Llama, engines: Sequence[str]) -> None:
        self.llm = llm
        self.setup_ms: dict[str, float | str] = {}
        self.llg_tok: Any = None
        if any(e.startswith("llguidance") for e in engines):
            try:
                import llguidance.llamacpp

                t = time.perf_counter()
                self.llg_tok = llguidance.llamacpp.lltokenizer_from_vocab(llm._model.vocab)
                self.setup_ms["llguidance"] = (time.perf_counter() - t) * 1e3
            except ImportError as e:
                self.setup_ms["llguidance"] = f"unavailable: {e}"

    def available(self, engine: str) -> bool:
        """Whether the engine's package imported."""
        key = "llguidance" if engine.startswith("llguidance") else engine
        if key == "llguidance":
            return not isinstance(self.setup_ms.get(key), str)
        return True

    def compile(self, engine: str, schema: dict[str, Any]) -> tuple[Engine, float, dict[str, Any]]:
        """Build the engine for ``schema``; returns it, compile ms, and notes."""
        notes: dict[str, Any] = {}
        t = time.perf_counter()
        e: Engine
        if engine == "none":
            e = Engine()
        elif engine.startswith("gbnf-lcp"):
            text = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
            notes["gbnf_chars"] = len(text)
            e = Gbnf(engine, self.llm, text, engine.endswith("-rej"))
        elif engine.startswith("gbnf-range"):
            text = RangeGbnf().convert(schema)
            notes["gbnf_chars"] = len(text)
            e = Gbnf(engine, self.llm, text, engine.endswith("-rej"))
        elif engine.startswith("llguidance"):
            import llguidance

            g = llguidance.LLMatcher.grammar_from_json_schema(
                schema, defaults={"whitespace_flexible": False}
            )
            e = Llg(engine, self.llg_tok, g, self.llm.n_vocab(), engine.endswith("-rej"))
        else:
            raise ValueError(engine)
        return e, (time.perf_counter() - t) * 1e3, notes


# --------------------------------------------------------------------------------------------
# The decode loop


def make_chain(seed: int) -> Any:
    """The sampling chain (temperature 0.8), as a llama_sampler pointer."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for s in (
        llama_cpp.llama_sampler_init_top_k(40),
        llama_cpp.llama_sampler_init_top_p(0.95, 1),
        llama_cpp.llama_sampler_init_min_p(0.05, 1),
        llama_cpp.llama_sampler_init_temp(0.8),
        llama_cpp.llama_sampler_init_dist(seed),
    ):
        llama_cpp.llama_sampler_chain_add(chain, s)
    return chain


def generate(
    llm: Llama, c: Cands, engine: Engine, prompt: list[int], *, seed: int, max_tokens: int
) -> dict[str, Any]:
    """One generation; timings in seconds."""
    chain = make_chain(seed)
    eos = llm.token_eos()
    engine.reset()
    llm.reset()  # type: ignore[no-untyped-call]
    t0 = time.perf_counter()
    llm.eval(prompt)
    t_prompt = time.perf_counter() - t0
    out: list[int] = []
    sample_s = 0.0
    resamples = 0
    steps = 0
    t1 = time.perf_counter()
    truncated = True
    for _ in range(max_tokens):
        ts = time.perf_counter()
        c.fill()
        if not engine.rejection:
            engine.apply(c)
        llama_cpp.llama_sampler_apply(chain, c.ref)
        tok = int(c.buf[c.arr.selected].id)
        if engine.rejection and not engine.valid(tok):
            resamples += 1
            c.fill()
            engine.apply(c)
            llama_cpp.llama_sampler_apply(chain, c.ref)
            tok = int(c.buf[c.arr.selected].id)
        llama_cpp.llama_sampler_accept(chain, tok)
        steps += 1
        if tok == eos:
            sample_s += time.perf_counter() - ts
            truncated = False
            break
        engine.accept(tok)
        sample_s += time.perf_counter() - ts
        out.append(tok)
        llm.eval([tok])
    t_decode = time.perf_counter() - t1
    llama_cpp.llama_sampler_free(chain)
    text = llm.detokenize(out).decode("utf-8", "replace")
    return {
        "prompt_tokens": len(prompt),
        "prompt_s": t_prompt,
        "tokens": len(out),
        "decode_s": t_decode,
        "decode_tps": len(out) / t_decode if t_decode > 0 else None,
        "sample_ms_per_token": sample_s * 1e3 / steps if steps else None,
        "resamples": resamples,
        "truncated": truncated,
        "text": text,
    }


def check(text: str, schema: dict[str, Any], truncated: bool) -> str | None:
    """None when ``text`` is one JSON value valid against ``schema``; else why not."""
    if truncated:
        return "truncated at max tokens"
    try:
        value = json.loads(text)
    except ValueError as e:
        return f"not JSON: {e}"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        return f"invalid at {'/'.join(str(p) for p in e.absolute_path) or '$'}: {e.message}"
    return None


RANGE_PROBES = [
    ('{"name":"set_alarm","arguments":{"hour":23,"minute":59,"label":"a"}}', True),
    ('{"name":"set_alarm","arguments":{"hour":0,"minute":0,"label":""}}', True),
    ('{"name":"set_alarm","arguments":{"hour":24,"minute":0,"label":"a"}}', False),
    ('{"name":"set_alarm","arguments":{"hour":203,"minute":0,"label":"a"}}', False),
    ('{"name":"set_alarm","arguments":{"hour":7,"minute":60,"label":"a"}}', False),
    ('{"name":"set_alarm","arguments":{"hour":-1,"minute":0,"label":"a"}}', False),
    ('{"name":"set_alarm","arguments":{"hour":07,"minute":0,"label":"a"}}', False),
    ('{"name":"set_alarm","arguments":{"hour":7,"minute":5,"label":"' + "x" * 25 + '"}}', False),
]


def probe(setup: Setup, engines: Sequence[str]) -> None:
    """Feed fixed texts token by token: does each engine accept exactly the valid ones?"""
    llm = setup.llm
    schema = SCHEMAS["small"]
    print("\n-- range probes on schema small (feed tokens; expect the valid ones only)")
    for e in engines:
        if e == "none" or e.endswith("-rej") or not setup.available(e):
            continue
        eng, _, _ = setup.compile(e, schema)
        wrong = []
        for text, ok in RANGE_PROBES:
            assert (check(text, schema, False) is None) == ok, text
            eng.reset()
            accepted = True
            fed = text
            for tok in llm.tokenize(fed.encode(), add_bos=False, special=False):
                if isinstance(eng, Gbnf):
                    good = eng.valid(tok)
                elif isinstance(eng, Llg):
                    good = eng.m.validate_tokens([tok]) == 1
                else:
                    good = True
                if not good:
                    accepted = False
                    break
                eng.accept(tok)
            if accepted and isinstance(eng, Gbnf):
                accepted = eng.valid(llm.token_eos())  # must be complete, too
            if accepted != ok:
                wrong.append(("accepted " if accepted else "rejected ") + text[32:62])
        eng.close()
        print(f"   {e:15s} {len(RANGE_PROBES) - len(wrong)}/{len(RANGE_PROBES)} right  {wrong}")


def spread(xs: Sequence[float]) -> str:
    """median [min-max]."""
    if not xs:
        return "-"
    return f"{statistics.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]"


def eval_ms(x: dict[str, Any]) -> float:
    """Model time per generated token (ms): decode time less sampling time."""
    steps = int(x["tokens"]) + (0 if x["truncated"] else 1)
    total_ms = float(x["decode_s"]) * 1e3 - float(x["sample_ms_per_token"]) * steps
    return total_ms / max(1, int(x["tokens"]))


def summarize(runs: dict[str, list[dict[str, Any]]]) -> None:
    """Print one table for one schema and thread count.

    ratio: median decode tok/s against ``none`` in the same run (noisy on a shared machine,
    and ``none`` writes longer answers). est: (e + s_none) / (e + s_engine), with e the median
    model time per token over every run of the table and s each engine's median sampling time
    per token: the engine's own cost, with machine noise in the model time taken out.
    """
    everything = [x for rs in runs.values() for x in rs if x["tokens"]]
    e_ms = statistics.median(eval_ms(x) for x in everything)
    s_none = statistics.median(x["sample_ms_per_token"] for x in runs.get("none", everything))
    base = statistics.median(x["decode_tps"] for x in runs["none"]) if "none" in runs else None
    print(
        f"\n   model ms/token (median, all runs): {e_ms:.1f}\n"
        f"   {'engine':15s} {'prompt tok/s':>19s} {'decode tok/s':>19s} {'ratio':>5s} {'est':>5s}"
        f" {'sample ms/tok':>17s} {'tokens':>17s} {'resampl':>7s} valid"
    )
    for e, rs in runs.items():
        tps = [x["decode_tps"] for x in rs if x["decode_tps"]]
        ptps = [x["prompt_tokens"] / x["prompt_s"] for x in rs]
        ratio = statistics.median(tps) / base if base and tps else float("nan")
        s_e = statistics.median(x["sample_ms_per_token"] for x in rs)
        est = (e_ms + s_none) / (e_ms + s_e)
        valid = sum(1 for x in rs if x["error"] is None)
        errs = sorted({x["error"] for x in rs if x["error"]})
        print(
            f"   {e:15s} {spread(ptps):>19s} {spread(tps):>19s} {ratio:5.2f} {est:5.2f}"
            f" {spread([x['sample_ms_per_token'] for x in rs]):>17s}"
            f" {spread([x['tokens'] for x in rs]):>17s}"
            f" {statistics.median(x['resamples'] for x in rs):7.0f}"
            f" {valid}/{len(rs)}" + (f"  e.g. {errs[0][:90]}" if errs else "")
        )


def from_json(path: Path) -> None:
    """Re-print the tables of a saved run."""
    data = json.loads(path.read_text())
    for key, times in data["compile"].items():
        print(f"   compile {key:32s} {spread(times):>22s} ms")
    groups: dict[tuple[int, str], dict[str, list[dict[str, Any]]]] = {}
    for x in data["runs"]:
        groups.setdefault((x["threads"], x["schema"]), {}).setdefault(x["engine"], []).append(x)
    for (threads, schema), runs in groups.items():
        print(f"\n== n_threads {threads}, schema {schema}, {len(runs['none'])} rounds")
        summarize(runs)


ALL_ENGINES = [
    "none",
    "gbnf-lcp",
    "gbnf-lcp-rej",
    "gbnf-range",
    "gbnf-range-rej",
    "llguidance",
    "llguidance-rej",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    ap = h.parser(__doc__, "grammar")
    ap.description, ap.formatter_class = __doc__, argparse.RawTextHelpFormatter
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--engines", nargs="+", default=ALL_ENGINES)
    ap.add_argument("--schemas", nargs="+", default=list(SCHEMAS))
    ap.add_argument("--show", action="store_true", help="print each output")
    ap.add_argument("--probe", action="store_true", help="range probes first (no decoding)")
    ap.add_argument("--from-json", type=Path, default=None, help="re-print a saved run; no model")
    args = ap.parse_args(argv)
    if args.from_json:
        from_json(args.from_json)
        return 0

    results: dict[str, Any] = {"compile": {}, "runs": []}
    for threads in args.threads:
        llm = h.load_llama(threads, n_ctx=2048, n_batch=512)
        fmt = h.chat_formatter(llm)
        c = Cands(llm)
        setup = Setup(llm, args.engines)
        engines = [e for e in args.engines if setup.available(e)]
        print(f"\n== n_threads {threads}; one-off per-model setup ms: {setup.setup_ms}")
        if args.probe:
            probe(setup, engines)
            if args.rounds == 0:
                continue
        for sname in args.schemas:
            schema = SCHEMAS[sname]
            built: dict[str, Engine] = {}
            print(
                f"\n-- schema {sname}: compile ms, median [min-max] of 5 fresh compiles, 1 if > 1 s"
            )
            for e in engines:
                times = []
                notes: dict[str, Any] = {}
                try:
                    for _ in range(5):
                        eng, ms, notes = setup.compile(e, schema)
                        times.append(ms)
                        if e in built:
                            eng.close()
                        else:
                            built[e] = eng
                        if ms > 1000:
                            break
                except Exception as ex:  # an engine that fails is a finding
                    print(f"   {e:15s} FAILED to compile: {type(ex).__name__}: {ex}")
                    continue
                results["compile"][f"{threads}/{sname}/{e}"] = times
                print(f"   {e:15s} {spread(times):>22s} ms  {notes or ''}")
            prompt_text = fmt(
                messages=[
                    {"role": "system", "content": system_prompt(SCHEMA_TOOLS[sname])},
                    {"role": "user", "content": REQUESTS[0]},
                ]
            ).prompt
            runs: dict[str, list[dict[str, Any]]] = {e: [] for e in built}
            for r in range(args.rounds):
                req = REQUESTS[r % len(REQUESTS)]
                prompt_text = fmt(
                    messages=[
                        {"role": "system", "content": system_prompt(SCHEMA_TOOLS[sname])},
                        {"role": "user", "content": req},
                    ]
                ).prompt
                prompt = llm.tokenize(prompt_text.encode(), add_bos=False, special=True)
                for e, eng in built.items():
                    res = generate(llm, c, eng, prompt, seed=1000 + r, max_tokens=args.max_tokens)
                    res["error"] = check(res["text"], schema, res["truncated"])
                    res.update(engine=e, schema=sname, threads=threads, round=r)
                    runs[e].append(res)
                    results["runs"].append(res)
                    if args.show:
                        print(f"   [{e} r{r}] {res['error'] or 'ok'}: {res['text'][:160]!r}")
            summarize(runs)
            # after every table, so that a stopped run keeps what it measured
            h.write(args, results, model=MODEL)
            for eng in built.values():
                eng.close()
        del llm
    h.write(args, results, model=MODEL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
