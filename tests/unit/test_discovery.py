"""Home Assistant MQTT discovery: topics, payloads, and templates rendered against real
telemetry records and status messages (Home Assistant's templates are Jinja2).

What Home Assistant does with the payloads is modelled by :class:`HaSensor` after its MQTT
sensor as documented (sensor.mqtt, "availability", "expire_after") and as its 2024.x code
behaves: every message on the state topic restarts the ``expire_after`` timer before the
value template is rendered; a rendered empty string is ignored by a sensor with a unit or
a state class; ``None`` sets the state to unknown; each availability entry keeps the last
``payload_available``/``payload_not_available`` its template rendered (anything else
changes nothing), starts unavailable, and ``availability_mode: all`` needs all of them."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, StrictUndefined

from edged import __version__
from edged.config import Config
from edged.mqtt.topics import Topics
from edged.telemetry.discovery import (
    MANUFACTURER,
    SENSORS,
    Announcer,
    config_topics,
    discovery_messages,
    node_id,
    object_base,
    removal_messages,
)
from edged.telemetry.presence import Presence, status_payload
from tests.unit.test_telemetry_schemas import (
    BOARD_W,
    Clock,
    board_rig,
    make_reporter,
    observe_all,
    wire,
)

TOPICS = Topics("edged", "kitchen-1")
TOPIC_RE = re.compile(r"^homeassistant/sensor/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")
REQUIRED = {
    "name",
    "unique_id",
    "object_id",
    "state_topic",
    "value_template",
    "state_class",
    "availability",
    "availability_mode",
    "device",
}
#: The keys Home Assistant documents for an MQTT sensor (integrations/sensor.mqtt), in full
#: (not abbreviated); a key outside these is rejected by its discovery schema.
HA_SENSOR_KEYS = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "expire_after",
    "force_update",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "last_reset_value_template",
    "name",
    "object_id",
    "options",
    "origin",
    "payload_available",
    "payload_not_available",
    "platform",
    "suggested_display_precision",
    "qos",
    "state_class",
    "state_topic",
    "unique_id",
    "unit_of_measurement",
    "value_template",
}
HA_DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
HA_AVAILABILITY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}
HA_ORIGIN_KEYS = {"name", "sw_version", "support_url"}
#: Jinja2 as Home Assistant uses it: a sandbox; StrictUndefined here so that a template
#: naming a field the record lacks fails the test instead of rendering empty.
JINJA = Environment(undefined=StrictUndefined, autoescape=False)


def messages(device_id: str = "kitchen-1", **kw: Any) -> list[tuple[str, bytes]]:
    t = Topics("edged", device_id)
    return discovery_messages(device_id, "homeassistant", t.telemetry, t.status, __version__, **kw)


def configs(device_id: str = "kitchen-1") -> dict[str, dict[str, Any]]:
    """object_id -> decoded config payload."""
    out = {}
    for topic, payload in messages(device_id):
        out[topic.split("/")[3]] = json.loads(payload)
    return out


def render(template: str, payload: dict[str, Any] | str) -> str:
    """Render as Home Assistant's MQTT entities do (``value`` and ``value_json``), stripped."""
    if isinstance(payload, str):
        value, value_json = payload, json.loads(payload)
    else:
        value, value_json = json.dumps(payload), payload
    return JINJA.from_string(template).render(value=value, value_json=value_json).strip()


def field(record: dict[str, Any], dotted: str) -> Any:
    node: Any = record
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, dotted
        node = node[part]
    return node


# --- topics and payloads -------------------------------------------------------------------------


def test_one_retained_config_per_sensor_on_well_formed_topics() -> None:
    msgs = messages()
    assert len(msgs) == len(SENSORS) == 6
    topics = [t for t, _ in msgs]
    assert len(set(topics)) == len(topics)
    for topic in topics:
        assert TOPIC_RE.match(topic), topic
        assert topic.split("/")[2] == "edged_kitchen-1"
    assert {t.split("/")[3] for t in topics} == {
        "battery",
        "power",
        "energy",
        "tokens_per_joule",
        "tokens_per_second",
        "queue_depth",
    }


