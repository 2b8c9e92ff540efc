"""The cloud answers HTTP 500, 429 and 503, or hangs, through the real daemon.

The cloud is llama.cpp's server behind the recording proxy; ``proxy.fail_with(status)``
makes the proxy answer every request itself with that status, the way an overloaded or
broken server does. Every test checks the rule of docs/reliability.md: one final reply per
request, served locally with the reason, no retry storm (the proxy counts what reached it),
no text twice.

The local model is asked at temperature 0, but two of its answers to one prompt are never
compared: greedy decoding with a reused KV prefix may pick other tokens (docs/protocol.md).
What is checked is what edged promises about an answer, whatever its words (``served``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import Broker, Client, CloudServer, Daemon, cloud_env, token_count

pytestmark = pytest.mark.integration

PROMPT = "Name a colour."
MAX_TOKENS = 8


def ask_timed(
    d: Daemon, port: int, body: dict[str, object]
) -> tuple[dict[str, object], str, float]:
    """The final reply, the chunks' texts joined in order, and the seconds from the publish
    to the final reply (the client's connection set up before, so not counted)."""
    rid = uuid.uuid4().hex[:10]
    with Client(port) as c:
        c.subscribe("reply/cf")
        t0 = time.monotonic()
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": rid, "max_tokens": MAX_TOKENS, "temperature": 0, **body}),
            response_topic="reply/cf",
        )
        msgs = [m.json() for m in c.collect(rid, timeout_s=60)]
        took = time.monotonic() - t0
    finals = [m for m in msgs if m["type"] in ("result", "error")]
    assert len(finals) == 1 and msgs[-1] is finals[0], msgs  # exactly one final, last
    chunks = [m for m in msgs if m["type"] == "chunk"]
    assert [m["seq"] for m in chunks] == list(range(len(chunks)))  # one sequence, no restart
    return finals[0], "".join(str(m["text"]) for m in chunks), took


def ask(d: Daemon, port: int, body: dict[str, object]) -> tuple[dict[str, object], str]:
    """The final reply, and the chunks' texts joined in order."""
    final, chunks, _ = ask_timed(d, port, body)
    return final, chunks


def served(final: dict[str, object], chunks: str, backend: str, reasons: list[str]) -> None:
    """One answer, by ``backend`` for ``reasons``, as edged promises it after failed cloud
    attempts (``ask`` has checked: one final reply, last; one chunk sequence from 0): a
    result whose text is the chunks joined; nothing of a failed attempt in it (the proxy's
    injected error bodies say "injected <status>"; a hung server sends nothing); and no text
    twice: the text is no longer than the tokens the backend reports having generated."""
    assert final["type"] == "result", final
    assert final["route"] == {"backend": backend, "reasons": reasons}, final
    text = str(final["text"])
    assert text.strip() and chunks == text, (chunks, final)
    assert "injected" not in text and "server_error" not in text, text
    assert final["finish_reason"] in ("stop", "length"), final
    usage = final["usage"]
    assert isinstance(usage, dict), final
    n = usage["completion_tokens"]
    assert isinstance(n, int) and 0 < n <= MAX_TOKENS, final
    # re-tokenized, the text of n generated tokens comes back as about n tokens (the
    # tokenizer's own split is rarely longer than the model's); the answer sent twice, or a
    # failed attempt's text before it, would be about 2n
    assert token_count(text) <= n + 1, (text, n)


def posts(cloud: CloudServer) -> int:
    """HTTP requests that reached the cloud side so far (passed on or answered by the proxy)."""
    return cloud.proxy.received().count(b"POST /")


@pytest.fixture
def cloud(cloud_server: CloudServer) -> Iterator[CloudServer]:
    cloud_server.start()
    yield cloud_server
    cloud_server.proxy.heal()


def start_daemon(make_daemon: Callable[..., Daemon], cloud: CloudServer, **env: str) -> Daemon:
    """Prefers the cloud (content-pipeline); the breaker opens after 2 failed requests and
    stays open 2 s; one retry before the first token, which may take 5 s (a real server,
    cold or on a loaded machine, can take over 1 s); ``env`` overrides."""
    settings = {
        "EDGED_CLOUD__FIRST_TOKEN_TIMEOUT_S": "5",
        "EDGED_CLOUD__RETRIES": "1",
        "EDGED_CLOUD__BREAKER_COOLDOWN_S": "2",
        "EDGED_ROUTER__DEFAULT_POLICY": "content-pipeline",
        "EDGED_TELEMETRY__INTERVAL_S": "0.2",
    }
    return make_daemon(**cloud_env(cloud, **{**settings, **env}))


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon], cloud: CloudServer) -> Daemon:
    return start_daemon(make_daemon, cloud)


def alarms(d: Daemon, port: int) -> list[str]:
    """The alarms of the next telemetry message published after this call."""
    with Client(port) as c:
        c.subscribe(f"edged/{d.device_id}/telemetry")
        first = c.get(timeout_s=10)  # may be retained or already in flight: take the next
        assert first.json().get("alarms") is not None
        return list(c.get(timeout_s=10).json()["alarms"])


