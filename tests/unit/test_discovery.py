"""Home Assistant MQTT discovery: topics, payloads, and templates rendered against real
telemetry records and status messages (Home Assistant's templates are Jinja2)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, StrictUndefined

from edged import __version__
from edged.app import status_payload
from edged.config import Config
from edged.mqtt.topics import Topics
from edged.telemetry.discovery import (
    SENSORS,
    discovery_messages,
    node_id,
    removal_messages,
)
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
    "state_topic",
    "value_template",
    "state_class",
    "availability_topic",
    "availability_template",
    "payload_available",
    "payload_not_available",
    "device",
}
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
    assert {t.split("/")[3] for t in topics} == {"battery", "power", "energy",
        "tokens_per_joule", "tokens_per_second", "queue_depth"}  # fmt: skip


def test_payloads_are_json_with_the_required_keys() -> None:
    for topic, payload in messages():
        body = json.loads(payload.decode("utf-8"))
        assert set(body) >= REQUIRED, (topic, REQUIRED - set(body))
        assert body["state_topic"] == "edged/kitchen-1/telemetry"
        assert body["availability_topic"] == "edged/kitchen-1/status"
        assert body["availability_template"] == "{{ value_json.state }}"
        assert (body["payload_available"], body["payload_not_available"]) == ("online", "offline")
        assert body["device"] == {
            "identifiers": ["edged_kitchen-1"],
            "name": "edged kitchen-1",
            "model": "edged",
            "sw_version": __version__,
        }
        assert body["origin"]["name"] == "edged"
        assert body["state_class"] in {"measurement", "total_increasing"}
        assert "expire_after" not in body
        assert all(isinstance(k, str) and v is not None for k, v in body.items())


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


def test_device_ids_with_dots_get_safe_distinct_node_ids() -> None:
    assert node_id("kitchen-1") == "edged_kitchen-1"
    dotted, underscored = node_id("kitchen.1"), node_id("kitchen_1")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", dotted) and dotted != underscored
    for topic, _ in messages("kitchen.1"):
        assert TOPIC_RE.match(topic), topic
    assert configs("kitchen.1")["power"]["device"]["identifiers"] == ["edged_kitchen.1"]


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


def test_availability_template_reads_the_status_messages() -> None:
    cfg = Config(device_id="kitchen-1")
    online = status_payload(cfg, "online", version=__version__, model="m",
                            started_unix_s=1.0, pid=1, request_topic=TOPICS.request)  # fmt: skip
    offline = status_payload(cfg, "offline", reason="connection_lost")
    for body in configs().values():
        tpl = body["availability_template"]
        assert render(tpl, online.decode()) == body["payload_available"]
        assert render(tpl, offline.decode()) == body["payload_not_available"]