def test_payloads_are_json_with_the_required_keys() -> None:
    for topic, payload in messages():
        body = json.loads(payload.decode("utf-8"))
        assert set(body) >= REQUIRED, (topic, REQUIRED - set(body))
        assert body["state_topic"] == "edged/kitchen-1/telemetry"
        assert body["availability_mode"] == "all"
        status, telemetry = body["availability"]
        assert status["topic"] == "edged/kitchen-1/status"
        assert telemetry["topic"] == body["state_topic"]
        for entry in (status, telemetry):
            assert (entry["payload_available"], entry["payload_not_available"]) == (
                "online",
                "offline",
            )
        assert body["device"] == {
            "identifiers": ["edged_kitchen-1"],
            "name": "edged kitchen-1",
            "manufacturer": MANUFACTURER,
            "model": "edged",
            "sw_version": __version__,
        }
        assert body["origin"]["name"] == "edged"
        assert body["state_class"] in {"measurement", "total_increasing"}
        assert "expire_after" not in body
        assert all(isinstance(k, str) and v is not None for k, v in body.items())


def test_payloads_use_only_keys_home_assistant_documents() -> None:
    for topic, payload in messages(expire_after_s=30):
        body = json.loads(payload)
        assert set(body) <= HA_SENSOR_KEYS, (topic, set(body) - HA_SENSOR_KEYS)
        assert set(body["device"]) <= HA_DEVICE_KEYS
        assert body["device"]["identifiers"] and body["device"]["manufacturer"]
        assert set(body["origin"]) <= HA_ORIGIN_KEYS and body["origin"]["name"]
        # "availability" must not be used together with "availability_topic" (documented;
        # Home Assistant's schema makes them exclusive), and a list entry needs its topic
        assert not {"availability_topic", "availability_template"} & set(body)
        assert body["availability_mode"] in {"all", "any", "latest"}
        topics = [entry["topic"] for entry in body["availability"]]
        assert len(set(topics)) == len(topics)  # Home Assistant keys the entries by topic
        for entry in body["availability"]:
            assert set(entry) <= HA_AVAILABILITY_KEYS and entry["topic"]
        assert isinstance(body["expire_after"], int) and body["expire_after"] > 0
        assert body["qos"] in (0, 1, 2)
        assert re.fullmatch(r"[a-z0-9_]+", body["object_id"])
        for key in ("value_template", *(f"availability.{i}" for i in range(2))):
            tpl = (
                body["availability"][int(key[-1])]["value_template"]
                if key.startswith("availability")
                else body[key]
            )
            JINJA.parse(tpl)  # valid Jinja2


def test_sensor_classes_and_units() -> None:
    c = configs()
    assert (c["battery"]["device_class"], c["battery"]["unit_of_measurement"]) == ("battery", "%")
    assert (c["power"]["device_class"], c["power"]["unit_of_measurement"]) == ("power", "W")
    assert c["energy"]["device_class"] == "energy"
    assert c["energy"]["unit_of_measurement"] in {"Wh", "kWh"}
    assert c["energy"]["state_class"] == "total_increasing"
    assert c["tokens_per_joule"]["unit_of_measurement"] == "tokens/J"
    assert c["tokens_per_joule"]["state_class"] == "measurement"
    assert c["tokens_per_second"]["unit_of_measurement"] == "tokens/s"
    assert c["queue_depth"]["state_class"] == "measurement"
    for key in ("battery", "power"):
        assert c[key]["state_class"] == "measurement"


def test_unique_ids_are_unique_per_sensor_and_per_device() -> None:
    ids = [b["unique_id"] for b in configs().values()]
    ids += [b["unique_id"] for b in configs("garage-2").values()]
    assert len(set(ids)) == len(ids) == 2 * len(SENSORS)
    assert all(i.startswith("edged_kitchen-1_") for i in ids[: len(SENSORS)])


