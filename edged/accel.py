"""The board profile's accelerator defaults applied to the config (composition-root helper).

:func:`with_board_defaults` fills every ``[local]`` offload key the config leaves unset
(``None``) from the board profile's ``[accel]`` table, and ``guardian.onnx_providers`` from
its ``onnx_providers``; an explicit config value always wins. The app, ``edged bench`` and
``edged doctor`` call it once at start; :func:`fill_offload` does the same for any table
of the :class:`~edged.config.OffloadSettings` mixin (a ``[backends.NAME]`` of kind llama).
:func:`doctor_lines` is what ``edged doctor`` prints about it. Reading the profile reads
a few small files: call it off the event loop (or before it runs).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import ValidationError

from edged.config import Config, OffloadSettings, format_validation_error
from edged.config_accel import OFFLOAD_KEYS
from edged.errors import ConfigError
from edged.power.detect import select_profile
from edged.power.profile import AccelFacts, HwProfile, load_profiles

log = logging.getLogger("edged.accel")


def board_profile(cfg: Config) -> HwProfile | None:
    """The profile ``power.profile`` names or detection finds; None when none fits or the
    profiles cannot be read (the power setup reports that)."""
    try:
        found = select_profile(cfg.power, load_profiles(cfg.power.profiles_dir))
    except ConfigError as e:
        log.debug("event=accel_no_profile error=%r", str(e))
        return None
    return found.profile if found else None


S = TypeVar("S", bound=OffloadSettings)


def fill_offload(settings: S, accel: AccelFacts, where: str) -> S:
    """``settings`` (``[local]``, or any llama backend's table: the same mixin) with each
    offload key it leaves unset taken from the profile's ``accel``; validated again
    (ConfigError naming ``where`` when the combination is invalid)."""
    data: dict[str, Any] = settings.model_dump()
    for key in OFFLOAD_KEYS:
        if data[key] is None and getattr(accel, key) is not None:
            data[key] = getattr(accel, key)
    try:
        return type(settings).model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from e


def with_board_defaults(cfg: Config, profile: HwProfile | None) -> Config:
    """``cfg`` with the unset offload keys and ONNX providers taken from ``profile``.

    ConfigError when the combination is invalid (a quantized KV cache from one side with
    flash attention off from the other)."""
    if profile is None:
        return cfg
    accel = profile.accel
    merged = fill_offload(cfg.local, accel, f"[local] with board profile {profile.name}")
    update: dict[str, Any] = {"local": merged}
    if cfg.guardian.onnx_providers is None and accel.onnx_providers:
        guardian = cfg.guardian.model_copy(update={"onnx_providers": list(accel.onnx_providers)})
        update["guardian"] = guardian
    return cfg.model_copy(update=update)


def doctor_lines(
    cfg: Config, profile: HwProfile | None, asked: Config
) -> tuple[list[str], list[str]]:
    """What ``edged doctor`` prints about the accelerators, and its problems. ``cfg`` has
    the board defaults applied, ``asked`` is the config as written (an offload the config
    itself asks for, on a build without it, is a problem; one the profile suggests is a
    note). Imports llama_cpp and onnxruntime (a second or so)."""
    import llama_cpp
    import onnxruntime as ort

    from edged.backends.llama.offload import offload_kwargs
    from edged.embeddings.providers import choose_providers

    accel = profile.accel if profile is not None else AccelFacts()
    supported = bool(llama_cpp.llama_supports_gpu_offload())
    kwargs, warning = offload_kwargs(cfg.local, supported, accel.llama_cmake_args)
    lines = [
        f"llama-cpp-python {llama_cpp.__version__}: "
        + ("GPU offload built in" if supported else "CPU only (built without GPU offload)")
    ]
    set_keys = cfg.local.offload_set()
    lines.append(
        "  [local] offload: "
        + (", ".join(f"{k}={v}" for k, v in set_keys.items()) or "none set (llama.cpp defaults)")
        + (f" (defaults from {profile.name})" if profile is not None else "")
    )
    layers = kwargs.get("n_gpu_layers", 0)
    if not layers:
        where = "the CPU"
    else:
        where = "the GPU, every layer" if layers < 0 else f"the GPU, {layers} layers"
    lines.append(f"  the local model runs on {where}")
    problems: list[str] = []
    if warning is not None:
        lines.append(f"  WARNING: {warning}")
        if asked.local.n_gpu_layers:
            problems.append(f"{warning}. Fix: rebuild it, or set [local] n_gpu_layers = 0")
    choice = choose_providers(cfg.guardian.onnx_providers, ort.get_available_providers())
    lines.append(
        f"onnxruntime {ort.__version__}: embeddings on {choice.first} "
        f"(wanted: {', '.join(cfg.guardian.onnx_providers or ['CPUExecutionProvider'])}; "
        f"available: {', '.join(choice.available)})"
    )
    if choice.fallback_reason is not None:
        lines.append(f"  fallback: {choice.fallback_reason}")
    return lines, problems
