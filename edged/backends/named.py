"""The ``[backends.NAME]`` backends, built by kind (edged.config_backends).

``kind = "openai"``: a :class:`~edged.backends.cloud.CloudBackend` with the table's own
timeouts, retries, breaker and API key; ``kind = "llama"``: a model from the manifest, run
the way ``[local]`` runs its model (same isolation and sampling settings; its own threads).
"""

from __future__ import annotations

from edged.backends.base import LOCAL_KINDS, Backend, BackendSpec, build
from edged.config import Config
from edged.config_backends import NamedBackendConfig, as_cloud_config


def build_one(name: str, b: NamedBackendConfig, cfg: Config) -> Backend:
    """One named backend (not started). A llama model missing from the manifest or from
    disk raises ModelError / ConfigError, as ``[local]``'s does."""
    if b.kind == "openai":
        from edged.backends.cloud import CloudBackend

        return CloudBackend(name=name, cfg=as_cloud_config(name, b))
    from edged.models import load_manifest, resolve

    entry = load_manifest(cfg.models.manifest).get(b.model)
    local = cfg.local.model_copy(
        update={"model": b.model, "n_threads": b.n_threads or cfg.local.n_threads}
    )
    kind = LOCAL_KINDS[("llama", cfg.local.isolation)]
    spec_cfg = cfg.model_copy(update={"local": local})
    return build(kind, BackendSpec(name, spec_cfg, resolve(entry, cfg.models.dir)))


def build_named(cfg: Config) -> dict[str, Backend]:
    """Every ``[backends.NAME]`` backend, in the file's order (not started)."""
    return {name: build_one(name, b, cfg) for name, b in cfg.backends.items()}