def ha_slugify(text: str) -> str:
    """Home Assistant's entity-id slug (python-slugify with separator "_"), for ASCII:
    lower case, every run of other characters one "_", none at the ends."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


COLLIDING = ("kitchen-1", "kitchen_1", "kitchen.1", "Kitchen-1")


def test_device_ids_that_slug_alike_get_distinct_ids_everywhere() -> None:
    # all four are "kitchen_1" once slugged, as Home Assistant does for entity ids
    assert {ha_slugify(d) for d in COLLIDING} == {"kitchen_1"}
    entity_ids, unique_ids, nodes, topics = set(), set(), set(), set()
    for device_id in COLLIDING:
        nodes.add(node_id(device_id))
        for topic, payload in messages(device_id):
            body = json.loads(payload)
            assert TOPIC_RE.match(topic), topic
            topics.add(topic)
            unique_ids.add(body["unique_id"])
            # Home Assistant: entity_id = "sensor." + slugify(object_id)
            assert ha_slugify(body["object_id"]) == body["object_id"]
            entity_ids.add(f"sensor.{body['object_id']}")
    n = len(COLLIDING) * len(SENSORS)
    assert len(entity_ids) == len(unique_ids) == len(topics) == n
    assert len(nodes) == len(COLLIDING)
    # a device id that is already a slug keeps a readable entity id; the others get a hash
    assert configs("kitchen_1")["power"]["object_id"] == "edged_kitchen_1_power"
    assert re.fullmatch(
        r"edged_kitchen_1_[0-9a-f]{8}_power", configs("kitchen-1")["power"]["object_id"]
    )
    assert configs("kitchen.1")["power"]["device"]["identifiers"] == ["edged_kitchen.1"]
    assert node_id("kitchen-1") == "edged_kitchen-1"  # topics of safe ids are unchanged


def test_a_plain_id_never_equals_a_hashed_one() -> None:
    # the hashed form of "kitchen.1" is edged_kitchen_1_<hash>; a device literally named
    # kitchen_1_<hash> must not land on the same node, object ids or unique ids
    hashed = node_id("kitchen.1")
    impostor = hashed.removeprefix("edged_")
    assert node_id(impostor) != hashed
    assert object_base(impostor) != object_base("kitchen.1")
    assert object_base(object_base("Kitchen-1").removeprefix("edged_")) != object_base("Kitchen-1")
    ids = {json.loads(p)["unique_id"] for d in ("kitchen.1", impostor) for _, p in messages(d)}
    assert len(ids) == 2 * len(SENSORS)
    # unique_id is edged_<id>_<key>: distinct for distinct ids as long as no key ends
    # with "_" + another key
    keys = [spec.key for spec in SENSORS]
    assert not any(a != b and a.endswith("_" + b) for a in keys for b in keys)
    with pytest.raises(ValueError):
        node_id("")
    with pytest.raises(ValueError):
        object_base("")


def test_expire_after_and_bad_arguments() -> None:
    for _, payload in messages(expire_after_s=30):
        assert json.loads(payload)["expire_after"] == 30
    t = TOPICS
    for prefix in ("", "home/+", "ha/#", "/ha", "ha/"):
        with pytest.raises(ValueError):
            discovery_messages("kitchen-1", prefix, t.telemetry, t.status, __version__)
    with pytest.raises(ValueError):
        discovery_messages("", "homeassistant", t.telemetry, t.status, __version__)
    with pytest.raises(ValueError):
        messages(expire_after_s=0)
    custom = discovery_messages("kitchen-1", "ha/disc", t.telemetry, t.status, "1.2.3")
    assert all(topic.startswith("ha/disc/sensor/edged_kitchen-1/") for topic, _ in custom)


def test_removal_messages_empty_the_same_topics() -> None:
    removals = removal_messages("kitchen-1", "homeassistant")
    assert [t for t, _ in removals] == [t for t, _ in messages()]
    assert all(p == b"" for _, p in removals)


# --- templates against real records -------------------------------------------------------------


def test_value_templates_read_fields_of_a_measured_snapshot(tmp_path: Path) -> None:
    _clock, _source, _sampler, reporter = board_rig(tmp_path)
    reporter.events = False
    observe_all(reporter)
    snap = wire(reporter.snapshot())
    by_key = {spec.key: spec for spec in SENSORS}
    for key, body in configs().items():
        spec = by_key[key]
        expected = field(snap, spec.field)  # the field exists in a real record
        assert f"value_json.{spec.field}" in body["value_template"]
        rendered = render(body["value_template"], snap)
        assert rendered not in ("", "None"), key
        number = float(rendered)  # Home Assistant parses the state as a number
        if key == "energy":
            assert number == round(expected / 3600, 4)
            assert abs(number - BOARD_W / 3600) < 1e-3
        else:
            assert number == float(expected), key


def test_unknown_values_render_as_none_which_home_assistant_shows_as_unknown(
    tmp_path: Path,
) -> None:
    snap = wire(make_reporter(tmp_path, None, Clock()).snapshot())
    c = configs()
    for key in ("battery", "power", "tokens_per_joule", "tokens_per_second"):
        assert field(snap, next(s.field for s in SENSORS if s.key == key)) is None
        assert render(c[key]["value_template"], snap) == "None", key
    assert render(c["energy"]["value_template"], snap) == "None"  # no power source: unknown


def test_replayed_records_render_empty_which_home_assistant_ignores(tmp_path: Path) -> None:
    _clock, _source, _sampler, reporter = board_rig(tmp_path)
    snap = wire(reporter.snapshot())
    replayed = {**snap, "historical": True, "spool_seq": 17}
    for key, body in configs().items():
        assert render(body["value_template"], json.dumps(replayed)) == "", key
        assert render(body["value_template"], json.dumps(snap)) != "", key


def test_availability_reads_the_status_messages() -> None:
    cfg = Config(device_id="kitchen-1")
    online = status_payload(
        cfg,
        "online",
        version=__version__,
        model="m",
        started_unix_s=1.0,
        pid=1,
        request_topic=TOPICS.request,
    )
    offline = status_payload(cfg, "offline", reason="connection_lost")
    for body in configs().values():
        status = body["availability"][0]
        tpl = status["value_template"]
        assert render(tpl, online.decode()) == status["payload_available"]
        assert render(tpl, offline.decode()) == status["payload_not_available"]


def test_availability_on_the_telemetry_topic_is_offline_for_replayed_records(
    tmp_path: Path,
) -> None:
    _clock, _source, _sampler, reporter = board_rig(tmp_path)
    live = wire(reporter.snapshot())
    replayed = {**live, "historical": True, "spool_seq": 3}
    for body in configs().values():
        telemetry = body["availability"][1]
        assert render(telemetry["value_template"], json.dumps(live)) == "online"
        assert render(telemetry["value_template"], json.dumps(replayed)) == "offline"


# --- what Home Assistant does with them ----------------------------------------------------------


class HaSensor:
    """Home Assistant's MQTT sensor as documented, fed with our config (see the module
    docstring); ``now_s`` is its clock."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.now_s = 0.0
        self.native: float | None = None  # None: unknown
        self.expire_after = body.get("expire_after")
        self.expires_at: float | None = None
        self.avail = {entry["topic"]: False for entry in body["availability"]}

    def receive(self, topic: str, payload: bytes) -> None:
        text = payload.decode()
        for entry in self.body["availability"]:
            if entry["topic"] == topic:
                got = render(entry["value_template"], text)
                if got == entry["payload_available"]:
                    self.avail[topic] = True
                elif got == entry["payload_not_available"]:
                    self.avail[topic] = False
        if topic == self.body["state_topic"]:
            if self.expire_after:  # restarted before the template is rendered
                self.expires_at = self.now_s + self.expire_after
            value = render(self.body["value_template"], text)
            if value == "":
                pass  # "Ignore empty state": a sensor with a unit or state class
            elif value == "None":
                self.native = None
            else:
                self.native = float(value)

    @property
    def available(self) -> bool:
        mode = self.body.get("availability_mode", "latest")
        assert mode == "all"
        expired = self.expire_after is not None and (
            self.expires_at is None or self.now_s >= self.expires_at
        )
        return all(self.avail.values()) and not expired


