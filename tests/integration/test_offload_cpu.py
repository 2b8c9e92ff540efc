"""The offload keys against the real llama.cpp of this machine (a CPU build here): an Orin
profile's settings load and generate, on the CPU, with one warning when the build cannot
offload; a quantized KV cache without flash attention is what llama.cpp refuses (which is
why the config refuses it first). Nothing here needs a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edged import models
from edged.backends.llama import offload
from edged.backends.llama.engine import LlamaEngine
from edged.config import LocalModelConfig
from tests.helpers import MANIFEST, MODELS_DIR

pytestmark = pytest.mark.integration

llama_cpp = pytest.importorskip("llama_cpp")


def model_path() -> Path:
    entry = models.load_manifest(MANIFEST).get("smollm2-135m-instruct")
    if models.check(entry, MODELS_DIR, full=False) != "ok":
        pytest.skip("the default model is not fetched")
    return MODELS_DIR / entry.file


def test_orin_settings_load_and_generate_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(offload, "_warned", set())
    cfg = LocalModelConfig(
        n_gpu_layers=-1,
        flash_attn=True,
        kv_cache_type="q8_0",
        use_mmap=False,
        n_threads=1,
        n_ctx=256,
    )
    engine = LlamaEngine(name="local", model_path=model_path(), cfg=cfg)
    with caplog.at_level(logging.WARNING, "edged.backend.llama"):
        engine.load()
    params = engine.llm.context_params
    assert (params.type_k, params.type_v) == (8, 8)
    assert params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    warned = [r for r in caplog.records if "gpu_offload_unavailable" in r.getMessage()]
    if llama_cpp.llama_supports_gpu_offload():
        assert not warned
    else:
        assert len(warned) == 1 and engine.llm.model_params.n_gpu_layers == 0
    tokens = engine.llm.tokenize(b"Hello, my name is")
    n = 0
    for n, _ in enumerate(engine.llm.generate(tokens, temp=0.0), start=1):
        if n >= 4:
            break
    assert n == 4


def test_llama_cpp_refuses_a_quantized_v_cache_without_flash_attention() -> None:
    with pytest.raises(ValueError, match="llama_context"):
        llama_cpp.Llama(
            model_path=str(model_path()),
            n_ctx=256,
            type_k=8,
            type_v=8,
            flash_attn=False,
            verbose=False,
            n_threads=1,
        )
