"""Backends are built by kind from the registry; the kinds and the config's Literal agree."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from edged.backends.base import (
    CLOUD_KIND,
    LOCAL_KINDS,
    Backend,
    BackendSpec,
    build,
    factory,
    kinds,
)
from edged.backends.cloud import CloudBackend
from edged.backends.fake import FakeBackend
from edged.backends.llama import LlamaBackend
from edged.backends.llama.process import ProcessLlamaBackend
from edged.config import BackendKind, Config, LocalModelConfig


def test_every_config_choice_has_a_registered_kind_and_every_kind_a_choice() -> None:
    isolations = get_args(LocalModelConfig.model_fields["isolation"].annotation)
    assert set(LOCAL_KINDS) == set(itertools.product(get_args(BackendKind), isolations))
    assert set(LOCAL_KINDS.values()) | {CLOUD_KIND} == kinds()


def test_kinds_build_their_classes() -> None:
    assert factory("fake") is FakeBackend
    assert factory("llama") is LlamaBackend
    assert factory("llama_process") is ProcessLlamaBackend
    assert factory(CLOUD_KIND) is CloudBackend
    cfg = Config.model_validate({"local": {"backend": "fake", "fake_delay_s": 0.25}})
    fake = build(LOCAL_KINDS[("fake", "process")], BackendSpec("local", cfg))
    assert isinstance(fake, FakeBackend) and isinstance(fake, Backend)
    assert fake.name == "local" and fake._delay_s == 0.25
    cloud = build(CLOUD_KIND, BackendSpec("cloud", cfg))
    assert isinstance(cloud, CloudBackend) and not cloud.healthy()  # not started


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="llama_process"):
        factory("onnx")


def test_every_kind_and_the_on_demand_wrapper_has_the_whole_backend_surface() -> None:
    from edged.backends.resident import Resident

    # ``name`` and ``supports_tools`` may be instance attributes
    members = [m for m in dir(Backend) if not m.startswith("_")]
    members = [m for m in members if m not in ("name", "supports_tools")]
    assert {"stats", "restart", "resident", "healthy"} <= set(members)
    for cls in [*(factory(k) for k in sorted(kinds())), Resident]:
        missing = [m for m in members if not hasattr(cls, m)]
        assert not missing, f"{cls.__name__} lacks {missing}"
    cfg = Config.model_validate({"local": {"backend": "fake"}})
    assert build("fake", BackendSpec("local", cfg)).resident is True
    assert build(CLOUD_KIND, BackendSpec("cloud", cfg)).resident is True