def test_a_replayed_record_neither_revives_an_expired_sensor_nor_changes_its_state(
    tmp_path: Path,
) -> None:
    cfg = Config(device_id="kitchen-1")
    online = status_payload(
        cfg,
        "online",
        version=__version__,
        model="m",
        started_unix_s=1.0,
        pid=1,
        request_topic=TOPICS.request,
    )
    _clock, _source, _sampler, reporter = board_rig(tmp_path)
    record = wire(reporter.snapshot())

    def with_power(w: float | None, **extra: Any) -> bytes:
        r = json.loads(json.dumps(record))
        r["power"]["total_w"] = w
        r.update(extra)
        return json.dumps(r).encode()

    power = {t.split("/")[3]: json.loads(p) for t, p in messages(expire_after_s=30)}["power"]
    # the payload before the fix: availability from the status topic only
    old = {**power, "availability": power["availability"][:1]}
    for body, revives in ((power, False), (old, True)):
        ha = HaSensor(body)
        ha.receive(TOPICS.status, online)
        assert not ha.available  # nothing on the telemetry topic yet
        ha.receive(TOPICS.telemetry, with_power(4.0))
        assert ha.available and ha.native == 4.0
        ha.now_s = 100.0  # the broker went away: no records, the sensor expired
        assert not ha.available
        # back: the spool replays a record from during the outage, then a live one comes
        ha.receive(TOPICS.telemetry, with_power(9.0, historical=True, spool_seq=5))
        assert ha.native == 4.0  # the state never changes from a replayed record
        assert ha.available is revives  # and only the old payload made it available
        ha.receive(TOPICS.telemetry, with_power(5.0))
        assert ha.available and ha.native == 5.0
        # a replayed record among live ones makes the sensor unavailable until the next
        ha.receive(TOPICS.telemetry, with_power(7.0, historical=True, spool_seq=6))
        assert ha.native == 5.0 and ha.available is revives
        ha.receive(TOPICS.telemetry, with_power(None))
        assert ha.available and ha.native is None  # unknown, not 0
        ha.receive(TOPICS.status, status_payload(cfg, "offline", reason="shutdown"))
        assert not ha.available


