"""The cloud answers HTTP 500, 429 and 503, or hangs, through the real daemon.

The cloud is llama.cpp's server behind the recording proxy; ``proxy.fail_with(status)``
makes the proxy answer every request itself with that status, the way an overloaded or
broken server does. Every test checks the rule of docs/reliability.md: one final reply per
request, served locally with the reason, no retry storm (the proxy counts what reached it),
no text twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import Broker, Client, CloudServer, Daemon, cloud_env

pytestmark = pytest.mark.integration

PROMPT = "Name a colour."


def ask(d: Daemon, port: int, body: dict[str, object]) -> tuple[dict[str, object], str]:
    """The final reply, and the chunks' texts joined in order."""
    rid = uuid.uuid4().hex[:10]
    with Client(port) as c:
        c.subscribe("reply/cf")
        c.publish(f"edged/{d.device_id}/request",
                  json.dumps({"id": rid, "max_tokens": 8, "temperature": 0, **body}),
                  response_topic="reply/cf")  # fmt: skip
        msgs = [m.json() for m in c.collect(rid, timeout_s=60)]
    finals = [m for m in msgs if m["type"] in ("result", "error")]
    assert len(finals) == 1 and msgs[-1] is finals[0], msgs  # exactly one final, last
    chunks = [m for m in msgs if m["type"] == "chunk"]
    assert [m["seq"] for m in chunks] == list(range(len(chunks)))  # one sequence, no restart
    return finals[0], "".join(str(m["text"]) for m in chunks)


def posts(cloud: CloudServer) -> int:
    """HTTP requests that reached the cloud side so far (passed on or answered by the proxy)."""
    return cloud.proxy.received().count(b"POST /")


@pytest.fixture
def cloud(cloud_server: CloudServer) -> Iterator[CloudServer]:
    cloud_server.start()
    yield cloud_server
    cloud_server.proxy.heal()


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon], cloud: CloudServer) -> Daemon:
    """Prefers the cloud (content-pipeline); the breaker opens after 2 failed requests and
    stays open 2 s; one retry before the first token."""
    return make_daemon(
        **cloud_env(
            cloud,
            EDGED_CLOUD__FIRST_TOKEN_TIMEOUT_S="1",
            EDGED_CLOUD__RETRIES="1",
            EDGED_CLOUD__BREAKER_COOLDOWN_S="2",
            EDGED_ROUTER__DEFAULT_POLICY="content-pipeline",
            EDGED_TELEMETRY__INTERVAL_S="0.2",
        )
    )


def alarms(d: Daemon, port: int) -> list[str]:
    """The alarms of the next telemetry message published after this call."""
    with Client(port) as c:
        c.subscribe(f"edged/{d.device_id}/telemetry")
        first = c.get(timeout_s=10)  # may be retained or already in flight: take the next
        assert first.json().get("alarms") is not None
        return list(c.get(timeout_s=10).json()["alarms"])


