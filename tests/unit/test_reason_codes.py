"""Every route reason code the code can produce is in one list (``edged.router.policy.REASONS``),
and that list is what docs/protocol.md, docs/routing.md, docs/schemas/result.schema.json and
the router's docstring name.

The code side is read two ways: the source (every reason literal in ``decide`` and every
literal a ``RouteDecision(...)`` is built with anywhere in edged/), and random device states
through ``decide``.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import edged.router.policy as policy_module
from edged.config import PolicyConfig
from edged.errors import Timeout, Unavailable
from edged.router.policy import (
    DECISION_REASONS,
    FALLBACK_REASONS,
    REASONS,
    SEMANTIC_PREFIX,
    RouteInputs,
    RouterState,
    decide,
)
from tests.unit.test_router import inputs, policies

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "edged"
CODE = re.compile(r"^[a-z][a-z_]*$")


def _literals(node: ast.AST) -> set[str]:
    return {
        n.value
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and CODE.match(n.value)
    }


def _function(path: Path, name: str) -> ast.FunctionDef:
    tree = ast.parse(path.read_text())
    (fn,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    return fn


def test_the_list_has_no_duplicates_and_the_fallbacks_are_apart() -> None:
    assert len(set(REASONS)) == len(REASONS)
    assert set(DECISION_REASONS).isdisjoint(FALLBACK_REASONS)
    assert all(CODE.match(r) for r in REASONS)


def test_decide_gives_exactly_the_listed_decision_reasons() -> None:
    # every lower_snake literal in decide() (its helpers included) is a reason code: the
    # policy's messages are sentences, and backends are named by LOCAL / CLOUD
    found = _literals(_function(PKG / "router" / "policy.py", "decide"))
    assert found == set(DECISION_REASONS)


def test_every_route_decision_in_edged_is_built_from_listed_reasons() -> None:
    produced: dict[str, set[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "RouteDecision"
                and len(node.args) > 1
            ):
                produced.setdefault(str(path.relative_to(ROOT)), set()).update(
                    _literals(node.args[1])
                )
    assert produced, "no RouteDecision(...) found: the scan is broken"
    for where, codes in produced.items():
        assert codes <= set(REASONS), (where, codes - set(REASONS))
    # the router's fallback() is where the fallbacks are added, and nowhere else
    fallback = _literals(_function(PKG / "router" / "policy.py", "fallback"))
    assert fallback == set(FALLBACK_REASONS)
    for where, codes in produced.items():
        if where != "edged/router/policy.py":
            assert codes.isdisjoint(FALLBACK_REASONS), where


@settings(max_examples=500, deadline=None)
@given(inputs, policies, st.booleans())
def test_every_decision_carries_only_listed_reasons(
    inp: RouteInputs, policy: PolicyConfig, was_low: bool
) -> None:
    try:
        d, _ = decide(inp, policy, RouterState(battery_low=was_low))
    except (Unavailable, Timeout):
        return
    for r in d.reasons:
        assert r in DECISION_REASONS or (
            r.startswith(SEMANTIC_PREFIX) and r[len(SEMANTIC_PREFIX) :] in inp.semantic
        ), r


# --- the documents -------------------------------------------------------------------------

DOCUMENTED = [*REASONS, "semantic:", "failed:"]


def _codes_in_backticks(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"`([a-z][a-z_]*(?::<?[a-z-]*>?)?)`", text)}


def _protocol_route_row() -> str:
    rows = [
        line
        for line in (ROOT / "docs" / "protocol.md").read_text().splitlines()
        if line.startswith("| `route` | object |")
    ]
    assert len(rows) == 1, rows
    return rows[0]


def test_protocol_lists_every_reason_and_no_other() -> None:
    row = _protocol_route_row()
    start, end = row.index("at least one:"), row.index("each explained")
    listed = {c.split(":")[0] + ":" if ":" in c else c for c in _codes_in_backticks(row[start:end])}
    assert listed == set(DOCUMENTED)


def test_routing_md_explains_every_reason() -> None:
    text = (ROOT / "docs" / "routing.md").read_text()
    shown = _codes_in_backticks(text)
    missing = [r for r in REASONS if r not in shown]
    assert not missing, missing
    assert "`semantic:<route>`" in text


def test_the_result_schema_lists_and_accepts_exactly_the_reasons() -> None:
    schema = json.loads((ROOT / "docs" / "schemas" / "result.schema.json").read_text())
    reasons = schema["properties"]["route"]["properties"]["reasons"]
    enum = next(a["enum"] for a in reasons["items"]["anyOf"] if "enum" in a)
    assert sorted(enum) == sorted(REASONS)
    words = set(re.findall(r"[a-z_]+(?::<route>)?", reasons["description"]))
    assert set(REASONS) <= words and "semantic:<route>" in words
    assert "failed:<name>" in reasons["description"]
    v = Draft202012Validator(reasons)
    for r in (*REASONS, "semantic:fresh-facts", "failed:edge"):
        assert v.is_valid([r]), r
    for bad in (["made_up"], [], ["semantic:"], ["cloud-failed"]):
        assert not v.is_valid(bad), bad


@pytest.mark.parametrize("code", DOCUMENTED)
def test_the_router_docstring_lists_every_reason(code: str) -> None:
    doc = policy_module.__doc__ or ""
    assert f"``{code}" in doc
