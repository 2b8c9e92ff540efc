"""all-MiniLM-L6-v2 sentence embeddings on onnxruntime: 384 floats per text.

The same pipeline as sentence-transformers' ``all-MiniLM-L6-v2``: WordPiece tokens
(``[CLS] ... [SEP]``, at most 256), the transformer, mean pooling of the token vectors
over the attention mask, L2 normalisation. The ONNX file (from the manifest entry
``minilm-l6-v2-int8``) stores its weights as int8 with per-row scales and computes in
fp32; its output is the per-token ``last_hidden_state``, so the pooling happens here.

Memory: onnxruntime's constant folding turns the int8 weights into fp32 at load time, so
a loaded embedder costs about 150 MB of RSS (about 90 MB once glibc returns the load's
freed heap) for a 23 MB file. Without folding it is half the speed and no smaller while
running (the weights are dequantized on every call).

Everything here blocks the calling thread (loading takes a fraction of a second, one short
text a few milliseconds): call it from a worker thread, never on the event loop. One
instance may be shared by several threads (onnxruntime sessions and tokenizers allow
concurrent calls).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.embeddings.providers import CPU, choose_providers, session_providers
from edged.errors import ModelError
from edged.models import load_manifest, resolve

log = logging.getLogger("edged.embeddings")

#: Manifest names of the two files this embedder needs.
MODEL_NAME = "minilm-l6-v2-int8"
TOKENIZER_NAME = "minilm-l6-v2-tokenizer"

#: Longest input in tokens, ``[CLS]`` and ``[SEP]`` included; the rest is cut off.
MAX_TOKENS = 256
_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}


class MiniLMEmbedder:
    """Unit-length sentence embeddings from all-MiniLM-L6-v2 (int8 ONNX).

    ``threads``: onnxruntime intra-op threads for one ``embed`` call (inter-op: 1,
    sequential execution). Loading raises :class:`ModelError` naming the file.
    """

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        threads: int = 1,
        providers: Sequence[str] | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as e:
            raise ModelError(f"{tokenizer_path}: cannot load the tokenizer: {e}") from e
        pad_id = tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            raise ModelError(f"{tokenizer_path}: no [PAD] token; not a BERT WordPiece tokenizer")
        # tokenizer.json ships with truncation at 128 and fixed padding to 128: replace both.
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")  # to the batch's longest

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only; ORT's warnings go to stderr, not our logs
        choice = choose_providers(providers, ort.get_available_providers())
        if choice.fallback_reason is not None:
            log.warning("event=onnx_provider_fallback reason=%r", choice.fallback_reason)
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=opts, providers=session_providers(choice)
            )
        except Exception as e:
            if choice.first == CPU:
                raise ModelError(f"{model_path}: cannot load the ONNX model: {e}") from e
            log.warning("event=onnx_provider_fallback provider=%s error=%r", choice.first, str(e))
            try:
                session = ort.InferenceSession(str(model_path), sess_options=opts, providers=[CPU])
            except Exception as e2:
                raise ModelError(f"{model_path}: cannot load the ONNX model: {e2}") from e2
        #: The providers the session really runs with (onnxruntime's answer), in priority order.
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        log.info("event=onnx_providers providers=%s", ",".join(self.providers))

        inputs = {i.name for i in session.get_inputs()}
        outputs = session.get_outputs()
        if not {"input_ids", "attention_mask"} <= inputs or not inputs <= _INPUTS:
            raise ModelError(f"{model_path}: unexpected model inputs {sorted(inputs)}")
        shape = outputs[0].shape
        if len(shape) != 3 or not isinstance(shape[2], int):
            raise ModelError(
                f"{model_path}: expected per-token output (batch, sequence, dim), got {shape}"
            )
        self._tokenizer: Any = tokenizer
        self._session: Any = session
        self._output = outputs[0].name
        self._token_types = "token_type_ids" in inputs
        self._dim: int = shape[2]
        self.threads = threads

    @classmethod
    def from_manifest(
        cls,
        manifest_path: Path,
        models_dir: Path,
        threads: int = 1,
        providers: Sequence[str] | None = None,
    ) -> MiniLMEmbedder:
        """Load both files named in the manifest; ModelError says how to fetch a missing one."""
        manifest = load_manifest(manifest_path)
        model = resolve(manifest.get(MODEL_NAME), models_dir)
        tokenizer = resolve(manifest.get(TOKENIZER_NAME), models_dir)
        return cls(model, tokenizer, threads=threads, providers=providers)

    @property
    def dim(self) -> int:
        """Length of one embedding (384)."""
        return self._dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts``: float32 array of shape ``(len(texts), dim)``, rows of unit length.

        Blocking (about 5 ms for a 20-word text on one x86 core): run it off the event
        loop. Texts longer than 256 tokens are truncated. A batch is padded to its longest
        text; the padding is masked, so a text's vector does not depend on its batch mates
        (up to float rounding, about 1e-7).
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one str")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = self._session.run([self._output], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out
