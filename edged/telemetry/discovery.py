"""Home Assistant MQTT discovery: the device's telemetry as Home Assistant sensors.

:func:`discovery_messages` builds one retained config message per sensor, on
``<prefix>/sensor/<node_id>/<key>/config`` (Home Assistant's documented discovery topic).
Each sensor reads its value from the periodic telemetry record (``state_topic`` is
``edged/<id>/telemetry``) through a Jinja2 ``value_template``. The sensors share one Home
Assistant device.

Availability (``availability_mode: all``, two entries): a sensor is available only while

1. the retained status message (``edged/<id>/status``) says ``online``, and
2. the latest record on the telemetry topic was a live one: its template renders
   ``offline`` for a record with ``"historical": true`` (replayed from the spool after an
   outage) and ``online`` for a live one.

Why the second entry: Home Assistant's MQTT sensor restarts its ``expire_after`` timer on
*every* message on the state topic, before it renders the value template. A historical
record therefore made an expired sensor available again, still showing its pre-outage
value. With the telemetry availability entry, that record makes the sensor unavailable
instead, and the next live record makes it available with the current value.

How the value templates treat edged's records (docs/telemetry.md):

- A value edged does not know is JSON ``null``; the template renders it as ``None``, which
  Home Assistant's MQTT sensor takes as the state *unknown* (never as zero).
- A historical record renders an empty string, which an MQTT sensor with a unit or a state
  class ignores: the state is never changed by a replayed record (Home Assistant stamps a
  state with the time it arrives, so an old value would be recorded as current).
- The energy counter is joules in the record and watt-hours in Home Assistant (its energy
  dashboard wants Wh or kWh), converted by the template.

Ids (every one collision-free across device ids, which are ``[A-Za-z0-9._-]``, 1-64):

- ``unique_id`` is ``edged_<device_id>_<key>`` with the device id exactly as it is; the
  device identifier is ``edged_<device_id>``.
- ``object_id`` (Home Assistant makes the entity id ``sensor.<object_id>`` from it) is
  ``edged_<device_id>_<key>`` when the device id is already an entity-id slug
  (``[a-z0-9]`` words joined by single ``_``), else ``edged_<slug>_<hash>_<key>``, where
  ``<hash>`` is 8 hex digits of the SHA-256 of the exact device id: ``kitchen_1``,
  ``kitchen-1``, ``kitchen.1`` and ``Kitchen-1`` all slug to ``kitchen_1`` and get four
  different entity ids.
- ``node_id`` (a topic level, ``[A-Za-z0-9_-]``) is ``edged_<device_id>`` when that is
  already safe, else ``edged_<safe>_<hash>``.

In both forms the plain one is used only when it cannot end like a hashed one (``_`` and
8 lowercase hex digits), so a plain id never equals a hashed one; two hashed ones differ
unless SHA-256 prefixes collide.

:func:`removal_messages` gives the empty retained payloads that make Home Assistant remove
the sensors; :class:`Announcer` decides, at each connection, which config topics to clear
(discovery turned off, or topics edged announced before that it no longer uses) and which
to announce, and remembers what it announced in a small state file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("edged.telemetry")

COMPONENT = "sensor"
MANUFACTURER = "edged project"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SLUG = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")  # what Home Assistant's slugify keeps as is
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_HASHED_TAIL = re.compile(r"_[0-9a-f]{8}$")  # how a hashed id ends: never a plain one


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """One Home Assistant sensor over one field of the telemetry record."""

    key: str  # the last topic level, and the suffix of unique_id and object_id
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

#: True for a replayed record (Jinja2; ``value_json`` is the record).
HISTORICAL = "(value_json.historical | default(false))"
#: The availability template of the telemetry topic: a replayed record is "offline".
TELEMETRY_AVAILABILITY = "{{ 'offline' if " + HISTORICAL + " else 'online' }}"
STATUS_AVAILABILITY = "{{ value_json.state }}"


def _digest(device_id: str) -> str:
    return hashlib.sha256(device_id.encode()).hexdigest()[:8]


def _check_device_id(device_id: str) -> None:
    if not device_id:
        raise ValueError("device_id must not be empty")


def node_id(device_id: str) -> str:
    """The ``<node_id>`` topic level: ``edged_<device_id>`` if that is safe, else hashed."""
    _check_device_id(device_id)
    raw = f"edged_{device_id}"
    if not _UNSAFE.search(raw) and not _HASHED_TAIL.search(raw):
        return raw
    return f"{_UNSAFE.sub('_', raw)}_{_digest(device_id)}"


def object_base(device_id: str) -> str:
    """The start of every ``object_id`` of this device (the entity ids' ``edged_...``)."""
    _check_device_id(device_id)
    raw = f"edged_{device_id}"
    if _SLUG.match(raw) and not _HASHED_TAIL.search(raw):
        return raw
    slug = _NOT_SLUG.sub("_", raw.lower()).strip("_")  # starts with "edged", never empty
    return f"{slug}_{_digest(device_id)}"


def unique_id(device_id: str, spec: SensorSpec) -> str:
    """``edged_<device_id>_<key>``, the device id exactly as it is."""
    _check_device_id(device_id)
    return f"edged_{device_id}_{spec.key}"


def value_template(spec: SensorSpec) -> str:
    """The sensor's ``value_template``: empty for a replayed (historical) record."""
    return "{{ '' if " + HISTORICAL + " else " + spec.value_expr + " }}"


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
    """``<prefix>/sensor/<node_id>/<key>/config``."""
    return f"{_check_prefix(prefix)}/{COMPONENT}/{node_id(device_id)}/{spec.key}/config"


def config_topics(device_id: str, prefix: str) -> list[str]:
    """Every config topic of this device under ``prefix``."""
    return [config_topic(prefix, device_id, spec) for spec in SENSORS]


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
    no record came for that long (a few times ``telemetry.interval_s``). Raises
    ValueError for an empty device id, a prefix that is not a topic prefix, or an
    ``expire_after_s`` below 1.
    """
    if expire_after_s is not None and expire_after_s < 1:
        raise ValueError("expire_after_s must be at least 1")
    device = {
        "identifiers": [f"edged_{device_id}"],
        "name": f"edged {device_id}",
        "manufacturer": MANUFACTURER,
        "model": "edged",
        "sw_version": version,
    }
    origin = {"name": "edged", "sw_version": version}
    availability = [
        {
            "topic": status_topic,
            "value_template": STATUS_AVAILABILITY,
            "payload_available": "online",
            "payload_not_available": "offline",
        },
        {
            "topic": telemetry_topic,
            "value_template": TELEMETRY_AVAILABILITY,
            "payload_available": "online",
            "payload_not_available": "offline",
        },
    ]
    base = object_base(device_id)
    out: list[tuple[str, bytes]] = []
    for spec in SENSORS:
        payload: dict[str, Any] = {
            "name": spec.name,
            "unique_id": unique_id(device_id, spec),
            "object_id": f"{base}_{spec.key}",
            "state_topic": telemetry_topic,
            "value_template": value_template(spec),
            "state_class": spec.state_class,
            "availability": availability,
            "availability_mode": "all",
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
    return [(topic, b"") for topic in config_topics(device_id, prefix)]


# --- announcing at each connection ---------------------------------------------------------------


class Publisher(Protocol):
    """The part of :class:`edged.mqtt.link.MqttLink` the announcer uses."""

    @property
    def connected(self) -> asyncio.Event: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = ..., retain: bool = ...) -> Any:
        """Queue a PUBLISH; what it returns may have paho's ``is_published()``."""
        ...


def _acked(info: Any) -> bool:
    is_published = getattr(info, "is_published", None)
    if is_published is None:
        return True
    try:
        return bool(is_published())
    except (RuntimeError, ValueError):
        return False


class Announcer:
    """What to publish on the discovery topics at each connection, and the record of it.

    The record, ``state_file`` (JSON ``{"topics": [...]}``), lists the config topics edged
    announced and the broker acknowledged. At each connection edged clears (empty retained
    payload) every recorded topic it does not announce now, then announces the current
    configs if discovery is on, and rewrites the record once the broker acknowledged all.
    So turning discovery off, changing ``discovery_prefix`` or the device id removes the
    sensors announced before. Without a record (first start, or the file lost) and with
    discovery off, it clears this device id's config topics under the current prefix.
    """

    def __init__(
        self,
        state_file: Path,
        *,
        enabled: bool,
        device_id: str,
        prefix: str,
        telemetry_topic: str,
        status_topic: str,
        version: str,
        expire_after_s: int | None = None,
        ack_timeout_s: float = 30.0,
    ) -> None:
        self.state_file = state_file
        self.enabled = enabled
        self.device_id = device_id
        self.prefix = prefix
        self.telemetry_topic = telemetry_topic
        self.status_topic = status_topic
        self.version = version
        self.expire_after_s = expire_after_s
        self.ack_timeout_s = ack_timeout_s

    def load(self) -> set[str] | None:
        """The recorded topics; None when there is no readable record (blocking)."""
        try:
            data = json.loads(self.state_file.read_text())
            topics = data["topics"]
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                raise ValueError("topics is not a list of strings")
            return set(topics)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning(
                "event=discovery_record_unreadable path=%s error=%r", self.state_file, str(e)
            )
            return None

    def save(self, topics: Collection[str]) -> None:
        """Replace the record atomically (blocking); errors are logged, not raised."""
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
            with open(tmp, "w") as f:
                json.dump({"topics": sorted(topics), "saved_unix_s": time.time()}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_file)
        except OSError as e:
            log.warning("event=discovery_record_save_failed error=%r", str(e))

    def configs(self) -> list[tuple[str, bytes]]:
        """The config messages to announce now (none when discovery is off)."""
        if not self.enabled:
            return []
        return discovery_messages(
            self.device_id,
            self.prefix,
            self.telemetry_topic,
            self.status_topic,
            self.version,
            expire_after_s=self.expire_after_s,
        )

    def plan(self, recorded: set[str] | None) -> list[tuple[str, bytes]]:
        """Removals first (empty payloads), then the configs; publish each retained, QoS 1."""
        configs = self.configs()
        current = {topic for topic, _ in configs}
        if recorded is None:
            recorded = set() if self.enabled else set(config_topics(self.device_id, self.prefix))
        removals = [(topic, b"") for topic in sorted(recorded - current)]
        return removals + configs

    async def announce(self, link: Publisher) -> bool:
        """Publish :meth:`plan` on ``link``; True once the broker acknowledged everything
        and the record is rewritten. False when the link dropped first (the record stays,
        so the next connection clears again)."""
        loop = asyncio.get_running_loop()
        recorded = await loop.run_in_executor(None, self.load)
        try:
            messages = self.plan(recorded)
        except ValueError as e:  # a discovery prefix that is not a topic prefix
            log.error("event=discovery_refused error=%r", str(e))
            return False
        infos = [link.publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
        removed = sum(1 for _, payload in messages if not payload)
        deadline = loop.time() + self.ack_timeout_s
        while not all(_acked(i) for i in infos):  # paho offers no awaitable for PUBACKs
            if not link.connected.is_set() or loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        current = [topic for topic, payload in messages if payload]
        if recorded != set(current):
            await loop.run_in_executor(None, self.save, current)
        log.info("event=discovery_announced configs=%d removed=%d", len(current), removed)
        return True
