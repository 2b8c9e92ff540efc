"""A request without ``temperature`` gets the device's ``ingress.temperature_default``
(0.2: bench/temperature.py, retired since, measured the default model right more often
than at 0.7; docs/benchmarks.md);
one that sends a number keeps it, and ``null`` is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edged.config import Config, IngressConfig, load_config
from edged.ingress import wire
from edged.types import Request

ROOT = Path(__file__).resolve().parents[2]


def parse(body: dict[str, Any], cfg: Config | None = None) -> Request | wire.Rejection:
    return wire.parse_request(
        json.dumps(body).encode(),
        cfg=cfg or Config(device_id="d"),
        default_reply_topic=lambda i: f"edged/d/response/{i}",
        response_topic="reply/x",
        correlation_data=None,
        received_at_s=0.0,
    )


def test_absent_temperature_is_the_device_default() -> None:
    assert IngressConfig().temperature_default == 0.2
    r = parse({"prompt": "hi"})
    assert isinstance(r, Request) and r.temperature == 0.2
    cfg = Config(device_id="d", ingress=IngressConfig(temperature_default=0.7))
    r = parse({"prompt": "hi"}, cfg)
    assert isinstance(r, Request) and r.temperature == 0.7


@pytest.mark.parametrize("value", [0, 0.0, 0.7, 2])
def test_a_given_temperature_is_kept(value: float) -> None:
    cfg = Config(device_id="d", ingress=IngressConfig(temperature_default=1.5))
    r = parse({"prompt": "hi", "temperature": value}, cfg)
    assert isinstance(r, Request) and r.temperature == float(value)


@pytest.mark.parametrize("value", [None, "0.5", True, -0.1, 2.5])
def test_null_and_bad_values_are_refused_naming_the_field(value: Any) -> None:
    r = parse({"prompt": "hi", "temperature": value})
    assert isinstance(r, wire.Rejection)
    assert r.error.code == "bad_request" and "temperature" in r.error.message


def test_the_config_refuses_a_default_out_of_range() -> None:
    with pytest.raises(ValueError):
        IngressConfig(temperature_default=2.5)


def test_the_shipped_config_and_the_docs_state_the_default() -> None:
    shipped = load_config(ROOT / "configs" / "edged.toml")
    default = IngressConfig().temperature_default
    assert shipped.ingress.temperature_default == default
    schema = json.loads((ROOT / "docs" / "schemas" / "request.schema.json").read_text())
    prop = schema["properties"]["temperature"]
    assert "default" not in prop  # it is the device's, not the protocol's
    assert f"ingress.temperature_default, {default} by default" in prop["description"]
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    assert f"| `temperature` | number | {default} (`ingress.temperature_default`) |" in protocol
