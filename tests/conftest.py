"""Shared fixtures. Integration fixtures use the real parts: Mosquitto and the real model.

The suite is meant to pass on any machine, in any order, under load:

- ``EDGED_TEST_N_THREADS=2 pytest``: the local models the tests run (the daemon's, the
  backends built in tests) decode on 2 threads instead of 1; the test cloud keeps 1.
- ``pytest -p randomly``: shuffled order (pytest-randomly, in the dev extra; off by default
  so that ``make test`` runs in file order). ``--randomly-seed=N`` repeats an order.
- ``pytest --hypothesis-profile=thorough``: the big fuzz tests at their full example counts
  (tests/fuzzing.py; the default profile runs fewer, to keep ``make test`` within budget).
- No test compares two generations or expects a model's words: at temperature 0 decoding is
  greedy but not repeatable bit for bit (docs/protocol.md). The fake backend
  (``EDGED_LOCAL__BACKEND=fake``) echoes, so tests that need exact text use it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.fuzzing  # noqa: F401  (registers the hypothesis profiles before they are loaded)
from tests.helpers import DEFAULT_MODEL_FILE, Broker, CloudServer, Daemon
from tests.scripted_cloud import ScriptedCloud


@pytest.fixture(scope="session")
def model_file() -> Path:
    if not DEFAULT_MODEL_FILE.is_file():
        pytest.fail(
            "the default model is missing: run `make test` (it fetches it) or "
            "`.venv/bin/edged models fetch`"
        )
    return DEFAULT_MODEL_FILE


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def make_daemon(broker: Broker, model_file: Path, tmp_path: Path) -> Iterator[object]:
    """Factory: ``make_daemon(**env)`` starts an edged with its own device id."""
    started: list[Daemon] = []

    def make(start: bool = True, **env: str) -> Daemon:
        d = Daemon(
            broker_port=broker.port,
            device_id=f"t{uuid.uuid4().hex[:10]}",
            log_path=tmp_path / f"edged-{len(started)}.log",
            extra_env=env,
        )
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


@pytest.fixture(scope="module")
def shared_daemon(
    broker: Broker, model_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """One daemon for the tests of a module that do not restart it."""
    d = Daemon(
        broker_port=broker.port,
        device_id=f"s{uuid.uuid4().hex[:10]}",
        log_path=tmp_path_factory.mktemp("edged") / "edged.log",
    )
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def cloud_server(
    model_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudServer]:
    """llama.cpp's OpenAI-compatible server on the default model, behind a recording proxy;
    started once. A test that stops it must start it again before it returns."""
    server = CloudServer(model_file, tmp_path_factory.mktemp("cloud"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cloud() -> Iterator[ScriptedCloud]:
    """A scripted OpenAI-compatible server (tests/scripted_cloud.py) for one test module:
    the test decides what the remote streams."""
    s = ScriptedCloud()
    s.start()
    yield s
    s.stop()
