"""The daemon end to end: real Mosquitto, real model, real clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.helpers import ROOT, Broker, Client, Daemon, free_port

pytestmark = pytest.mark.integration

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}


def ask(
    d: Daemon, port: int, body: dict[str, object], timeout_s: float = 60.0, **pub: object
) -> list[dict[str, object]]:
    """Publish one request with a v5 response topic; return its reply messages."""
    rid = str(body.get("id", uuid.uuid4().hex))
    body = {**body, "id": rid}
    topic = f"reply/{uuid.uuid4().hex[:8]}"
    with Client(port) as c:
        c.subscribe(topic)
        c.publish(f"edged/{d.device_id}/request", json.dumps(body), response_topic=topic, **pub)  # type: ignore[arg-type]
        return [m.json() for m in c.collect(rid, timeout_s=timeout_s)]


def test_ask_cli_prints_the_streamed_answer(shared_daemon: Daemon, broker: Broker) -> None:
    """``edged ask`` prints the answer as it streams, then a summary on stderr. What it
    printed is checked against the replies it was sent (watched on the broker), not against
    what the model might say."""
    with Client(broker.port) as watcher:
        watcher.subscribe("reply/#")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "edged.cli",
                "ask",
                "--device",
                shared_daemon.device_id,
                "--port",
                str(broker.port),
                "--temperature",
                "0",
                "What is the capital of France?",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("EDGED_")},
        )
        assert out.returncode == 0, out.stderr
        replies = []
        while not replies or replies[-1]["type"] not in ("result", "error"):
            msg = watcher.get(timeout_s=10)
            if msg.topic.startswith("reply/ask-"):
                replies.append(msg.json())
    final = replies[-1]
    assert final["type"] == "result" and str(final["id"]).startswith("ask-"), final
    chunks = [r for r in replies[:-1] if r["type"] == "chunk"]
    assert chunks and "".join(str(c["text"]) for c in chunks) == final["text"]
    assert str(final["text"]).strip()
    assert out.stdout == f"{final['text']}\n"  # the answer as streamed, then a line break
    assert "route=local" in out.stderr and "ttft_ms=" in out.stderr


def test_stream_chunks_then_one_result(shared_daemon: Daemon, broker: Broker) -> None:
    replies = ask(
        shared_daemon,
        broker.port,
        {
            "messages": [SYSTEM, {"role": "user", "content": "Name three colours."}],
            "max_tokens": 24,
            "temperature": 0,
        },
    )
    chunks = [r for r in replies if r["type"] == "chunk"]
    final = replies[-1]
    assert final["type"] == "result", final
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert chunks, "a streamed request gets chunks"
    assert "".join(str(c["text"]) for c in chunks) == final["text"]
    assert final["route"] == {"backend": "local", "reasons": ["no_cloud"]}
    usage = final["usage"]
    assert isinstance(usage, dict) and 0 < usage["completion_tokens"] <= 24
    assert usage["prompt_tokens"] > 10
    timing = final["timing_ms"]
    assert isinstance(timing, dict)
    assert 0 <= timing["queue"] <= timing["ttft"] <= timing["total"]
    energy = final["energy"]
    assert isinstance(energy, dict) and energy["joules"] is None and energy["reason"]
    # the default pack found nothing
    assert final["guardian"] == {"input": {}, "output": {}, "tools": {}}


def test_non_streaming_request_gets_only_the_result(shared_daemon: Daemon, broker: Broker) -> None:
    replies = ask(
        shared_daemon, broker.port, {"prompt": "Say hello.", "stream": False, "max_tokens": 8}
    )
    assert [r["type"] for r in replies] == ["result"]
    assert replies[0]["finish_reason"] in ("stop", "length")


def test_max_tokens_is_honoured(shared_daemon: Daemon, broker: Broker) -> None:
    replies = ask(
        shared_daemon,
        broker.port,
        {"prompt": "Write a long story about a dragon.", "max_tokens": 5, "temperature": 0},
    )
    final = replies[-1]
    assert final["finish_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 5  # type: ignore[index]


def test_mosquitto_clients_v5_response_topic_and_correlation(
    shared_daemon: Daemon, broker: Broker
) -> None:
    topic = f"reply/cli-{uuid.uuid4().hex[:6]}"
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-p",
            str(broker.port),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            topic,
            "-F",
            "%D\t%p",
            "-W",
            "60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # let the subscription reach the broker
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker.port),
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                f"edged/{shared_daemon.device_id}/request",
                "-D",
                "publish",
                "response-topic",
                topic,
                "-D",
                "publish",
                "correlation-data",
                "corr-42",
                "-m",
                json.dumps({"id": "cli-1", "prompt": "Say hi.", "max_tokens": 12}),
            ],
            check=True,
            timeout=10,
        )
        lines: list[tuple[str, dict[str, object]]] = []
        assert sub.stdout is not None
        for line in sub.stdout:
            corr, payload = line.rstrip("\n").split("\t", 1)
            lines.append((corr, json.loads(payload)))
            if lines[-1][1]["type"] in ("result", "error"):
                break
    finally:
        sub.terminate()
        sub.wait()
    assert all(corr == "corr-42" for corr, _ in lines)
    kinds = [body["type"] for _, body in lines]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert kinds[:-1] == ["chunk"] * (len(kinds) - 1) and len(kinds) > 1
    assert all(body["id"] == "cli-1" for _, body in lines)


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("invalid json", b"{not json", "bad_request"),
    ("invalid utf-8", b'{"prompt": "\xff\xfe"}', "bad_request"),
    ("not an object", b"[1, 2, 3]", "bad_request"),
    ("wrong type", b'{"prompt": 42}', "bad_request"),
    ("missing prompt", b'{"max_tokens": 5}', "bad_request"),
    ("unknown field", b'{"prompt": "hi", "colour": "red"}', "bad_request"),
    ("absurd max_tokens", b'{"prompt": "hi", "max_tokens": 100000000}', "bad_request"),
    ("negative deadline", b'{"prompt": "hi", "deadline_ms": -5}', "bad_request"),
    ("bool as int", b'{"prompt": "hi", "max_tokens": true}', "bad_request"),
    ("deep nesting", b'{"prompt": "hi", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "bad_request"),
    ("over the size limit", b'{"prompt": "' + b"a" * 70000 + b'"}', "too_large"),
]


def test_bad_inputs_each_get_their_error_and_the_daemon_keeps_serving(
    shared_daemon: Daemon, broker: Broker
) -> None:
    topic = f"reply/bad-{uuid.uuid4().hex[:6]}"
    with Client(broker.port) as c:
        c.subscribe(topic)
        for i, (name, payload, code) in enumerate(BAD_INPUTS):
            corr = f"bad-{i}".encode()
            c.publish(
                f"edged/{shared_daemon.device_id}/request",
                payload,
                response_topic=topic,
                correlation_data=corr,
            )
            msg = c.get(timeout_s=10)
            body = msg.json()
            assert msg.correlation_data == corr, name
            assert body["type"] == "error", name
            assert body["code"] == code, (name, body)
            assert body["message"], name
    # ... and a valid request afterwards is served.
    final = ask(shared_daemon, broker.port, {"prompt": "Say yes.", "max_tokens": 4})[-1]
    assert final["type"] == "result"
    assert shared_daemon.proc is not None and shared_daemon.proc.poll() is None


def test_reply_address_with_wildcard_is_refused(shared_daemon: Daemon, broker: Broker) -> None:
    with Client(broker.port) as c:
        c.subscribe("reply/#")
        c.subscribe(f"edged/{shared_daemon.device_id}/response/#")
        c.publish(
            f"edged/{shared_daemon.device_id}/request",
            json.dumps({"id": "wild-1", "prompt": "hi", "reply_to": "reply/+/x"}),
        )
        msg = c.get(timeout_s=10)
    assert msg.topic == f"edged/{shared_daemon.device_id}/response/wild-1"
    body = msg.json()
    assert body["type"] == "error" and body["code"] == "bad_request"
    assert "wildcard" in str(body["message"])


def test_reply_to_outside_allowed_prefixes_is_refused(
    shared_daemon: Daemon, broker: Broker
) -> None:
    with Client(broker.port) as c:
        c.subscribe("#")
        c.publish(
            f"edged/{shared_daemon.device_id}/request",
            json.dumps({"id": "out-1", "prompt": "hi", "reply_to": "home/lights/set"}),
        )
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline:
            msg = c.get(timeout_s=10)
            seen.append(msg.topic)
            if msg.topic.endswith("/response/out-1"):
                break
    assert "home/lights/set" not in seen
    body = msg.json()
    assert body["code"] == "bad_request" and "must start with" in str(body["message"])


def test_mqtt311_client_with_reply_to(shared_daemon: Daemon, broker: Broker) -> None:
    topic = f"reply/v311-{uuid.uuid4().hex[:6]}"
    with Client(broker.port, protocol=paho.MQTTv311) as c:
        c.subscribe(topic)
        c.publish(
            f"edged/{shared_daemon.device_id}/request",
            json.dumps({"id": "v311", "prompt": "Say hi.", "max_tokens": 6, "reply_to": topic}),
        )
        replies = [m.json() for m in c.collect("v311")]
    assert replies[-1]["type"] == "result"


def test_default_reply_topic_when_none_is_given(shared_daemon: Daemon, broker: Broker) -> None:
    with Client(broker.port) as c:
        c.subscribe(f"edged/{shared_daemon.device_id}/response/plain-1")
        c.publish(
            f"edged/{shared_daemon.device_id}/request",
            json.dumps({"id": "plain-1", "prompt": "hi", "max_tokens": 3}),
        )
        replies = [m.json() for m in c.collect("plain-1")]
    assert replies[-1]["type"] == "result"


def test_deadline_gives_timeout_never_a_late_answer(shared_daemon: Daemon, broker: Broker) -> None:
    replies = ask(
        shared_daemon,
        broker.port,
        {"prompt": "Write a long story about a dragon.", "max_tokens": 400, "deadline_ms": 150},
    )
    final = replies[-1]
    assert final["type"] == "error" and final["code"] == "timeout"


def test_busy_past_the_queue_limit(make_daemon: Callable[..., Daemon], broker: Broker) -> None:
    d = make_daemon(EDGED_INGRESS__QUEUE_LIMIT="1")
    topic = f"reply/busy-{uuid.uuid4().hex[:6]}"
    with Client(broker.port) as c:
        c.subscribe(topic)
        for i in range(3):
            c.publish(
                f"edged/{d.device_id}/request",
                json.dumps(
                    {
                        "id": f"b{i}",
                        "prompt": "Tell me a long story.",
                        "max_tokens": 64,
                        "stream": False,
                    }
                ),
                response_topic=topic,
            )
        finals = {}
        while len(finals) < 3:
            body = c.get(timeout_s=60).json()
            if body["type"] in ("result", "error"):
                finals[body["id"]] = body
    assert finals["b0"]["type"] == "result"
    assert finals["b1"]["code"] == "busy" and finals["b2"]["code"] == "busy"


def test_request_sent_while_daemon_is_down_is_answered_after_start(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon()
    assert d.stop() == 0  # its session stays on the broker
    topic = f"reply/later-{uuid.uuid4().hex[:6]}"
    with Client(broker.port) as c:
        c.subscribe(topic)
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": "later-1", "prompt": "Say hi.", "max_tokens": 6}),
            response_topic=topic,
        )
        time.sleep(0.3)
        d.start()
        replies = [m.json() for m in c.collect("later-1", timeout_s=60)]
    assert replies[-1]["type"] == "result"
    assert sum(r["type"] == "result" for r in replies) == 1


def test_status_online_then_offline_on_sigterm(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon()
    with Client(broker.port) as c:
        c.subscribe(f"edged/{d.device_id}/status")
        online = c.get(timeout_s=10)
        assert online.retain and online.json()["state"] == "online"
        assert online.json()["model"] == "smollm2-135m-instruct"
        assert d.stop(signal.SIGTERM) == 0
        offline = c.get(timeout_s=10).json()
    assert offline["state"] == "offline" and offline["reason"] == "shutdown"


def test_last_will_says_offline_when_killed(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_MQTT__KEEPALIVE_S="5")
    with Client(broker.port) as c:
        c.subscribe(f"edged/{d.device_id}/status")
        assert c.get(timeout_s=10).json()["state"] == "online"
        d.stop(signal.SIGKILL)
        offline = c.get(timeout_s=20).json()
    assert offline["state"] == "offline" and offline["reason"] == "connection_lost"


def test_reconnects_after_the_broker_restarts(model_file: Path, tmp_path: Path) -> None:
    own = Broker(tmp_path / "own-broker")
    own.start()
    try:
        d = Daemon(
            broker_port=own.port,
            device_id=f"r{uuid.uuid4().hex[:8]}",
            log_path=tmp_path / "edged-reconnect.log",
        )
        d.start()
        try:
            assert ask(d, own.port, {"prompt": "Say hi.", "max_tokens": 4})[-1]["type"] == "result"
            own.stop(signal.SIGKILL)
            time.sleep(1.0)
            own.start()  # same port, same persistence directory
            deadline = time.monotonic() + 30
            while True:  # lost, then connected again
                _, lost, after = d.logs().partition("event=mqtt_connection_lost")
                if lost and "event=mqtt_connected" in after:
                    break
                assert time.monotonic() < deadline, d.logs()
                time.sleep(0.2)
            final = ask(d, own.port, {"prompt": "Say hi.", "max_tokens": 4})[-1]
            assert final["type"] == "result"
        finally:
            d.stop()
    finally:
        own.stop()


def test_sigterm_before_the_broker_was_ever_reached_stops_at_once(tmp_path: Path) -> None:
    # nothing listens on this port: the link keeps retrying; SIGTERM must not wait for the
    # 30 s first-connection wait to run out (systemd would wait with it)
    d = Daemon(
        broker_port=free_port(),
        device_id=f"t{uuid.uuid4().hex[:10]}",
        log_path=tmp_path / "edged.log",
        extra_env={"EDGED_LOCAL__BACKEND": "fake"},
    )
    d.start(wait_online=False)
    deadline = time.monotonic() + 60
    while "event=mqtt_connect_failed" not in d.logs():
        assert d.proc is not None and d.proc.poll() is None, d.logs()
        assert time.monotonic() < deadline, d.logs()
        time.sleep(0.1)
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout_s=25) == 0
    assert time.monotonic() - t0 < 10, d.logs()
    assert "event=stopped" in d.logs()
