"""Routing through the real daemon, with a real OpenAI-compatible server as the cloud."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest

from tests.helpers import Broker, Client, CloudServer, Daemon, cloud_env

pytestmark = pytest.mark.integration


def ask(d: Daemon, port: int, body: dict[str, object]) -> dict[str, object]:
    rid = uuid.uuid4().hex[:10]
    with Client(port) as c:
        c.subscribe("reply/r")
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": rid, "max_tokens": 6, "temperature": 0, **body}),
            response_topic="reply/r",
        )
        return c.collect(rid, timeout_s=60)[-1].json()


def cloud_daemon(make_daemon: Callable[..., Daemon], cloud: CloudServer, **env: str) -> Daemon:
    return make_daemon(**cloud_env(cloud, **env))


def test_forced_cloud_private_stays_local_and_never_reaches_the_cloud(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud_server: CloudServer
) -> None:
    d = cloud_daemon(make_daemon, cloud_server)
    marker = f"zebra-{uuid.uuid4().hex[:8]}"
    final = ask(d, broker.port, {"prompt": f"Say {marker}.", "route": "cloud"})
    assert final["type"] == "result", final
    assert final["route"] == {"backend": "cloud", "reasons": ["hint"]}
    assert cloud_server.cloud_saw(marker)  # the cloud side got it

    secret = f"okapi-{uuid.uuid4().hex[:8]}"
    final = ask(
        d, broker.port, {"prompt": f"Say {secret}.", "route": "cloud", "sensitivity": "private"}
    )
    assert final["type"] == "result"
    assert final["route"] == {"backend": "local", "reasons": ["private"]}
    assert not cloud_server.cloud_saw(secret)  # and the cloud side never saw this one

    # auto under the default voice-agent policy: local, because nothing says otherwise
    final = ask(d, broker.port, {"prompt": "Hi."})
    assert final["route"] == {"backend": "local", "reasons": ["policy"]}
    # a request can pick a policy by name; content-pipeline prefers the cloud
    final = ask(d, broker.port, {"prompt": "Hi.", "policy": "content-pipeline"})
    assert final["route"] == {"backend": "cloud", "reasons": ["policy"]}
    final = ask(d, broker.port, {"prompt": "Hi.", "policy": "no-such-policy"})
    assert final["type"] == "error" and final["code"] == "bad_request"


def test_cloud_dies_then_comes_back(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud_server: CloudServer
) -> None:
    # the breaker stays open 3 s: the request that must find it open is sent within that
    # after two local fallbacks, also on a loaded machine
    d = cloud_daemon(
        make_daemon,
        cloud_server,
        EDGED_ROUTER__DEFAULT_POLICY="content-pipeline",
        EDGED_CLOUD__BREAKER_COOLDOWN_S="3",
    )
    assert ask(d, broker.port, {"prompt": "Hi."})["route"] == {
        "backend": "cloud",
        "reasons": ["policy"],
    }
    cloud_server.stop()
    try:
        # failures before the first token are served locally, with the reason
        routes = [ask(d, broker.port, {"prompt": "Hi."})["route"] for _ in range(2)]
        assert routes == [{"backend": "local", "reasons": ["policy", "cloud_failed"]}] * 2
        # the breaker is open now: no request waits on a dead cloud
        final = ask(d, broker.port, {"prompt": "Hi."})
        assert final["type"] == "result"
        assert final["route"] == {"backend": "local", "reasons": ["policy", "cloud_down"]}
        assert "sk-" not in d.logs()
    finally:
        cloud_server.start()
    # after the cool-down one trial goes through, succeeds, and traffic returns
    time.sleep(1.0)
    deadline = time.monotonic() + 20
    while True:
        route = ask(d, broker.port, {"prompt": "Hi."})["route"]
        if route == {"backend": "cloud", "reasons": ["policy"]}:
            break
        assert time.monotonic() < deadline, route
        time.sleep(0.3)
    assert ask(d, broker.port, {"prompt": "Hi."})["route"] == {
        "backend": "cloud",
        "reasons": ["policy"],
    }


def test_api_key_is_sent_and_never_logged(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud_server: CloudServer
) -> None:
    key = f"sk-test-{uuid.uuid4().hex}"
    d = cloud_daemon(make_daemon, cloud_server, EDGED_CLOUD_API_KEY=key)
    final = ask(d, broker.port, {"prompt": "Hi.", "route": "cloud"})
    assert final["route"] == {"backend": "cloud", "reasons": ["hint"]}
    assert cloud_server.cloud_saw(f"Bearer {key}")
    assert key not in d.logs()


def test_semantic_routes(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud_server: CloudServer
) -> None:
    routes = [
        {
            "name": "fresh-facts",
            "backend": "cloud",
            "threshold": 0.5,
            "examples": [
                "what is the latest news",
                "who won the game last night",
                "today's stock price of apple",
            ],
        },
        {
            "name": "smalltalk",
            "backend": "local",
            "threshold": 0.5,
            "examples": ["how are you", "tell me a joke", "good morning"],
        },
    ]
    d = cloud_daemon(
        make_daemon,
        cloud_server,
        EDGED_ROUTER__SEMANTIC_ROUTES=json.dumps(routes),
        EDGED_ROUTER__DEFAULT_POLICY="content-pipeline",
    )
    final = ask(d, broker.port, {"prompt": "Who won yesterday's football match?"})
    assert final["route"] == {"backend": "cloud", "reasons": ["semantic:fresh-facts"]}
    final = ask(d, broker.port, {"prompt": "Tell me something funny, please."})
    assert final["route"] == {"backend": "local", "reasons": ["semantic:smalltalk"]}
    final = ask(d, broker.port, {"prompt": "Who won yesterday's match?", "sensitivity": "private"})
    assert final["route"] == {"backend": "local", "reasons": ["private"]}
