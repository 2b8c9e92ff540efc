"""Hypothesis strategies for hostile request payloads, shared by the in-process parser fuzz
(tests/unit/test_fuzz_wire.py) and the run through the real daemon
(tests/integration/test_hostile_clients.py)."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from tests.tool_strategies import tool_requests

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

#: Ids a careless or hostile client sends: topic wildcards and separators, control
#: characters, C1 controls, very long ones, not strings at all.
ids = st.one_of(
    st.text(max_size=140),
    st.text(alphabet="ab/+#\x00\x07\x1f\x7f\x85\u2028 ", max_size=20),
    st.text(alphabet="a", min_size=120, max_size=300),
    st.integers(),
    st.none(),
)

#: Request objects, every field optional and often of the wrong type or out of range.
fields = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "prompt": st.one_of(st.text(max_size=200), st.integers(), st.none()),
        "messages": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.sampled_from(
                            ["user", "system", "assistant", "tool", "robot", ""]
                        ),
                        "content": st.one_of(st.text(max_size=50), st.integers(), st.none()),
                    }
                ),
                max_size=4,
            ),
            json_values,
        ),
        "max_tokens": st.one_of(
            st.integers(-10, 10**9), st.floats(allow_nan=False), st.text(max_size=5)
        ),
        "temperature": st.one_of(st.floats(allow_nan=False), st.integers(-3, 5), st.none()),
        "stream": st.one_of(st.booleans(), st.integers(0, 1), st.text(max_size=3)),
        "route": st.one_of(st.sampled_from(["auto", "local", "cloud", "moon"]), st.integers()),
        "sensitivity": st.sampled_from(["normal", "private", "secret"]),
        "deadline_ms": st.one_of(st.integers(-(10**6), 10**10), st.floats(allow_nan=False)),
        "reply_to": st.one_of(
            st.text(max_size=30),
            st.sampled_from(
                [
                    "reply/x",
                    "reply/+",
                    "edged/dev1/request",
                    "home/#",
                    "edged/a/response/b",
                    "reply/\x00",
                    "reply/" + "x" * 600,
                ]
            ),
        ),
        "policy": st.one_of(st.text(max_size=10), st.integers()),
        "extra": json_values,
    },
)


def _nested(depth: int) -> bytes:
    return b'{"id": "deep", "prompt": "x", "x": ' + b"[" * depth + b"]" * depth + b"}"


def _oversized(size: int) -> bytes:
    return json.dumps({"id": "big", "prompt": "x" * size}).encode()


def _bad_utf8(junk: bytes) -> bytes:
    return b'{"id": "utf", "prompt": "' + junk + b'"}'


#: Whole payloads: generated request objects (tool calling too), raw bytes, JSON nested far
#: past the depth limit, payloads over the size limit (64 KiB by default), strings that are
#: not UTF-8.
payloads = st.one_of(
    fields.map(lambda body: json.dumps(body).encode()),
    tool_requests().map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=300),
    st.integers(1, 5000).map(_nested),
    st.integers(65_000, 120_000).map(_oversized),
    st.binary(min_size=1, max_size=16)
    .filter(lambda b: b"\\" not in b and b'"' not in b)
    .map(_bad_utf8),
)
