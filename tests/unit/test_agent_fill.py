"""Filling a device tool's topic from a call's arguments: each value is one topic level or
the call is refused, so arguments never steer a publish outside the tool's topic."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.agent.fill import TopicRefused, fill_topic


def test_strings_numbers_and_booleans_fill_placeholders() -> None:
    assert fill_topic("home/{room}/light/set", {"room": "kitchen"}) == "home/kitchen/light/set"
    assert fill_topic("home/zone{n}/{on}", {"n": 3, "on": True}) == "home/zone3/true"
    assert fill_topic("home/{x}", {"x": 1.5}) == "home/1.5"
    assert fill_topic("home/{a}/{a}", {"a": "k"}) == "home/k/k"
    assert fill_topic("home/light", {}) == "home/light"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("kitchen/../edged", "'/'"),
        ("+", "'+'"),
        ("#", "'#'"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x85b", "control"),
        ("", "empty"),
        (None, "string, number or boolean"),
        ([1], "string, number or boolean"),
        ({"a": 1}, "string, number or boolean"),
        (float("nan"), "string, number or boolean"),
        ("\ud800", "UTF-8"),
    ],
)
def test_values_that_are_not_one_level_are_refused(value: Any, why: str) -> None:
    with pytest.raises(TopicRefused, match=re.escape(why)):
        fill_topic("home/{room}/light/set", {"room": value})


def test_a_missing_argument_is_refused() -> None:
    with pytest.raises(TopicRefused, match="no argument 'room'"):
        fill_topic("home/{room}/light/set", {})


def test_an_overlong_topic_is_refused() -> None:
    with pytest.raises(TopicRefused, match="over 512 bytes"):
        fill_topic("home/{room}", {"room": "x" * 600})


SCALARS = st.one_of(
    st.text(max_size=40), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none()
)


@settings(max_examples=400, deadline=None)
@given(
    head=st.sampled_from(["home/", "home/zone_", "home/a/b/"]),
    tail=st.sampled_from(["", "/set", "/light/state", "_x/y"]),
    room=SCALARS,
    other=SCALARS,
)
def test_a_filled_topic_stays_under_the_templates_literal_prefix(
    head: str, tail: str, room: Any, other: Any
) -> None:
    template = f"{head}{{room}}{tail}/{{other}}"
    try:
        topic = fill_topic(template, {"room": room, "other": other})
    except TopicRefused:
        return
    assert topic.startswith(head)
    assert topic.count("/") == template.count("/")  # the template's levels, no more
    assert "+" not in topic and "#" not in topic
    assert all(level for level in topic.split("/"))
    assert not any(ord(c) < 0x20 for c in topic)
