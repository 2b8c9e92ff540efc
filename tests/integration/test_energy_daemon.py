"""Energy and telemetry through the real daemon: trace replay, request events, outage."""

from __future__ import annotations

import json
import math
import queue
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from edged.mqtt.link import props_for
from edged.store import StateDoc
from tests.helpers import Broker, Client, Daemon

pytestmark = pytest.mark.integration


def constant_trace(tmp_path: Path, watts: float) -> Path:
    p = tmp_path / "trace.csv"
    p.write_text(f"t_s,power_w\n0,{watts}\n1000,{watts}\n")
    return p


def trace_daemon(make: Callable[..., Daemon], tmp_path: Path, watts: float, **env: str) -> Daemon:
    return make(
        EDGED_POWER__SOURCE="trace",
        EDGED_POWER__TRACE_FILE=str(constant_trace(tmp_path, watts)),
        EDGED_POWER__IDLE_W="2.0",
        EDGED_TELEMETRY__INTERVAL_S="0.5",
        **env,
    )


def test_result_energy_events_and_telemetry(
    make_daemon: Callable[..., Daemon], broker: Broker, tmp_path: Path
) -> None:
    d = trace_daemon(make_daemon, tmp_path, 5.0)
    secret_prompt = f"Say the word marmalade-{uuid.uuid4().hex[:6]}."
    with Client(broker.port) as c:
        c.subscribe(f"edged/{d.device_id}/events/request")
        c.subscribe(f"edged/{d.device_id}/telemetry")
        c.subscribe("reply/e")
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": "e1", "prompt": secret_prompt, "max_tokens": 24}),
            response_topic="reply/e",
        )
        seen: dict[str, list[dict[str, Any]]] = {"result": [], "event": [], "telemetry": []}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            seen["result"] and seen["event"] and len(seen["telemetry"]) >= 2
        ):
            m = c.get(timeout_s=10)
            body = m.json()
            if m.topic == "reply/e" and body["type"] == "result":
                seen["result"].append(body)
            elif m.topic.endswith("/events/request"):
                seen["event"].append(body)
                assert "marmalade" not in m.payload.decode()  # no prompt or answer text
            elif m.topic.endswith("/telemetry"):
                seen["telemetry"].append(body)
    result = seen["result"][0]
    e = result["energy"]
    total_s = result["timing_ms"]["total"] / 1000
    assert e["source"] == "trace" and e["reason"] is None
    # 5 W for the request's duration (the window is a few ms shorter than "total")
    assert e["joules"] == pytest.approx(5.0 * total_s, rel=0.05, abs=0.02)
    assert e["joules_active"] == pytest.approx(3.0 * total_s, rel=0.05, abs=0.02)  # idle 2 W
    assert e["sample_hz"] == pytest.approx(50, rel=0.2)
    n = result["usage"]["completion_tokens"]
    assert e["tokens_per_joule"] == pytest.approx(n / e["joules"], rel=1e-3)
    assert e["mwh_per_1k_tokens"] == pytest.approx(e["joules"] / 3.6 * 1000 / n, rel=1e-3)
    ev = seen["event"][0]
    assert ev["id"] == "e1" and ev["outcome"] == "result" and ev["energy"] == e
    assert ev["route"] == result["route"] and ev["schema_version"] == 1
    t = seen["telemetry"][-1]
    assert t["schema_version"] == 1 and t["device_id"] == d.device_id
    assert t["power"]["source"] == "trace" and t["power"]["total_w"] == pytest.approx(5.0)
    assert t["battery"]["pct"] is None and t["battery"]["reason"]  # null with a reason
    assert t["energy"]["total_j"] > 0
    assert isinstance(t["llm"]["queue_depth"], int)
    first = seen["telemetry"][0]["energy"]["total_j"]
    assert t["energy"]["total_j"] >= first


def test_energy_counter_survives_a_restart(
    make_daemon: Callable[..., Daemon], broker: Broker, tmp_path: Path
) -> None:
    d = trace_daemon(make_daemon, tmp_path, 10.0)
    with Client(broker.port) as c:
        c.subscribe(f"edged/{d.device_id}/telemetry")
        totals = []
        while len(totals) < 3:
            totals.append(c.get(timeout_s=10).json()["energy"]["total_j"])
        assert totals == sorted(totals) and totals[-1] > 0
        assert d.stop() == 0
        before = StateDoc(tmp_path / f"state-{d.device_id}" / "energy.json").read()
        assert before is not None
        d.start()
        after = []
        while len(after) < 2:
            body = c.get(timeout_s=10).json()
            if not body.get("historical"):
                after.append(body["energy"]["total_j"])
    # never backwards across a restart (reports floor to the mJ, so they never overstate)
    assert before["total_j"] >= totals[-1]
    assert after[0] >= math.floor(before["total_j"] * 1000) / 1000
    assert after == sorted(after)


def test_telemetry_from_an_outage_arrives_afterwards_in_order(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    own = Broker(tmp_path / "own")
    own.start()
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    tap = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="tap-outage",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    tap.on_message = lambda c, u, m: inbox.put(json.loads(m.payload))
    props = props_for(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600  # the broker keeps the tap's subscription
    d = Daemon(
        broker_port=own.port,
        device_id=f"o{uuid.uuid4().hex[:8]}",
        log_path=tmp_path / "edged.log",
        extra_env={
            "EDGED_POWER__SOURCE": "trace",
            "EDGED_POWER__TRACE_FILE": str(constant_trace(tmp_path, 4.0)),
            "EDGED_TELEMETRY__INTERVAL_S": "0.2",
            "EDGED_MQTT__KEEPALIVE_S": "5",
            "EDGED_MQTT__RECONNECT_MAX_S": "1",
        },
    )
    try:
        tap.connect("127.0.0.1", own.port, clean_start=False, properties=props)
        tap.loop_start()
        tap.subscribe(f"edged/{d.device_id}/telemetry", qos=1)
        d.start()
        live = [inbox.get(timeout=10) for _ in range(3)]
        assert not any(m.get("historical") for m in live)
        own.stop(signal.SIGTERM)  # graceful: the broker saves its sessions
        time.sleep(2.5)  # about 12 reports are spooled meanwhile
        own.start()
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                got.append(inbox.get(timeout=10))
            except queue.Empty:
                break
            if sum(1 for m in got if not m.get("historical")) >= 3:
                break
        # delivery is at least once: a copy resent around the reconnect has the same spool_seq
        historical, seen_seq = [], set()
        for m in got:
            if m.get("historical") and m["spool_seq"] not in seen_seq:
                seen_seq.add(m["spool_seq"])
                historical.append(m)
        assert len(historical) >= 8, d.logs()
        # in order: spool sequence and report time both increase; live ones come after
        seqs = [m["spool_seq"] for m in historical]
        assert seqs == sorted(seqs)
        ts = [m["ts_unix_s"] for m in historical]
        assert ts == sorted(ts)
        # a live report sent just before the outage and not yet acknowledged is resent by
        # paho on reconnect (at least once): it predates the spooled ones, so set it aside
        got = [m for m in got if m.get("historical") or m["ts_unix_s"] > ts[0]]
        first_live = next(i for i, m in enumerate(got) if not m.get("historical"))
        assert all(m.get("historical") for m in got[:first_live])
        assert all(not m.get("historical") for m in got[first_live:])
        assert historical[-1]["ts_unix_s"] <= got[first_live]["ts_unix_s"]
        assert all(m["spool_dropped"] == 0 for m in got)
    finally:
        tap.loop_stop()
        tap.disconnect()
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        own.stop()
