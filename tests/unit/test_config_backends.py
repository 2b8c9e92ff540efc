"""[backends.NAME]: the pinned shape, its checks, and the table with [local] and [cloud]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edged.config import env_override_vars, load_config
from edged.config_backends import api_key_credential, api_key_env, as_cloud_config, backend_table
from edged.errors import ConfigError

PINNED = """
[backends.edge]
kind = "openai"
trust = "lan"
base_url = "http://192.168.1.20:8000/v1"
model = "qwen2.5-7b-instruct"

[backends.gemma]
kind = "llama"
trust = "device"
model = "gemma3-270m"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edged.toml"
    p.write_text(text)
    return p


def test_the_pinned_shape_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, PINNED), environ={})
    assert cfg.backends["edge"].trust == "lan" and cfg.backends["gemma"].kind == "llama"
    table = backend_table(cfg)
    assert [(e.name, e.kind, e.trust) for e in table.values()] == [
        ("local", "local", "device"),
        ("edge", "openai", "lan"),
        ("gemma", "llama", "device"),
    ]


def test_local_and_cloud_are_backends_local_and_cloud(tmp_path: Path) -> None:
    env = {"EDGED_CLOUD__ENABLED": "true", "EDGED_ROUTER__CLOUD_DAILY_REQUESTS": "5"}
    table = backend_table(load_config(None, environ=env))
    assert list(table) == ["local", "cloud"]
    assert table["local"].trust == "device" and table["cloud"].trust == "public"
    assert table["cloud"].daily_requests == 5


def test_each_openai_backend_has_its_own_client_settings_and_key_names(tmp_path: Path) -> None:
    text = PINNED.replace('model = "qwen2.5-7b-instruct"', 'model = "q"\nbreaker_failures = 7')
    cfg = load_config(write(tmp_path, text), environ={})
    cc = as_cloud_config("edge", cfg.backends["edge"])
    assert cc.base_url == "http://192.168.1.20:8000/v1" and cc.model == "q"
    assert cc.breaker_failures == 7
    assert cc.api_key_env == "EDGED_EDGE_API_KEY" == api_key_env("edge")
    assert cc.api_key_credential == "edge-api-key" == api_key_credential("edge")
    assert api_key_env("my-box") == "EDGED_MY_BOX_API_KEY"


def test_the_api_key_variable_is_never_a_config_key(tmp_path: Path) -> None:
    env = {"EDGED_EDGE_API_KEY": "sk-x", "EDGED_MQTT__PORT": "1884"}
    assert [n for n, _, _ in env_override_vars(env)] == ["EDGED_MQTT__PORT"]
    cfg = load_config(write(tmp_path, PINNED), environ=env)
    assert "sk-x" not in cfg.model_dump_json()


def test_backends_from_the_environment_as_json() -> None:
    edge = {"kind": "openai", "trust": "lan", "base_url": "http://h/v1", "model": "m"}
    cfg = load_config(None, environ={"EDGED_BACKENDS": json.dumps({"edge": edge})})
    assert cfg.backends["edge"].base_url == "http://h/v1"


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ('[backends.local]\nkind = "llama"\ntrust = "device"\nmodel = "m"', "reserved"),
        (
            '[backends.cloud]\nkind = "openai"\ntrust = "public"\nbase_url = "u"\nmodel = "m"',
            "reserved",
        ),
        ('[backends.Edge]\nkind = "openai"\ntrust = "lan"\nbase_url = "u"\nmodel = "m"', "name"),
        ('[backends.edge]\nkind = "openai"\ntrust = "lan"\nmodel = "m"', "base_url"),
        (
            '[backends.edge]\nkind = "openai"\ntrust = "device"\nbase_url = "u"\nmodel = "m"',
            "trust",
        ),
        ('[backends.g]\nkind = "llama"\ntrust = "lan"\nmodel = "m"', "trust"),
        ('[backends.edge]\nkind = "grpc"\ntrust = "lan"\nmodel = "m"', "kind"),
        (
            '[backends.edge]\nkind = "openai"\ntrust = "lan"\nbase_url = "u"\nmodel = "m"\nx = 1',
            "unknown key",
        ),
        (
            '[backends.edge]\nkind = "openai"\ntrust = "lan"\nbase_url = "u"\nmodel = "m"\n'
            "n_gpu_layers = -1",
            "n_gpu_layers are for llama",
        ),
    ],
)
def test_bad_tables_are_refused_with_the_key(tmp_path: Path, table: str, why: str) -> None:
    with pytest.raises(ConfigError, match="backends") as e:
        load_config(write(tmp_path, table), environ={})
    assert why in str(e.value)


def test_a_llama_backend_sets_its_own_offload_and_inherits_the_rest(tmp_path: Path) -> None:
    from edged.backends.named import build_one

    text = (
        "[local]\nflash_attn = true\nuse_mlock = true\n"
        '[backends.gemma]\nkind = "llama"\ntrust = "device"\nmodel = "gemma3-270m"\n'
        "n_gpu_layers = 12\n"
    )
    cfg = load_config(write(tmp_path, text), environ={})
    backend = build_one("gemma", cfg.backends["gemma"], cfg, lambda _: tmp_path / "m.gguf")
    local = backend._cfg  # type: ignore[attr-defined]  # what the worker is started with
    assert (local.n_gpu_layers, local.flash_attn, local.use_mlock) == (12, True, True)
    assert local.model == "gemma3-270m"


def test_max_resident_mb_is_one_device_wide_key_under_models(tmp_path: Path) -> None:
    from edged.backends.named import build_named
    from edged.backends.resident import Resident

    text = (
        "[models]\nmax_resident_mb = 500\n"
        '[backends.gemma]\nkind = "llama"\ntrust = "device"\nmodel = "gemma3-270m"\n'
        "keep_alive_s = 30\n"
    )
    cfg = load_config(write(tmp_path, text), environ={})
    (tmp_path / "m.gguf").write_bytes(b"\0" * 1024)  # sized, never loaded here
    built = build_named(cfg, lambda _: tmp_path / "m.gguf")
    assert isinstance(built["gemma"], Resident)
    assert built["gemma"]._book.max_resident_mb == 500
    with pytest.raises(ConfigError, match="max_resident_mb"):
        load_config(write(tmp_path, text.replace("keep_alive_s", "max_resident_mb")), environ={})
