"""The board profile's accelerator defaults applied to the config (composition-root helper).

:func:`with_board_defaults` fills every ``[local]`` offload key the config leaves unset
(``None``) from the board profile's ``[accel]`` table, and ``guardian.onnx_providers`` from
its ``onnx_providers``; an explicit config value always wins. The app, ``edged bench`` and
``edged doctor`` call it once at start. :func:`offload_lines` is what ``edged doctor``
prints about it. Reading the profile reads a few small files: call it off the event loop.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from edged.config import Config, LocalModelConfig, format_validation_error
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


def with_board_defaults(cfg: Config, profile: HwProfile | None) -> Config:
    """``cfg`` with the unset offload keys and ONNX providers taken from ``profile``.

    ConfigError when the combination is invalid (a quantized KV cache from one side with
    flash attention off from the other)."""
    if profile is None:
        return cfg
    accel = profile.accel
    local: dict[str, Any] = cfg.local.model_dump()
    for key in OFFLOAD_KEYS:
        if local[key] is None and getattr(accel, key) is not None:
            local[key] = getattr(accel, key)
    try:
        merged = LocalModelConfig.model_validate(local)
    except ValidationError as e:
        raise ConfigError(
            format_validation_error(e, f"[local] with board profile {profile.name}")
        ) from e
    update: dict[str, Any] = {"local": merged}
    if cfg.guardian.onnx_providers is None and accel.onnx_providers:
        guardian = cfg.guardian.model_copy(update={"onnx_providers": list(accel.onnx_providers)})
        update["guardian"] = guardian
    return cfg.model_copy(update=update)


def offload_lines(cfg: Config, accel: AccelFacts, supported: bool) -> tuple[list[str], str | None]:
    """``edged doctor``'s lines about the local model's offload (``cfg`` with the board
    defaults applied), and the problem when offload is asked of a CPU-only build."""
    from edged.backends.llama.offload import offload_kwargs

    kwargs, warning = offload_kwargs(cfg.local, supported, accel.llama_cmake_args)
    build = "with GPU offload" if supported else "CPU only (no GPU offload)"
    lines = [f"llama-cpp-python: {build}"]
    asked = {k: getattr(cfg.local, k) for k in OFFLOAD_KEYS if getattr(cfg.local, k) is not None}
    lines.append(
        "  asked: " + (", ".join(f"{k}={v}" for k, v in asked.items()) or "nothing (CPU defaults)")
    )
    layers = kwargs.get("n_gpu_layers", 0)
    if not layers:
        where = "the CPU"
    else:
        where = "the GPU, every layer" if layers < 0 else f"the GPU, {layers} layers"
    lines.append(f"  the model runs on {where}")
    return lines, warning
