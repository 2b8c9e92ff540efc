"""The embedding model loaded on first use, shared by the guardian and the router."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edged.config import Config

if TYPE_CHECKING:
    from edged.embeddings.minilm import MiniLMEmbedder


class LazyEmbedder:
    """Loads the embedding model on first use, once, for the guardian and the router.

    Building one costs nothing: a daemon whose rules and routes are not semantic never
    loads the model. ``embed`` blocks (the first call loads): run it off the event loop.
    """

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._model: MiniLMEmbedder | None = None

    def embed(self, texts: Any) -> Any:
        """Embed ``texts`` (loading the model on the first call)."""
        if self._model is None:
            from edged.embeddings.minilm import MiniLMEmbedder

            self._model = MiniLMEmbedder.from_manifest(
                self._cfg.models.manifest,
                self._cfg.models.dir,
                threads=self._cfg.guardian.threads,
                providers=self._cfg.guardian.onnx_providers,
            )
        return self._model.embed(texts)
