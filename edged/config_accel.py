"""Accelerator settings of a llama.cpp model (``[local]``, and any llama backend): GPU
offload, flash attention, KV-cache type, mmap/mlock (split out of config.py, which
re-exports them). docs/boards.md.

:class:`OffloadSettings` is a mixin: a config model that runs a llama.cpp model inherits
it, so ``[local]`` and a ``[backends.NAME]`` of kind ``llama`` carry the same keys. Every
key defaults to ``None``, meaning "what the board profile says" (``[accel]`` in
``hwprofiles/<name>.toml``), else llama.cpp's own default; an explicit value always wins
over the profile (:func:`edged.accel.with_board_defaults` fills the gaps at start).

A base module like :mod:`edged.config`: it imports nothing of edged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: KV-cache element types llama.cpp takes for ``type_k`` / ``type_v`` (ggml type names).
KvCacheType = Literal["f16", "q8_0", "q4_0"]
#: The ggml type ids of :data:`KvCacheType` (``GGML_TYPE_*`` in llama_cpp/llama_cpp.py).
GGML_TYPE_IDS: dict[str, int] = {"f16": 1, "q4_0": 2, "q8_0": 8}
#: The keys of :class:`OffloadSettings`, in order (a board profile's ``[accel]`` has them).
OFFLOAD_KEYS = ("n_gpu_layers", "flash_attn", "kv_cache_type", "use_mmap", "use_mlock", "main_gpu")


class OffloadSettings(BaseModel):
    """Where a llama.cpp model's layers run and how its memory is held."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    n_gpu_layers: int | None = Field(
        None,
        ge=-1,
        description="Layers offloaded to the GPU: 0 none (CPU), -1 all. Default: the board "
        "profile's (all on Jetson Orin, none on Coral and generic x86), else 0. With a "
        "llama-cpp-python built without GPU offload, edged runs on the CPU and says so.",
    )
    flash_attn: bool | None = Field(
        None, description="Flash attention. Default: the board profile's, else off."
    )
    kv_cache_type: KvCacheType | None = Field(
        None,
        description="KV-cache type for K and V: f16, q8_0, q4_0 (a quantized one needs "
        "flash_attn = true beside it: llama.cpp quantizes V only with flash attention). "
        "Default: the board profile's, else f16.",
    )
    use_mmap: bool | None = Field(
        None, description="Map the model file instead of reading it. Default: on."
    )
    use_mlock: bool | None = Field(
        None, description="Lock the model in RAM (needs RLIMIT_MEMLOCK). Default: off."
    )
    main_gpu: int | None = Field(
        None, ge=0, description="The GPU that holds the model when there are several."
    )

    @model_validator(mode="after")
    def _quantized_v_needs_flash_attn(self) -> OffloadSettings:
        if self.kv_cache_type not in (None, "f16") and self.flash_attn is not True:
            raise ValueError(
                f"kv_cache_type {self.kv_cache_type!r} needs flash_attn = true "
                "(llama.cpp quantizes the V cache only with flash attention)"
            )
        return self

    def offload_set(self) -> dict[str, object]:
        """The keys given explicitly (not None)."""
        return {k: getattr(self, k) for k in OFFLOAD_KEYS if getattr(self, k) is not None}