def test_every_sensor_keeps_its_state_on_replayed_records(tmp_path: Path) -> None:
    _clock, _source, _sampler, reporter = board_rig(tmp_path)
    reporter.events = False  # no event loop here
    observe_all(reporter)
    live = json.dumps(wire(reporter.snapshot())).encode()
    replayed = json.dumps({**json.loads(live), "historical": True, "spool_seq": 1}).encode()
    for key, body in configs().items():
        ha = HaSensor(body)
        ha.receive(TOPICS.telemetry, live)
        before = ha.native
        assert before is not None, key
        ha.receive(TOPICS.telemetry, replayed)
        assert ha.native == before and not ha.avail[TOPICS.telemetry], key


# --- what is announced and cleared at each connection -----------------------------------------


def announcer(
    tmp_path: Path, enabled: bool, prefix: str = "homeassistant", device_id: str = "kitchen-1"
) -> Announcer:
    t = Topics("edged", device_id)
    return Announcer(
        tmp_path / "discovery.json",
        enabled=enabled,
        device_id=device_id,
        prefix=prefix,
        telemetry_topic=t.telemetry,
        status_topic=t.status,
        version=__version__,
    )


def test_announcer_plans_removals_before_configs(tmp_path: Path) -> None:
    on, off = announcer(tmp_path, True), announcer(tmp_path, False)
    current = config_topics("kitchen-1", "homeassistant")
    # no record: on announces, off clears this device's topics (it may have announced them)
    assert [t for t, _ in on.plan(None)] == current and all(p for _, p in on.plan(None))
    assert off.plan(None) == [(t, b"") for t in sorted(current)]
    # a record of what was announced: off clears exactly that; on clears what it no longer uses
    old = set(config_topics("kitchen-1", "ha-old"))
    assert off.plan(old) == [(t, b"") for t in sorted(old)]
    plan = on.plan(old | set(current))
    assert plan[: len(old)] == [(t, b"") for t in sorted(old)]
    assert [t for t, _ in plan[len(old) :]] == current
    assert off.plan(set()) == []  # recorded: nothing announced, nothing to clear


