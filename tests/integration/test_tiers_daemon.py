"""Three tiers through the real daemon: the real local model, a real Mosquitto, and two real
loopback OpenAI-compatible servers (tests/scripted_cloud.py), one configured as the lan
backend ``edge`` ([backends.edge], trust lan) and one as the public ``[cloud]``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Broker, Client, Daemon
from tests.scripted_cloud import ScriptedCloud

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lan() -> Iterator[ScriptedCloud]:
    s = ScriptedCloud()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def public() -> Iterator[ScriptedCloud]:
    s = ScriptedCloud()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon], lan: ScriptedCloud, public: ScriptedCloud) -> Daemon:
    lan.clear()
    public.clear()
    edge = {
        "kind": "openai",
        "trust": "lan",
        "base_url": lan.base_url,
        "model": "edge-model",
        "connect_timeout_s": 1,
        "retries": 0,
        "breaker_failures": 2,
        "breaker_cooldown_s": 30,
    }
    return make_daemon(
        EDGED_CLOUD__ENABLED="true",
        EDGED_CLOUD__BASE_URL=public.base_url,
        EDGED_CLOUD__RETRIES="0",
        EDGED_BACKENDS=json.dumps({"edge": edge}),
        EDGED_EDGE_API_KEY="lan-key-not-a-config-key",
    )


def ask(broker: Broker, d: Daemon, body: dict[str, Any]) -> dict[str, Any]:
    rid = uuid.uuid4().hex[:10]
    with Client(broker.port) as c:
        c.subscribe("reply/tiers")
        request = {"id": rid, "max_tokens": 6, "temperature": 0, **body}
        c.publish(f"edged/{d.device_id}/request", json.dumps(request), response_topic="reply/tiers")
        final: dict[str, Any] = c.collect(rid, timeout_s=60)[-1].json()
    return final


def saw(server: ScriptedCloud, marker: str) -> bool:
    return any(marker in json.dumps(b) for b in server.bodies)


def test_trading_ops_private_is_served_by_lan_never_public(
    broker: Broker, daemon: Daemon, lan: ScriptedCloud, public: ScriptedCloud
) -> None:
    marker = f"ledger-{uuid.uuid4().hex[:8]}"
    body = {"prompt": f"Say {marker}.", "sensitivity": "private", "policy": "trading-ops"}
    final = ask(broker, daemon, body)
    assert final["type"] == "result", final
    assert final["route"] == {"backend": "edge", "reasons": ["private", "policy"]}
    assert saw(lan, marker) and not saw(public, marker)
    assert lan.last["model"] == "edge-model"
    # naming the public backend does not take it there
    final = ask(broker, daemon, {**body, "route": "cloud"})
    assert final["route"]["backend"] == "edge" and not saw(public, marker)


def test_voice_agent_private_stays_on_the_device_even_naming_lan(
    broker: Broker, daemon: Daemon, lan: ScriptedCloud, public: ScriptedCloud
) -> None:
    marker = f"voice-{uuid.uuid4().hex[:8]}"
    body = {"prompt": f"Say {marker}.", "sensitivity": "private", "route": "edge"}
    final = ask(broker, daemon, {**body, "policy": "voice-agent"})
    assert final["type"] == "result", final
    assert final["route"] == {"backend": "local", "reasons": ["private"]}
    assert not saw(lan, marker) and not saw(public, marker)
    # the same request, not private, goes where it names
    final = ask(broker, daemon, {"prompt": f"Say {marker}.", "route": "edge"})
    assert final["route"] == {"backend": "edge", "reasons": ["hint"]} and saw(lan, marker)
    final = ask(broker, daemon, {"prompt": "Hi.", "route": "no-such-backend"})
    assert final["type"] == "error" and final["code"] == "bad_request"


def test_lan_down_private_falls_back_to_the_device_never_public(
    broker: Broker, daemon: Daemon, lan: ScriptedCloud, public: ScriptedCloud
) -> None:
    lan.stop()
    try:
        reasons = []
        for _ in range(3):  # the first fail before their first token; then the breaker opens
            marker = f"down-{uuid.uuid4().hex[:8]}"
            body = {"prompt": f"Say {marker}.", "sensitivity": "private", "policy": "trading-ops"}
            final = ask(broker, daemon, body)
            assert final["type"] == "result", final
            assert final["route"]["backend"] == "local"
            assert not saw(public, marker)
            reasons.append(final["route"]["reasons"])
        assert reasons[0] == ["private", "policy", "failed:edge"]
        assert reasons[-1] == ["private", "policy", "cloud_down"]
    finally:
        lan.start()


def test_a_second_local_model_serves_what_its_rule_sends_it(
    broker: Broker, make_daemon: Callable[..., Daemon]
) -> None:
    from tests.helpers import MODELS_DIR

    if not (MODELS_DIR / "gemma-3-270m-q4_k_m.gguf").exists():
        pytest.skip("gemma3-270m not fetched: edged models fetch gemma3-270m")
    small_first = {"small-first": {"order": ["gemma", "device"]}}
    d = make_daemon(
        EDGED_LOCAL__N_THREADS="1",
        EDGED_BACKENDS=json.dumps(
            {"gemma": {"kind": "llama", "trust": "device", "model": "gemma3-270m", "n_threads": 1}}
        ),
        EDGED_ROUTER__POLICIES=json.dumps(small_first),
    )
    final = ask(broker, d, {"prompt": "The capital of France is", "route": "gemma"})
    assert final["type"] == "result", final
    assert final["route"] == {"backend": "gemma", "reasons": ["hint"]}
    assert final["usage"]["completion_tokens"] >= 1
    # no remote backend here: rule 3 (no_cloud) decides, on the policy's first device model
    final = ask(broker, d, {"prompt": "Hi.", "policy": "small-first"})
    assert final["route"] == {"backend": "gemma", "reasons": ["no_cloud"]}
    final = ask(broker, d, {"prompt": "Hi."})  # voice-agent: the device's first model, local
    assert final["route"] == {"backend": "local", "reasons": ["no_cloud"]}


def test_residency_unloads_an_idle_model_and_loads_it_again_on_demand(
    broker: Broker, make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    import time

    from tests.helpers import MODELS_DIR

    if not (MODELS_DIR / "gemma-3-270m-q4_k_m.gguf").exists():
        pytest.skip("gemma3-270m not fetched: edged models fetch gemma3-270m")
    gemma = {"kind": "llama", "trust": "device", "model": "gemma3-270m", "n_threads": 1}
    d = make_daemon(
        EDGED_LOCAL__N_THREADS="1",
        EDGED_BACKENDS=json.dumps({"gemma": {**gemma, "keep_alive_s": 1}}),
    )
    for n in (1, 2):
        final = ask(broker, d, {"prompt": "The capital of France is", "route": "gemma"})
        assert final["route"] == {"backend": "gemma", "reasons": ["hint"]}, final
        deadline = time.monotonic() + 15
        while d.logs().count("event=residency_unloaded backend=gemma") < n:
            assert time.monotonic() < deadline, "gemma was not unloaded after 1 s idle"
            time.sleep(0.2)
    assert d.logs().count("event=residency_loaded backend=gemma") == 2
    d.stop()

    # a device that cannot hold it: refused with the reason, and served by local instead
    fake_proc = tmp_path / "root" / "proc"
    fake_proc.mkdir(parents=True)
    (fake_proc / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 102400 kB\n")
    d = make_daemon(
        EDGED_LOCAL__N_THREADS="1",
        EDGED_POWER__SYSFS_ROOT=str(tmp_path / "root"),
        EDGED_BACKENDS=json.dumps({"gemma": {**gemma, "keep_alive_s": 1}}),
    )
    final = ask(broker, d, {"prompt": "Hi.", "route": "gemma"})
    assert final["type"] == "result", final
    assert final["route"] == {"backend": "local", "reasons": ["hint", "failed:gemma"]}
    assert "event=residency_refused backend=gemma" in d.logs()