def test_http_500_falls_back_locally_then_the_breaker_stops_the_traffic(
    daemon: Daemon, broker: Broker, cloud: CloudServer
) -> None:
    expected, expected_chunks = ask(daemon, broker.port, {"prompt": PROMPT, "route": "local"})
    assert expected["type"] == "result" and expected["text"]
    assert expected_chunks == expected["text"]

    cloud.proxy.fail_with(500)
    for _ in range(2):
        before = posts(cloud)
        final, chunks = ask(daemon, broker.port, {"prompt": PROMPT})
        assert final["type"] == "result", final
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_failed"]}
        # the local model's answer, once: nothing from the failed attempts, nothing twice
        assert final["text"] == expected["text"] and chunks == expected["text"]
        assert posts(cloud) - before == 2  # the request and its one retry, no more

    # two failed requests opened the breaker: nothing more is sent to the cloud
    faulted = cloud.proxy.faulted
    before = posts(cloud)
    for _ in range(3):
        final, chunks = ask(daemon, broker.port, {"prompt": PROMPT})
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_down"]}
        assert final["text"] == expected["text"] and chunks == expected["text"]
    assert posts(cloud) == before and cloud.proxy.faulted == faulted

    # the server recovers; after the cool-down one trial closes the breaker
    cloud.proxy.heal()
    deadline = time.monotonic() + 20
    while True:
        final, _ = ask(daemon, broker.port, {"prompt": PROMPT})
        if final["route"] == {"backend": "cloud", "reasons": ["policy"]}:
            break
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_down"]}
        assert time.monotonic() < deadline, "the breaker never closed"
        time.sleep(0.3)
    assert final["type"] == "result" and final["text"]
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_http_429_with_retry_after_is_obeyed(
    daemon: Daemon, broker: Broker, cloud: CloudServer
) -> None:
    cloud.proxy.fail_with(429, {"Retry-After": "3"})
    before = posts(cloud)
    final, _ = ask(daemon, broker.port, {"prompt": PROMPT})
    told_at = time.monotonic()
    assert final["type"] == "result", final
    assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_failed"]}
    assert posts(cloud) - before == 1  # asked to wait 3 s: no retry within the request

    # while the wait lasts, nothing is sent: the router sees the cloud as down, and the
    # operator sees why
    cloud.proxy.heal()
    before = posts(cloud)
    assert "cloud_throttled" in alarms(daemon, broker.port)
    while time.monotonic() - told_at < 2.0:
        final, _ = ask(daemon, broker.port, {"prompt": PROMPT})
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_down"]}
    assert posts(cloud) == before

    # and after it, the cloud serves again (one 429 did not open the breaker)
    time.sleep(max(0.0, 3.2 - (time.monotonic() - told_at)))
    final, chunks = ask(daemon, broker.port, {"prompt": PROMPT})
    assert final["route"] == {"backend": "cloud", "reasons": ["policy"]}
    assert final["type"] == "result" and final["text"] == chunks
    assert posts(cloud) == before + 1
    assert "cloud_throttled" not in alarms(daemon, broker.port)


def test_http_429_and_503_without_a_wait_are_retried_once(
    daemon: Daemon, broker: Broker, cloud: CloudServer
) -> None:
    for status, headers in ((429, {}), (503, {"retry-after-ms": "20"})):
        cloud.proxy.fail_with(status, headers)
        before = posts(cloud)
        final, _ = ask(daemon, broker.port, {"prompt": PROMPT})
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_failed"]}
        assert posts(cloud) - before == 2, status  # a wait shorter than our pause: one retry
        cloud.proxy.heal()
        final, _ = ask(daemon, broker.port, {"prompt": PROMPT})  # success resets the count
        assert final["route"] == {"backend": "cloud", "reasons": ["policy"]}, status


def test_http_500_for_a_request_that_must_not_wait_ends_within_its_deadline(
    daemon: Daemon, broker: Broker, cloud: CloudServer
) -> None:
    """A deadline holds through the failed attempts and the fallback."""
    cloud.proxy.fail_with(500)
    started = time.monotonic()
    final, chunks = ask(daemon, broker.port,
                        {"prompt": PROMPT, "route": "cloud", "deadline_ms": 3000})  # fmt: skip
    took = time.monotonic() - started
    assert final["type"] == "result", final
    assert final["route"] == {"backend": "local", "reasons": ["hint", "cloud_failed"]}
    assert final["text"] == chunks
    assert took < 3.0


def test_a_hung_cloud_is_given_up_at_the_first_token_timeout_then_avoided(
    daemon: Daemon, broker: Broker, cloud: CloudServer
) -> None:
    """The server accepts connections and answers nothing (SIGSTOP): each request waits at
    most the first-token timeout (1 s here, not the 10 s read timeout), then is served
    locally; two such requests open the breaker and later ones do not wait at all."""
    expected, _ = ask(daemon, broker.port, {"prompt": PROMPT, "route": "local"})
    cloud.freeze()
    try:
        for _ in range(2):
            t0 = time.monotonic()
            final, chunks = ask(daemon, broker.port, {"prompt": PROMPT})
            took = time.monotonic() - t0
            assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_failed"]}
            assert final["text"] == expected["text"] == chunks
            assert 1.0 <= took < 4.0, took
        t0 = time.monotonic()
        final, _ = ask(daemon, broker.port, {"prompt": PROMPT})
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_down"]}
        assert time.monotonic() - t0 < 1.0  # no request waits on a dead cloud
        # a request with a deadline gives the cloud half of it, then is served locally in time
        time.sleep(2.1)  # the breaker's cool-down: this one is the trial
        t0 = time.monotonic()
        final, chunks = ask(daemon, broker.port, {"prompt": PROMPT, "deadline_ms": 1600})
        took = time.monotonic() - t0
        assert final["type"] == "result", final
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_failed"]}
        assert final["text"] == chunks and 0.8 <= took < 1.6
    finally:
        cloud.thaw()
