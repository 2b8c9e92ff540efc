"""The shared text embedder on the real all-MiniLM-L6-v2 int8 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edged import models
from edged.embeddings import MODEL_NAME, TOKENIZER_NAME, MiniLMEmbedder
from edged.errors import ModelError
from tests.helpers import MANIFEST, MODELS_DIR

pytestmark = pytest.mark.integration

PARAPHRASE = ("How do I reset my password?", "I forgot my password, how can I change it?")
UNRELATED = "What is the weather like in Paris tomorrow?"


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    manifest = models.load_manifest(MANIFEST)
    for name in (MODEL_NAME, TOKENIZER_NAME):
        if models.check(manifest.get(name), MODELS_DIR, full=False) != "ok":
            pytest.fail(
                f"the embedding model file {name!r} is missing: run `make test` (it fetches it) "
                f"or `.venv/bin/edged models fetch {MODEL_NAME} {TOKENIZER_NAME}`"
            )
    return MiniLMEmbedder.from_manifest(MANIFEST, MODELS_DIR, threads=1)


def cos(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_shape_dtype_and_unit_norm(embedder: MiniLMEmbedder) -> None:
    v = embedder.embed([*PARAPHRASE, UNRELATED])
    assert embedder.dim == 384
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_a_paraphrase_is_much_closer_than_an_unrelated_question(
    embedder: MiniLMEmbedder,
) -> None:
    a, b, c = embedder.embed([*PARAPHRASE, UNRELATED])
    para, unrelated = cos(a, b), cos(a, c)
    # all-MiniLM-L6-v2 gives about 0.89 and 0.03 here
    assert para > 0.75, para
    assert unrelated < 0.3, unrelated
    assert para - unrelated > 0.5


def test_batch_equals_one_by_one(embedder: MiniLMEmbedder) -> None:
    # different lengths, so the batch is padded
    texts = [
        "Hi",
        *PARAPHRASE,
        UNRELATED,
        "Turn off the lights in the kitchen and set the thermostat to twenty degrees, please.",
    ]
    batch = embedder.embed(texts)
    single = np.stack([embedder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(batch, single, atol=1e-5, rtol=0)
    # and the rows are not all the same vector
    assert cos(batch[0], batch[4]) < 0.9


def test_empty_and_very_long_texts(embedder: MiniLMEmbedder) -> None:
    words = " ".join(f"word{i % 50} lamp kitchen" for i in range(400))
    long_a = (words + " The ending talks about cats.")[:5000]
    long_b = words[:4900] + " " + "A completely different ending about rockets. " * 2
    assert len(long_a) == 5000 and len(long_b) > 4900
    v = embedder.embed(["", long_a, long_b, "lamp kitchen"])
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # only the first 256 tokens count: the long texts differ only far past that point
    np.testing.assert_allclose(v[1], v[2], atol=1e-6, rtol=0)
    assert cos(v[0], v[1]) < 0.9


def test_the_limit_is_256_tokens_not_the_tokenizer_files_128(embedder: MiniLMEmbedder) -> None:
    # "wordN lamp kitchen" is 4 tokens: 40 of them put the endings past token 160
    prefix = " ".join(f"word{i} lamp kitchen" for i in range(40))
    a, b = embedder.embed([prefix + " rockets and space travel", prefix + " baking bread"])
    assert cos(a, b) < 0.999


def test_a_str_is_refused(embedder: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError):
        embedder.embed("one text")


def test_missing_files_say_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"edged models fetch {MODEL_NAME}"):
        MiniLMEmbedder.from_manifest(MANIFEST, tmp_path)


def test_a_file_that_is_not_a_model_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match=r"bad\.onnx"):
        MiniLMEmbedder(bad, MODELS_DIR / models.load_manifest(MANIFEST).get(TOKENIZER_NAME).file)
