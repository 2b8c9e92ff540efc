"""Filling a device tool's topic template from a call's arguments (pure, no I/O).

Each ``{name}`` placeholder takes the argument ``name``, which must be one topic level: a
non-empty string, or a number or boolean (written as its JSON scalar, ``3``, ``true``),
without ``/``, ``+``, ``#``, NUL or other control characters. Anything else is refused, so
the arguments can never steer a publish outside the tool's topic: a filled topic has the
template's levels, and starts with the text before its first placeholder.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edged.config_agent import PLACEHOLDER_RE

#: Longest filled topic, UTF-8 bytes (MQTT allows 65,535; a device topic is short).
MAX_TOPIC_BYTES = 512


class TopicRefused(ValueError):
    """A placeholder's value is not one topic level; the message says which and why."""


def level_value(name: str, value: Any) -> str:
    """``value`` as one topic level for placeholder ``name``; TopicRefused otherwise."""
    if isinstance(value, bool) or (isinstance(value, (int, float)) and json_finite(value)):
        text = json.dumps(value)
    elif isinstance(value, str):
        text = value
    else:
        raise TopicRefused(f"{{{name}}}: a placeholder takes a string, number or boolean")
    if not text:
        raise TopicRefused(f"{{{name}}}: an empty value is not a topic level")
    for bad in ("/", "+", "#"):
        if bad in text:
            raise TopicRefused(f"{{{name}}}: {bad!r} is not allowed in a topic level")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text):
        raise TopicRefused(f"{{{name}}}: control characters are not allowed in a topic level")
    if any(0xD800 <= ord(c) <= 0xDFFF or c in "\ufffe\uffff" for c in text):
        raise TopicRefused(f"{{{name}}}: not valid UTF-8 text for a topic")
    return text


def json_finite(value: int | float) -> bool:
    """True for a number JSON can write (not NaN or an infinity)."""
    return isinstance(value, int) or math.isfinite(value)


def fill_topic(template: str, arguments: dict[str, Any]) -> str:
    """``template`` with each placeholder replaced by its argument (:func:`level_value`);
    TopicRefused when an argument is missing or not one level, or the topic is too long."""

    def one(m: Any) -> str:
        name = m.group(1)
        if name not in arguments:
            raise TopicRefused(f"{{{name}}}: the call has no argument {name!r}")
        return level_value(name, arguments[name])

    topic = PLACEHOLDER_RE.sub(one, template)
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise TopicRefused(f"the filled topic is over {MAX_TOPIC_BYTES} bytes")
    return topic
