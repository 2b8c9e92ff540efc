"""Reading how long a server asks us to wait (``Retry-After``, ``retry-after-ms``)."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from edged.backends.retry_after import MAX_RETRY_AFTER_S, parse_retry_after

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"content-type": "application/json"}, None),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": " 0.5 "}, 0.5),
        ({"RETRY-AFTER": "0"}, 0.0),
        ({"Retry-After": "-4"}, 0.0),  # in the past: no wait, never negative
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0),  # unreadable: the other one
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "86400"}, MAX_RETRY_AFTER_S),  # capped
        ({"Retry-After": "inf"}, MAX_RETRY_AFTER_S),
        ({"Retry-After": formatdate(NOW + 42, usegmt=True)}, 42.0),  # an HTTP date
        ({"Retry-After": formatdate(NOW - 42, usegmt=True)}, 0.0),
        ({"Retry-After": "Mon, 99 Foo 2026 25:61:00 GMT"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, NOW) == expected
