"""``edged check-config``: effective settings with secrets masked, environment overrides listed,
errors naming the key path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edged.cli import main
from edged.cli.check_config import applied_env_overrides, is_secret_name, mask_secrets
from edged.config import env_overrides

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "edged.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGED_"):
            monkeypatch.delenv(name)


def check_config(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    rc = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "mqtt_password",
        "passwd",
        "secret",
        "client_secret",
        "api_key",
        "apikey",
        "access_token",
        "token",
        "private_key",
        "Password",
        "MQTT_PASSWORD",
        "secret_key",
        "passphrase",
        "credentials",
        "clientSecret",
        "APIKey",
        "auth.token",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    # names of variables or credentials that hold secrets are not secrets; counts and units
    # that happen to contain "token" or "key" are not either
    [
        "password_env",
        "api_key_env",
        "api_key_credential",
        "password_credential",
        "max_tokens_limit",
        "max_tokens_default",
        "cloud_daily_tokens",
        "local_j_per_token",
        "keepalive_s",
        "top_k",
        "username",
        "host",
        # a name that only mentions a secret's word is not one: a time, a path, a count
        "first_token_timeout_s",
        "key_file",
        "cert_file",
        "ca_file",
        "token_limit",
        "keys_dir",
        "secret_rotation_days",
        "passwordless",
        "monkey",
    ],
)
def test_not_secret_names(name: str) -> None:
    assert not is_secret_name(name)


def test_mask_secrets_masks_values_at_any_depth_and_keeps_the_rest() -> None:
    settings = {
        "mqtt": {"username": "edged", "password": "hunter2", "password_env": "EDGED_MQTT_PASSWORD"},
        "cloud": {
            "api_key": "sk-123",
            "api_key_env": "EDGED_CLOUD_API_KEY",
            "headers": [{"token": "t0k"}],
        },
        "ingress": {"max_tokens_limit": 2048},
        "unset": {"secret": None},
    }
    masked = mask_secrets(settings)
    assert masked == {
        "mqtt": {"username": "edged", "password": "***", "password_env": "EDGED_MQTT_PASSWORD"},
        "cloud": {
            "api_key": "***",
            "api_key_env": "EDGED_CLOUD_API_KEY",
            "headers": [{"token": "***"}],
        },
        "ingress": {"max_tokens_limit": 2048},
        "unset": {"secret": None},  # nothing to hide, and it says none is set
    }
    assert settings["mqtt"]["password"] == "hunter2"  # a copy: the input is untouched


def test_prints_effective_settings_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = check_config(capsys, CONFIG)
    assert rc == 0
    settings = json.loads(out)
    assert settings["mqtt"]["port"] == 1883
    # the variable's name is shown: it is not the password
    assert settings["mqtt"]["password_env"] == "EDGED_MQTT_PASSWORD"
    assert settings["ingress"]["max_tokens_limit"] == 2048
    assert "environment overrides applied: none" in err
    # nothing in the shipped config is a secret (they come from the environment and
    # systemd credentials): every setting is shown as it is
    assert settings["cloud"]["first_token_timeout_s"] == 5.0
    assert settings["mqtt"]["key_file"] is None
    assert '"***"' not in out


def test_lists_env_overrides_and_never_prints_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGED_MQTT__PORT", "1884")
    monkeypatch.setenv("EDGED_DEVICE_ID", "kitchen-1")
    monkeypatch.setenv("EDGED_MQTT__PASSWORD_ENV", "MY_BROKER_PASSWORD")
    # the secrets themselves: read by the daemon, never config overrides, never printed
    monkeypatch.setenv("EDGED_MQTT_PASSWORD", "hunter2-password")
    monkeypatch.setenv("EDGED_CLOUD_API_KEY", "sk-live-key")
    monkeypatch.setenv("MY_BROKER_PASSWORD", "other-password")
    rc, out, err = check_config(capsys, CONFIG)
    assert rc == 0
    settings = json.loads(out)
    assert settings["mqtt"]["port"] == 1884 and settings["device_id"] == "kitchen-1"
    assert settings["mqtt"]["password_env"] == "MY_BROKER_PASSWORD"
    assert "environment overrides applied (3):" in err
    assert "EDGED_MQTT__PORT=1884  -> mqtt.port" in err
    assert "EDGED_DEVICE_ID=kitchen-1  -> device_id" in err
    assert "EDGED_MQTT__PASSWORD_ENV=MY_BROKER_PASSWORD  -> mqtt.password_env" in err
    for secret in ("hunter2-password", "sk-live-key", "other-password"):
        assert secret not in out + err
    assert "EDGED_MQTT_PASSWORD" not in err and "EDGED_CLOUD_API_KEY" not in err


def test_secret_override_is_masked_in_the_list() -> None:
    listed = applied_env_overrides(
        {
            "EDGED_MQTT__PASSWORD": "hunter2",
            "EDGED_CLOUD__API_KEY": "sk-1",
            "EDGED_CLOUD": '{"api_key": "sk-2", "model": "m"}',
            "EDGED_MQTT__HOST": "broker.lan",
            "EDGED_CONFIG": "/etc/edged.toml",
            "HOME": "/root",
        }
    )
    assert listed == [
        ("EDGED_CLOUD", '{"api_key": "***", "model": "m"}', "cloud"),
        ("EDGED_CLOUD__API_KEY", "***", "cloud.api_key"),
        ("EDGED_MQTT__HOST", "broker.lan", "mqtt.host"),
        ("EDGED_MQTT__PASSWORD", "***", "mqtt.password"),
    ]


def test_the_list_names_exactly_the_key_paths_load_config_applies() -> None:
    # one reader of the names (config.env_override_vars) serves both
    environ = {
        "EDGED_DEVICE_ID": "kitchen-1",
        "EDGED_MQTT__PORT": "1884",
        "EDGED_ROUTER__POLICY": "eco",
        "EDGED_GUARDIAN__PACKS": '["a.toml"]',
        "EDGED_CONFIG": "/etc/edged.toml",
        "EDGED_MQTT_PASSWORD": "hunter2",
        "EDGED_CLOUD_API_KEY": "sk-1",
        "PATH": "/usr/bin",
    }

    def paths(tree: dict[str, object], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in tree.items():
            if isinstance(v, dict):
                out |= paths(v, f"{prefix}{k}.")
            else:
                out.add(f"{prefix}{k}")
        return out

    listed = {path for _, _, path in applied_env_overrides(environ)}
    assert listed == paths(env_overrides(environ))
    assert listed == {"device_id", "mqtt.port", "router.policy", "guardian.packs"}


def test_a_password_in_the_environment_is_refused_without_being_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # there is no mqtt.password key (the password comes from $EDGED_MQTT_PASSWORD)
    monkeypatch.setenv("EDGED_MQTT__PASSWORD", "hunter2-password")
    rc, out, err = check_config(capsys, CONFIG)
    assert rc != 0
    assert "mqtt.password: unknown key" in err
    assert "EDGED_MQTT__PASSWORD=***  -> mqtt.password" in err
    assert "hunter2-password" not in out + err


def test_bad_config_file_exits_nonzero_naming_the_key_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\nport = 70000\ncolour = "blue"\n\n[ingress]\nqueue_limit = "many"\n')
    rc, out, err = check_config(capsys, bad)
    assert rc == 2
    assert out == ""
    assert f"{bad}: mqtt.port: " in err
    assert f"{bad}: mqtt.colour: unknown key" in err
    assert f"{bad}: ingress.queue_limit: " in err


def test_bad_env_override_names_the_key_path(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGED_MQTT__KEEPALIVE_S", "soon")
    rc, _, err = check_config(capsys, CONFIG)
    assert rc == 2
    assert "EDGED_MQTT__KEEPALIVE_S=soon  -> mqtt.keepalive_s" in err
    assert "+ environment: mqtt.keepalive_s: " in err


def test_missing_file_exits_nonzero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = check_config(capsys, tmp_path / "nope.toml")
    assert rc == 2
    assert "config file not found" in err
