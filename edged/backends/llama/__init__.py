"""The local llama.cpp backends: one engine (:mod:`.engine`: load, prompt tokens, decode)
run on a decode thread (:mod:`.thread`) or in a worker process (:mod:`.process`)."""

from edged.backends.llama.engine import LlamaEngine, prompt_builder, rss_mb
from edged.backends.llama.process import ProcessLlamaBackend
from edged.backends.llama.thread import LlamaBackend

__all__ = ["LlamaBackend", "LlamaEngine", "ProcessLlamaBackend", "prompt_builder", "rss_mb"]
