from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edged.config import env_overrides, load_config
from edged.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_config_is_valid() -> None:
    cfg = load_config(ROOT / "configs" / "edged.toml", environ={})
    assert cfg.mqtt.port == 1883
    assert cfg.local.model == "smollm2-135m-instruct"


def test_device_id_defaults_to_hostname() -> None:
    assert load_config(None, environ={}).device_id == socket.gethostname()


def test_env_overrides_top_level_and_nested() -> None:
    cfg = load_config(
        ROOT / "configs" / "edged.toml",
        environ={
            "EDGED_DEVICE_ID": "kitchen-1",
            "EDGED_MQTT__PORT": "1884",
            "EDGED_MQTT__ALLOWED_REPLY_PREFIXES": '["apps/"]',
            "EDGED_LOCAL__SYSTEM_PROMPT": "Be terse.",
            "EDGED_MQTT_PASSWORD": "not-a-config-key",
            "OTHER": "ignored",
        },
    )
    assert cfg.device_id == "kitchen-1"
    assert cfg.mqtt.port == 1884
    assert cfg.mqtt.allowed_reply_prefixes == ["apps/"]
    assert cfg.local.system_prompt == "Be terse."
    assert cfg.client_id == "edged-kitchen-1"


def test_env_string_that_looks_like_json_number_stays_valid_for_strings() -> None:
    assert load_config(None, environ={"EDGED_DEVICE_ID": "1234"}).device_id == "1234"


def test_unknown_key_in_file_names_the_key_path(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[mqtt]\nprot = 1883\n")
    with pytest.raises(ConfigError, match=r"mqtt\.prot: unknown key"):
        load_config(p, environ={})


def test_unknown_env_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.hots: unknown key"):
        load_config(None, environ={"EDGED_MQTT__HOTS": "x"})


def test_bad_value_names_the_key_path(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[mqtt]\nport = "not a port"\n[ingress]\nqueue_limit = 0\n')
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    msg = str(e.value)
    assert "mqtt.port:" in msg and "ingress.queue_limit:" in msg
    assert str(p) in msg


def test_device_id_must_be_one_topic_level() -> None:
    for bad in ("a/b", "a+b", "#", ""):
        with pytest.raises(ConfigError, match="device_id"):
            load_config(None, environ={"EDGED_DEVICE_ID": bad})


def test_wildcard_reply_prefix_rejected() -> None:
    with pytest.raises(ConfigError, match="allowed_reply_prefixes"):
        load_config(None, environ={"EDGED_MQTT__ALLOWED_REPLY_PREFIXES": '["reply/#"]'})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p, environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_env_overrides_structure() -> None:
    assert env_overrides({"EDGED_A__B__C": "1", "EDGED_X": "true", "EDGED_CONFIG": "p"}) == {
        "a": {"b": {"c": "1"}},
        "x": "true",
    }
    with pytest.raises(ConfigError):
        env_overrides({"EDGED_A____B": "1"})
