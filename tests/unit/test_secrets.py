"""The one secret reader (edged.secrets) and the readers built on it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edged.backends.cloud import PLACEHOLDER_API_KEY, read_api_key
from edged.config import CloudConfig, Config
from edged.errors import ConfigError
from edged.mqtt.connect import mqtt_password
from edged.secrets import SecretError, read_credential, read_secret


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    d = tmp_path / "credentials"
    d.mkdir()
    (d / "mqtt-password").write_text("from-credential\n")
    return d


def test_environment_wins_over_the_credential(creds: Path) -> None:
    env = {"PW": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert read_secret("PW", "mqtt-password", env) == "from-env"


def test_credential_when_the_variable_is_unset_or_blank(creds: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_secret("PW", "mqtt-password", env) == "from-credential"
    assert read_secret("PW", "mqtt-password", {**env, "PW": ""}) == "from-credential"
    assert read_secret("PW", "mqtt-password", {**env, "PW": "  \n"}) == "from-credential"


def test_trailing_newlines_stripped_inner_spaces_kept(creds: Path) -> None:
    (creds / "crlf").write_text("s3cret pass\r\n\n", newline="")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_credential("crlf", env) == "s3cret pass"
    assert read_secret("PW", "x", {"PW": "s3cret pass\n"}) == "s3cret pass"


def test_missing_is_none(creds: Path, tmp_path: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_secret("PW", "no-such-credential", env) is None
    assert read_secret("PW", "mqtt-password", {}) is None  # no $CREDENTIALS_DIRECTORY
    assert read_secret("PW", "mqtt-password", {"CREDENTIALS_DIRECTORY": ""}) is None
    gone = {"CREDENTIALS_DIRECTORY": str(tmp_path / "not-there")}
    assert read_secret("PW", "mqtt-password", gone) is None
    assert read_secret("PW", "", env) is None  # no credential configured
    (creds / "empty").write_text("\n")
    assert read_credential("empty", env) is None


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "/etc/passwd", "..", ".", "a\\b", "a\0"])
def test_traversal_refused(creds: Path, name: str) -> None:
    (creds.parent / "passwd").write_text("root\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    with pytest.raises(SecretError, match="not a plain file name"):
        read_secret("PW", name, env)
    # the environment variable still wins: the credential is not looked at
    assert read_secret("PW", name, {**env, "PW": "from-env"}) == "from-env"


def test_unreadable_is_a_clear_error_without_the_value(creds: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    (creds / "a-directory").mkdir()
    with pytest.raises(SecretError, match=r"credential .*a-directory cannot be read"):
        read_credential("a-directory", env)
    (creds / "binary").write_bytes(b"\xff\xfe secret-bytes")
    with pytest.raises(SecretError, match="not UTF-8") as info:
        read_credential("binary", env)
    assert "secret-bytes" not in str(info.value)
    assert isinstance(info.value, ConfigError)  # the daemon reports it as a config error


def test_never_logged(creds: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_secret("PW", "mqtt-password", env) == "from-credential"
    assert read_secret("PW", "x", {"PW": "env-value"}) == "env-value"
    assert "from-credential" not in caplog.text
    assert "env-value" not in caplog.text


def test_mqtt_password_uses_the_reader(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config.model_validate({"mqtt": {"password_env": "PW_TEST", "password_credential": "p"}})
    (creds / "p").write_text("cred-pw\n")
    monkeypatch.delenv("PW_TEST", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert mqtt_password(cfg) == "cred-pw"
    monkeypatch.setenv("PW_TEST", "env-pw")
    assert mqtt_password(cfg) == "env-pw"
    bad = Config.model_validate({"mqtt": {"password_env": "NOPE_X", "password_credential": "../p"}})
    with pytest.raises(SecretError):
        mqtt_password(bad)


def test_cloud_api_key_uses_the_reader(creds: Path) -> None:
    c = CloudConfig(api_key_env="K", api_key_credential="cloud-key")
    (creds / "cloud-key").write_text("key-from-credential\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_api_key(c, env) == "key-from-credential"
    assert read_api_key(c, {**env, "K": " key-from-env "}) == "key-from-env"
    assert read_api_key(c, {}) == PLACEHOLDER_API_KEY
    with pytest.raises(SecretError):
        read_api_key(CloudConfig(api_key_env="K", api_key_credential="../cloud-key"), env)