def test_announcer_record_round_trips_and_tolerates_garbage(tmp_path: Path) -> None:
    a = announcer(tmp_path, True)
    assert a.load() is None
    a.save(["b/config", "a/config"])
    assert a.load() == {"a/config", "b/config"}
    for garbage in ("{", '{"topics": "x"}', '{"topics": [1]}', "[]"):
        a.state_file.write_text(garbage)
        assert a.load() is None


def test_announce_refuses_a_bad_prefix_without_raising(tmp_path: Path) -> None:
    class Link:  # takes every message as acknowledged (publish returns no delivery)
        def __init__(self) -> None:
            self.connected = asyncio.Event()
            self.sent: list[tuple[str, bytes]] = []

        def publish(
            self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
        ) -> None:
            assert qos == 1 and retain
            self.sent.append((topic, payload))

    link = Link()
    assert asyncio.run(announcer(tmp_path, True, prefix="ha/#").announce(link)) is False
    assert link.sent == [] and not (tmp_path / "discovery.json").exists()
    assert asyncio.run(announcer(tmp_path, False).announce(link)) is True
    assert link.sent == [(t, b"") for t in sorted(config_topics("kitchen-1", "homeassistant"))]
    assert json.loads((tmp_path / "discovery.json").read_text())["topics"] == []


def test_presence_says_online_offline_and_announces_what_the_reloaded_config_says(
    tmp_path: Path,
) -> None:
    class Link:  # takes every message as acknowledged (publish returns no delivery)
        def __init__(self) -> None:
            self.connected = asyncio.Event()
            self.sent: list[tuple[str, bytes]] = []

        def publish(
            self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
        ) -> None:
            assert qos == 1 and retain
            self.sent.append((topic, payload))

    def app_config(discovery: bool) -> Config:
        return Config.model_validate(
            {
                "device_id": "kitchen-1",
                "telemetry": {"state_dir": str(tmp_path), "homeassistant_discovery": discovery},
            }
        )

    presence = Presence(app_config(True), TOPICS, version=__version__, model="m")
    will = presence.will()
    assert (will.topic, will.qos, will.retain) == (TOPICS.status, 1, True)
    assert json.loads(will.payload)["reason"] == "connection_lost"
    link = Link()
    presence.online(link)
    presence.offline(link)
    assert [t for t, _ in link.sent] == [TOPICS.status, TOPICS.status]
    online, offline = (json.loads(p) for _, p in link.sent)
    assert online["state"] == "online" and online["model"] == "m"
    assert online["version"] == __version__ and online["request_topic"] == TOPICS.request
    assert offline == {**offline, "state": "offline", "reason": "shutdown"}
    for body in configs().values():  # what Home Assistant reads as available and not
        status = body["availability"][0]
        assert render(status["value_template"], link.sent[0][1].decode()) == "online"
        assert render(status["value_template"], link.sent[1][1].decode()) == "offline"
    topics = sorted(config_topics("kitchen-1", "homeassistant"))
    link.sent.clear()
    assert asyncio.run(presence.announce(link)) is True
    assert sorted(t for t, p in link.sent if p) == topics  # announced
    presence.cfg = app_config(False)  # a reload turned discovery off: cleared at the next
    link.sent.clear()
    assert asyncio.run(presence.announce(link)) is True
    assert sorted(link.sent) == [(t, b"") for t in topics]
