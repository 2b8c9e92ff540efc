"""Builds the router from config: policies, the backend table, the semantic route vectors
and the device figures ``edged bench --write-profile`` stored (docs/routing.md).

The app builds one at start without semantic routes (no embedding model loaded before the
daemon runs), then again off the event loop at start and at each SIGHUP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edged.config import Config
from edged.config_backends import backend_table
from edged.figures import load_figures
from edged.router.router import BackendView, LocalStats, Router, load_policies
from edged.types import Embedder, PowerState


class RouterBuilder:
    """Makes routers over ``backends``, reading power and the ``local`` backend's figures."""

    def __init__(
        self,
        cfg: Config,
        backends: Mapping[str, BackendView],
        power: Callable[[], PowerState],
        embedder: Embedder,
    ) -> None:
        self.backends = backends
        self.power = power
        self.embedder = embedder
        self.stored = load_figures(cfg)  # until the backend has measured its own

    def local_stats(self) -> LocalStats:
        """Measured by the backend while serving; until then, `edged bench --write-profile`."""
        b = self.backends["local"].stats()
        stored = self.stored
        return LocalStats(
            queue=b.queue_depth or 0,
            tokens_per_s=b.tokens_per_s or (stored.tokens_per_s if stored else None),
            ttft_s=b.ttft_s or (stored.ttft_s if stored else None),
        )

    def __call__(self, cfg: Config, semantic: bool = True) -> Router:
        """The router for ``cfg``; semantic route vectors when ``semantic`` (blocking: reads
        policy files and may load the embedding model)."""
        router_cfg = cfg.router
        if not semantic:
            router_cfg = router_cfg.model_copy(update={"semantic_routes": []})
        stored = load_figures(cfg)
        if router_cfg.local_j_per_token is None and stored and stored.j_per_token is not None:
            router_cfg = router_cfg.model_copy(update={"local_j_per_token": stored.j_per_token})
        return Router(
            router_cfg,
            load_policies(cfg.router),
            self.backends,
            power=self.power,
            local_stats=self.local_stats,
            embedder=self.embedder if router_cfg.semantic_routes else None,
            table=backend_table(cfg),
        )
