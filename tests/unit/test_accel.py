"""GPU offload settings (config, board profile defaults, the Llama(...) kwargs, the CPU-only
build warning) and the onnxruntime execution provider choice, without a GPU."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edged.accel import board_profile, doctor_lines, with_board_defaults
from edged.backends.llama import offload
from edged.backends.llama.engine import LlamaEngine
from edged.backends.llama.offload import offload_kwargs, rebuild_command
from edged.config import Config, LocalModelConfig, PowerConfig
from edged.embeddings.providers import CPU, choose_providers, session_providers
from edged.errors import ConfigError
from edged.power.profile import load_profiles

ROOT = Path(__file__).resolve().parents[2]
PROFILES = load_profiles(ROOT / "hwprofiles")
SYSFS = ROOT / "tests" / "fixtures" / "sysfs"
MODEL = next((ROOT / "models").glob("SmolLM2-135M*.gguf"), ROOT / "models" / "missing.gguf")


def board_cfg(board: str, **local: Any) -> Config:
    """A config whose power setup reads the fake tree of ``board``."""
    return Config(
        power=PowerConfig(sysfs_root=SYSFS / board, profiles_dir=ROOT / "hwprofiles"),
        local=LocalModelConfig(**local),
    )


# --- board profile defaults ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("board", "layers"),
    [
        ("jetson-orin-nano", -1),
        ("jetson-orin-nx", -1),
        ("jetson-agx-orin", -1),
        ("coral-dev-board", 0),
        ("x86-laptop", 0),
    ],
)
def test_the_detected_board_sets_the_offload_default(board: str, layers: int) -> None:
    cfg = board_cfg(board)
    out = with_board_defaults(cfg, board_profile(cfg))
    assert out.local.n_gpu_layers == layers
    assert cfg.local.n_gpu_layers is None  # the input is not changed


def test_orin_profiles_put_every_layer_on_the_gpu_with_cuda() -> None:
    for name in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"):
        accel = PROFILES[name].accel
        assert accel.n_gpu_layers == -1 and accel.flash_attn is True
        assert accel.llama_cmake_args == "-DGGML_CUDA=on"
        assert accel.onnx_providers[0] == "CUDAExecutionProvider"
    assert PROFILES["qcs6490-rb3gen2"].accel.onnx_providers == ("QNNExecutionProvider",)
    assert PROFILES["coral-dev-board"].accel.onnx_providers == (CPU,)


def test_explicit_config_wins_over_the_profile() -> None:
    cfg = board_cfg("jetson-orin-nano", n_gpu_layers=0, flash_attn=False, use_mmap=False)
    out = with_board_defaults(cfg, board_profile(cfg))
    assert (out.local.n_gpu_layers, out.local.flash_attn, out.local.use_mmap) == (0, False, False)


def test_onnx_providers_come_from_the_profile_unless_configured() -> None:
    cfg = board_cfg("jetson-orin-nano")
    out = with_board_defaults(cfg, board_profile(cfg))
    assert out.guardian.onnx_providers == ["CUDAExecutionProvider", "TensorrtExecutionProvider"]
    mine = cfg.model_copy(
        update={"guardian": cfg.guardian.model_copy(update={"onnx_providers": [CPU]})}
    )
    assert with_board_defaults(mine, board_profile(mine)).guardian.onnx_providers == [CPU]


def test_no_profile_leaves_the_config_as_is(tmp_path: Path) -> None:
    cfg = Config(power=PowerConfig(sysfs_root=tmp_path, profiles_dir=ROOT / "hwprofiles"))
    assert board_profile(cfg) is None
    assert with_board_defaults(cfg, None) is cfg


def test_a_quantized_kv_cache_needs_flash_attention() -> None:
    with pytest.raises(ValidationError, match="flash_attn"):
        LocalModelConfig(kv_cache_type="q8_0")
    with pytest.raises(ValidationError, match="flash_attn"):
        LocalModelConfig(kv_cache_type="q4_0", flash_attn=False)
    assert LocalModelConfig(kv_cache_type="f16").kv_cache_type == "f16"
    # the profile's flash_attn = true does not count: the key is set beside the type
    cfg = board_cfg("jetson-orin-nano", kv_cache_type="q8_0", flash_attn=True)
    assert with_board_defaults(cfg, board_profile(cfg)).local.kv_cache_type == "q8_0"


def test_the_profile_cannot_turn_a_configured_kv_type_invalid() -> None:
    cfg = board_cfg("jetson-orin-nano", kv_cache_type="q8_0", flash_attn=True)
    profile = board_profile(cfg)
    assert profile is not None
    broken = cfg.model_copy(update={"local": cfg.local.model_copy(update={"flash_attn": None})})
    no_fa = profile.model_copy(
        update={"accel": profile.accel.model_copy(update={"flash_attn": False})}
    )
    with pytest.raises(ConfigError, match="flash_attn"):
        with_board_defaults(broken, no_fa)


# --- Llama(...) kwargs -------------------------------------------------------------------------


def test_offload_kwargs_use_llama_cpp_python_names() -> None:
    s = LocalModelConfig(
        n_gpu_layers=-1,
        flash_attn=True,
        kv_cache_type="q8_0",
        use_mmap=False,
        use_mlock=True,
        main_gpu=1,
    )
    kwargs, warning = offload_kwargs(s, supported=True)
    assert warning is None
    assert kwargs == {
        "n_gpu_layers": -1,
        "main_gpu": 1,
        "flash_attn": True,
        "type_k": 8,  # GGML_TYPE_Q8_0
        "type_v": 8,
        "use_mmap": False,
        "use_mlock": True,
    }
    assert offload_kwargs(LocalModelConfig(), supported=True) == ({}, None)
    q4 = LocalModelConfig(kv_cache_type="q4_0", flash_attn=True)
    assert offload_kwargs(q4, supported=False)[0]["type_k"] == 2  # GGML_TYPE_Q4_0


def test_the_ggml_ids_are_llama_cpp_pythons() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from edged.config_accel import GGML_TYPE_IDS

    assert GGML_TYPE_IDS == {
        "f16": llama_cpp.GGML_TYPE_F16,
        "q8_0": llama_cpp.GGML_TYPE_Q8_0,
        "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    }


def test_a_cpu_only_build_runs_on_the_cpu_and_says_how_to_rebuild() -> None:
    s = LocalModelConfig(n_gpu_layers=-1, main_gpu=0, flash_attn=True)
    kwargs, warning = offload_kwargs(s, supported=False, cmake_args="-DGGML_CUDA=on")
    assert "n_gpu_layers" not in kwargs and "main_gpu" not in kwargs
    assert kwargs["flash_attn"] is True
    assert warning is not None and "running on the CPU" in warning
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in warning
    # nothing asked, nothing said
    assert offload_kwargs(LocalModelConfig(n_gpu_layers=0), supported=False)[1] is None
    assert "GGML_VULKAN" in rebuild_command(None)


class _Stop(Exception):
    pass


def fake_llama_cpp(monkeypatch: pytest.MonkeyPatch, supported: bool) -> list[dict[str, Any]]:
    """A stand-in llama_cpp module whose Llama records its kwargs and stops the load."""
    calls: list[dict[str, Any]] = []

    def llama(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise _Stop

    mod = types.ModuleType("llama_cpp")
    mod.Llama = llama  # type: ignore[attr-defined]
    mod.llama_supports_gpu_offload = lambda: supported  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", mod)
    return calls


@pytest.mark.skipif(not MODEL.is_file(), reason="the default model is not fetched")
@pytest.mark.parametrize("supported", [True, False])
def test_the_engine_passes_the_offload_settings_to_llama(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, supported: bool
) -> None:
    calls = fake_llama_cpp(monkeypatch, supported)
    monkeypatch.setattr(offload, "_warned", set())
    cfg = LocalModelConfig(n_gpu_layers=-1, flash_attn=True, kv_cache_type="q8_0", n_threads=1)
    engine = LlamaEngine(name="local", model_path=MODEL, cfg=cfg)
    with caplog.at_level(logging.WARNING, "edged.backend.llama"):
        for _ in range(2):
            with pytest.raises(_Stop):
                engine.load()
    kw = calls[0]
    assert kw["model_path"] == str(MODEL) and kw["n_threads"] == 1
    assert (kw["flash_attn"], kw["type_k"], kw["type_v"]) == (True, 8, 8)
    warnings = [r for r in caplog.records if "gpu_offload_unavailable" in r.getMessage()]
    if supported:
        assert kw["n_gpu_layers"] == -1 and not warnings
    else:
        assert "n_gpu_layers" not in kw
        assert len(warnings) == 1  # once, not at every load


@pytest.mark.skipif(not MODEL.is_file(), reason="the default model is not fetched")
def test_the_engine_without_offload_keys_passes_none(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_llama_cpp(monkeypatch, supported=False)
    engine = LlamaEngine(name="local", model_path=MODEL, cfg=LocalModelConfig())
    with pytest.raises(_Stop):
        engine.load()
    assert not set(calls[0]) & {"n_gpu_layers", "flash_attn", "type_k", "use_mmap", "use_mlock"}


def test_doctor_lines_show_the_offload_and_the_rebuild_command() -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("onnxruntime")
    cfg = board_cfg("jetson-orin-nano")
    profile = board_profile(cfg)
    applied = with_board_defaults(cfg, profile)
    lines, problems = doctor_lines(applied, profile, cfg)
    text = "\n".join(lines)
    assert "n_gpu_layers=-1" in text and "(defaults from jetson-orin-nano)" in text
    assert "embeddings on" in text
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        assert "the GPU, every layer" in text
    else:
        assert "CPU only" in text and 'CMAKE_ARGS="-DGGML_CUDA=on"' in text
        assert problems == []  # the profile suggested it: a warning, not a problem
        asked = board_cfg("jetson-orin-nano", n_gpu_layers=-1)
        _, problems = doctor_lines(with_board_defaults(asked, profile), profile, asked)
        assert len(problems) == 1 and "n_gpu_layers = 0" in problems[0]


# --- onnxruntime execution providers ----------------------------------------------------------


JETSON_ORT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]


def test_jetson_gets_cuda_then_tensorrt_then_cpu() -> None:
    c = choose_providers(["CUDAExecutionProvider", "TensorrtExecutionProvider"], JETSON_ORT)
    assert c.providers == ("CUDAExecutionProvider", "TensorrtExecutionProvider", CPU)
    assert c.first == "CUDAExecutionProvider" and c.fallback_reason is None


def test_snapdragon_gets_qnn_with_its_htp_backend() -> None:
    c = choose_providers(["QNNExecutionProvider"], ["QNNExecutionProvider", CPU])
    assert session_providers(c) == [("QNNExecutionProvider", {"backend_path": "libQnnHtp.so"}), CPU]


def test_a_missing_provider_falls_back_to_cpu_with_a_reason() -> None:
    c = choose_providers(["CUDAExecutionProvider"], ["AzureExecutionProvider", CPU])
    assert c.providers == (CPU,)
    assert c.fallback_reason is not None and "CUDAExecutionProvider" in c.fallback_reason
    assert choose_providers(None, [CPU]).providers == (CPU,)
    assert choose_providers([CPU], [CPU]).fallback_reason is None


def test_the_embedder_session_gets_the_chosen_providers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ort = pytest.importorskip("onnxruntime")
    from edged.embeddings.minilm import MiniLMEmbedder
    from edged.models import load_manifest

    manifest = load_manifest(ROOT / "models" / "manifest.toml")
    files = [
        ROOT / "models" / manifest.get(n).file
        for n in ("minilm-l6-v2-int8", "minilm-l6-v2-tokenizer")
    ]
    if not all(f.is_file() for f in files):
        pytest.skip("the embedding model is not fetched")
    seen: list[Any] = []
    real = ort.InferenceSession

    def session(path: str, sess_options: Any = None, providers: Any = None) -> Any:
        seen.append(providers)
        if providers and providers[0] != CPU:
            raise RuntimeError("CUDA driver not found")  # what a broken GPU stack says
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: JETSON_ORT)
    monkeypatch.setattr(ort, "InferenceSession", session)
    with caplog.at_level(logging.WARNING, "edged.embeddings"):
        emb = MiniLMEmbedder(files[0], files[1], providers=["CUDAExecutionProvider"])
    assert seen == [["CUDAExecutionProvider", CPU], [CPU]]
    assert emb.providers == (CPU,)
    assert any("onnx_provider_fallback" in r.getMessage() for r in caplog.records)
    assert emb.embed(["hello"]).shape == (1, emb.dim)
