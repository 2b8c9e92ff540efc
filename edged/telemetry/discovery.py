"""Home Assistant MQTT discovery: the device's telemetry as Home Assistant sensors.

:func:`discovery_messages` builds one retained config message per sensor, on
``<prefix>/sensor/<node_id>/<object_id>/config`` (Home Assistant's documented discovery
topic). Each sensor reads its value from the periodic telemetry record (``state_topic`` is
``edged/<id>/telemetry``) through a Jinja2 ``value_template``, and its availability from the
retained status message (``availability_topic`` is ``edged/<id>/status``, whose ``state`` is
``online`` or ``offline``). The sensors share one Home Assistant device.

How the templates treat edged's records (docs/telemetry.md):

- A value edged does not know is JSON ``null``; the template renders it as ``None``, which
  Home Assistant's MQTT sensor takes as the state *unknown* (never as zero).
- Records replayed from the spool after an outage carry ``"historical": true``; for them
  the template renders an empty string, which an MQTT sensor with a unit or a state class
  ignores. Home Assistant stamps a state with the time it arrives, so an old value would be
  shown and recorded as current; the next live record (one ``interval_s`` later) brings the
  current value, and the energy total loses nothing (it is cumulative).
- The energy counter is joules in the record and watt-hours in Home Assistant (its energy
  dashboard wants Wh or kWh), converted by the template.

Node and object ids may hold only ``[A-Za-z0-9_-]``: a device id with other characters
(edged allows ``.``) has them replaced by ``_`` and a short hash of the id appended, so
two devices never share a topic. ``unique_id`` and the device identifier use the device id
as it is.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

COMPONENT = "sensor"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """One Home Assistant sensor over one field of the telemetry record."""

    key: str  # the object id, and the suffix of unique_id
    name: str  # Home Assistant shows "<device name> <name>"
    field: str  # dotted path of the field in the telemetry record
    unit: str | None
    device_class: str | None
    state_class: str
    #: Jinja2 expression of the value (``value_json`` is the record); default: the field.
    expr: str | None = None
    icon: str | None = None
    entity_category: str | None = None

    @property
    def value_expr(self) -> str:
        """The expression that gives the sensor's value from ``value_json``."""
        return self.expr or f"value_json.{self.field}"


SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec("battery", "Battery", "battery.pct", "%", "battery", "measurement"),
    SensorSpec("power", "Board power", "power.total_w", "W", "power", "measurement"),
    SensorSpec(
        "energy",
        "Energy",
        "energy.total_j",
        "Wh",
        "energy",
        "total_increasing",
        # J -> Wh; rounding is monotonic, so the series still never goes backwards; null
        # (no power source) stays None, which Home Assistant shows as unknown
        expr="None if value_json.energy.total_j is none "
        "else (value_json.energy.total_j / 3600) | round(4)",
    ),
    SensorSpec(
        "tokens_per_joule",
        "Tokens per joule",
        "llm.tokens_per_joule_avg",
        "tokens/J",
        None,
        "measurement",
        icon="mdi:leaf",
    ),
    SensorSpec(
        "tokens_per_second",
        "Tokens per second",
        "llm.tokens_per_s_avg",
        "tokens/s",
        None,
        "measurement",
        icon="mdi:speedometer",
    ),
    SensorSpec(
        "queue_depth",
        "Queue depth",
        "llm.queue_depth",
        "requests",
        None,
        "measurement",
        icon="mdi:tray-full",
        entity_category="diagnostic",
    ),
)


def node_id(device_id: str) -> str:
    """The ``<node_id>`` topic level for ``device_id``: ``edged_<device_id>``, made safe."""
    if not device_id:
        raise ValueError("device_id must not be empty")
    raw = f"edged_{device_id}"
    if not _UNSAFE.search(raw):
        return raw
    digest = hashlib.sha256(device_id.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', raw)}_{digest}"


def value_template(spec: SensorSpec) -> str:
    """The sensor's ``value_template``: empty for a replayed (historical) record."""
    return "{{ '' if value_json.historical is defined else " + spec.value_expr + " }}"


def _check_prefix(prefix: str) -> str:
    if (
        not prefix
        or prefix.startswith("/")
        or prefix.endswith("/")
        or any(c in prefix for c in "+#\0")
    ):
        raise ValueError(f"discovery prefix {prefix!r}: not a topic prefix")
    return prefix


def config_topic(prefix: str, device_id: str, spec: SensorSpec) -> str:
    """``<prefix>/sensor/<node_id>/<object_id>/config``."""
    return f"{_check_prefix(prefix)}/{COMPONENT}/{node_id(device_id)}/{spec.key}/config"


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def discovery_messages(
    device_id: str,
    prefix: str,
    telemetry_topic: str,
    status_topic: str,
    version: str,
    *,
    expire_after_s: int | None = None,
) -> list[tuple[str, bytes]]:
    """The discovery config messages, as ``(topic, payload)``; publish each retained, QoS 1.

    ``expire_after_s``, when given, makes Home Assistant show a sensor as unavailable when
    no live record came for that long (a few times ``telemetry.interval_s``). Raises
    ValueError for an empty device id, a prefix that is not a topic prefix, or an
    ``expire_after_s`` below 1.
    """
    if expire_after_s is not None and expire_after_s < 1:
        raise ValueError("expire_after_s must be at least 1")
    device = {
        "identifiers": [f"edged_{device_id}"],
        "name": f"edged {device_id}",
        "model": "edged",
        "sw_version": version,
    }
    origin = {"name": "edged", "sw_version": version}
    out: list[tuple[str, bytes]] = []
    for spec in SENSORS:
        payload: dict[str, Any] = {
            "name": spec.name,
            "unique_id": f"edged_{device_id}_{spec.key}",
            "state_topic": telemetry_topic,
            "value_template": value_template(spec),
            "state_class": spec.state_class,
            "availability_topic": status_topic,
            "availability_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": 1,
            "device": device,
            "origin": origin,
        }
        if spec.unit is not None:
            payload["unit_of_measurement"] = spec.unit
        if spec.device_class is not None:
            payload["device_class"] = spec.device_class
        if spec.icon is not None:
            payload["icon"] = spec.icon
        if spec.entity_category is not None:
            payload["entity_category"] = spec.entity_category
        if expire_after_s is not None:
            payload["expire_after"] = expire_after_s
        out.append((config_topic(prefix, device_id, spec), _encode(payload)))
    return out


def removal_messages(device_id: str, prefix: str) -> list[tuple[str, bytes]]:
    """Empty retained payloads on the same topics: Home Assistant removes the sensors."""
    return [(config_topic(prefix, device_id, spec), b"") for spec in SENSORS]
