"""The ``[backends.NAME]`` backends, built by kind (edged.config_backends).

``kind = "openai"``: a :class:`~edged.backends.cloud.CloudBackend` with the table's own
timeouts, retries, breaker and API key; ``kind = "llama"``: a model from the manifest, run
the way ``[local]`` runs its model (same isolation and sampling settings; its own threads).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edged.backends.base import LOCAL_KINDS, Backend, BackendSpec, build
from edged.backends.resident import Residency, Resident, mem_available_mb
from edged.config import Config
from edged.config_accel import OFFLOAD_KEYS
from edged.config_backends import NamedBackendConfig, as_cloud_config

#: A model's name from the manifest -> its file on disk (raises ModelError when missing).
ModelFile = Callable[[str], Path]


def build_one(
    name: str,
    b: NamedBackendConfig,
    cfg: Config,
    model_file: ModelFile,
    book: Residency | None = None,
) -> Backend:
    """One named backend (not started). A llama model missing from the manifest or from
    disk raises ModelError, as ``[local]``'s does."""
    if b.kind == "openai":
        from edged.backends.cloud import CloudBackend

        return CloudBackend(name=name, cfg=as_cloud_config(name, b))
    offload = {k: getattr(b, k) for k in OFFLOAD_KEYS if getattr(b, k) is not None}
    local = cfg.local.model_copy(
        update={"model": b.model, "n_threads": b.n_threads or cfg.local.n_threads, **offload}
    )
    kind = LOCAL_KINDS[("llama", cfg.local.isolation)]
    spec_cfg = cfg.model_copy(update={"local": local})
    path = model_file(b.model)
    spec = BackendSpec(name, spec_cfg, path)
    if b.keep_alive_s is None or book is None:
        return build(kind, spec)
    return Resident(
        name,
        lambda: build(kind, spec),
        size_mb=path.stat().st_size / 1e6,
        keep_alive_s=b.keep_alive_s,
        book=book,
    )


def build_named(cfg: Config, model_file: ModelFile) -> dict[str, Backend]:
    """Every ``[backends.NAME]`` backend, in the file's order (not started); the llama ones
    with ``keep_alive_s`` share one residency book."""
    root = cfg.power.sysfs_root
    book = Residency(cfg.models.max_resident_mb, lambda: mem_available_mb(root))
    return {name: build_one(name, b, cfg, model_file, book) for name, b in cfg.backends.items()}