def test_http_500_falls_back_locally_then_the_breaker_stops_the_traffic(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud: CloudServer
) -> None:
    # open 4 s: the three requests that must find it open fit in it on a loaded machine too
    daemon = start_daemon(make_daemon, cloud, EDGED_CLOUD__BREAKER_COOLDOWN_S="4")
    cloud.proxy.fail_with(500)
    for _ in range(2):
        before = posts(cloud)
        final, chunks = ask(daemon, broker.port, {"prompt": PROMPT})
        # the local model's answer, once: nothing from the failed attempts, nothing twice
        served(final, chunks, "local", ["policy", "cloud_failed"])
        assert posts(cloud) - before == 2  # the request and its one retry, no more

    # two failed requests opened the breaker: nothing more is sent to the cloud
    faulted = cloud.proxy.faulted
    before = posts(cloud)
    for _ in range(3):
        final, chunks = ask(daemon, broker.port, {"prompt": PROMPT})
        served(final, chunks, "local", ["policy", "cloud_down"])
    assert posts(cloud) == before and cloud.proxy.faulted == faulted

    # the server recovers; after the cool-down one trial closes the breaker
    cloud.proxy.heal()
    deadline = time.monotonic() + 20
    while True:
        final, chunks = ask(daemon, broker.port, {"prompt": PROMPT})
        if final["route"] == {"backend": "cloud", "reasons": ["policy"]}:
            break
        served(final, chunks, "local", ["policy", "cloud_down"])
        assert time.monotonic() < deadline, "the breaker never closed"
        time.sleep(0.3)
    served(final, chunks, "cloud", ["policy"])
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_http_429_with_retry_after_is_obeyed(
    daemon: Daemon, broker: Broker, cloud: CloudServer
) -> None:
    # 8 s: the wait must outlast the local answer that follows the 429 (with 3 s, a local
    # answer decoding on 2 threads on a loaded machine took longer, and the alarm was gone)
    wait_s = 8.0
    cloud.proxy.fail_with(429, {"Retry-After": str(int(wait_s))})
    before = posts(cloud)
    # the 429 arrives after the publish and before the (local) answer: the wait it asks for
    # lasts at least until sent_at + wait_s and at most until told_at + wait_s
    sent_at = time.monotonic()
    final, _ = ask(daemon, broker.port, {"prompt": PROMPT})
    told_at = time.monotonic()
    assert final["type"] == "result", final
    assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_failed"]}
    assert posts(cloud) - before == 1  # asked to wait: no retry within the request

    # while the wait lasts, nothing is sent: the router sees the cloud as down, and the
    # operator sees why
    cloud.proxy.heal()
    before = posts(cloud)
    assert "cloud_throttled" in alarms(daemon, broker.port)
    while True:  # at least once, and for as long as the wait surely lasts
        final, _ = ask(daemon, broker.port, {"prompt": PROMPT})
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_down"]}
        if time.monotonic() - sent_at >= wait_s - 1.0:
            break
    assert posts(cloud) == before

    # and after it, the cloud serves again (one 429 did not open the breaker)
    time.sleep(max(0.0, wait_s + 0.2 - (time.monotonic() - told_at)))
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
    # 6 s: with 3 s, the local answer after the failed attempts missed it on a loaded machine
    # decoding on 2 threads (EDGED_TEST_N_THREADS=2)
    body = {"prompt": PROMPT, "route": "cloud", "deadline_ms": 6000}
    final, chunks, took = ask_timed(daemon, broker.port, body)
    served(final, chunks, "local", ["hint", "cloud_failed"])
    assert took < 6.0, took


def test_a_hung_cloud_is_given_up_at_the_first_token_timeout_then_avoided(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud: CloudServer
) -> None:
    """The server accepts connections and answers nothing (SIGSTOP): each request waits at
    most the first-token timeout (3 s here, not the 10 s read timeout), then is served
    locally; two such requests open the breaker and later ones do not wait at all."""
    daemon = start_daemon(make_daemon, cloud, EDGED_CLOUD__FIRST_TOKEN_TIMEOUT_S="3")
    cloud.freeze()
    try:
        for _ in range(2):
            final, chunks, took = ask_timed(daemon, broker.port, {"prompt": PROMPT})
            served(final, chunks, "local", ["policy", "cloud_failed"])
            assert 3.0 <= took < 6.0, took
        final, chunks, took = ask_timed(daemon, broker.port, {"prompt": PROMPT})
        served(final, chunks, "local", ["policy", "cloud_down"])
        assert took < 1.0, took  # no request waits on a dead cloud
        # a request with a deadline gives the cloud half of it, then is served locally in time
        # (half of 5.6 s is less than the first-token timeout; the 0.8 s left of 1.6 s, as
        # this had, and 1.8 s of 3.6 s were too little for 8 local tokens on a loaded machine
        # decoding on 2 threads)
        time.sleep(2.1)  # the breaker's cool-down: this one is the trial
        final, chunks, took = ask_timed(
            daemon, broker.port, {"prompt": PROMPT, "deadline_ms": 5600}
        )
        served(final, chunks, "local", ["policy", "cloud_failed"])
        assert 2.8 <= took < 5.6, took
    finally:
        cloud.thaw()
