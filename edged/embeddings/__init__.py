"""Text embeddings shared by the guardian's semantic rules and the router's semantic routes.

:class:`MiniLMEmbedder` runs all-MiniLM-L6-v2 (int8 weights) in onnxruntime. Its
``embed`` blocks: callers run it off the event loop.
"""

from edged.embeddings.minilm import MODEL_NAME, TOKENIZER_NAME, MiniLMEmbedder

__all__ = ["MODEL_NAME", "TOKENIZER_NAME", "MiniLMEmbedder"]
