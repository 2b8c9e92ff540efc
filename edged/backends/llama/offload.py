"""The offload settings as ``llama_cpp.Llama(...)`` keyword arguments, and what happens when
the installed llama-cpp-python cannot offload.

Pure: :func:`offload_kwargs` takes the settings and whether the build supports GPU offload
(``llama_cpp.llama_supports_gpu_offload()``, asked by the caller) and returns the kwargs
plus a warning when offload was asked of a CPU-only build (then it runs on the CPU: no
``n_gpu_layers``). Parameter names are llama-cpp-python 0.3.36's: ``n_gpu_layers``,
``main_gpu``, ``use_mmap``, ``use_mlock``, ``flash_attn`` (a bool), ``type_k``/``type_v``
(ggml type ids).
"""

from __future__ import annotations

import logging
from typing import Any

from edged.config import OffloadSettings
from edged.config_accel import GGML_TYPE_IDS

log = logging.getLogger("edged.backend.llama")

#: How to rebuild llama-cpp-python with a GPU backend when the board profile names none.
GENERIC_REBUILD_ARGS = "-DGGML_CUDA=on (NVIDIA), -DGGML_VULKAN=on or -DGGML_OPENCL=on"

_warned: set[str] = set()


def rebuild_command(cmake_args: str | None, version: str = "0.3.36") -> str:
    """The shell command that rebuilds llama-cpp-python with ``cmake_args`` (the board
    profile's ``[accel] llama_cmake_args``; None: the generic choices)."""
    args = cmake_args or "<one of: " + GENERIC_REBUILD_ARGS + ">"
    return (
        f'CMAKE_ARGS="{args}" .venv/bin/pip install --force-reinstall --no-cache-dir '
        f"--no-deps llama-cpp-python=={version} (in a checkout: make llama-gpu)"
    )


def offload_warning(s: OffloadSettings, supported: bool, cmake_args: str | None) -> str | None:
    """Why the asked offload cannot happen (None when nothing was asked or it can)."""
    if not s.n_gpu_layers or supported:
        return None
    return (
        f"n_gpu_layers={s.n_gpu_layers} asked, but the installed llama-cpp-python has no GPU "
        f"offload (llama_supports_gpu_offload() is false): running on the CPU. Rebuild: "
        f"{rebuild_command(cmake_args)}"
        + ("" if cmake_args else "; `edged doctor` prints this board's CMAKE_ARGS")
    )


def offload_kwargs(
    s: OffloadSettings, supported: bool, cmake_args: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """``Llama(...)`` keyword arguments for ``s`` (only the keys that are set), and the
    warning from :func:`offload_warning` (then ``n_gpu_layers`` and ``main_gpu`` are left
    out: the model runs on the CPU)."""
    kwargs: dict[str, Any] = {}
    warning = offload_warning(s, supported, cmake_args)
    if s.n_gpu_layers is not None and warning is None:
        kwargs["n_gpu_layers"] = s.n_gpu_layers
        if s.main_gpu is not None:
            kwargs["main_gpu"] = s.main_gpu
    if s.flash_attn is not None:
        kwargs["flash_attn"] = s.flash_attn
    if s.kv_cache_type is not None:
        kwargs["type_k"] = kwargs["type_v"] = GGML_TYPE_IDS[s.kv_cache_type]
    if s.use_mmap is not None:
        kwargs["use_mmap"] = s.use_mmap
    if s.use_mlock is not None:
        kwargs["use_mlock"] = s.use_mlock
    return kwargs, warning


def warn_once(backend: str, warning: str) -> None:
    """Log the no-offload warning once per process and backend."""
    if backend in _warned:
        return
    _warned.add(backend)
    log.warning("event=gpu_offload_unavailable backend=%s reason=%r", backend, warning)
