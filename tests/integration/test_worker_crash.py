"""The local model in a worker process: llama.cpp dying does not take the daemon down."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Broker, Client, CloudServer, Daemon

pytestmark = pytest.mark.integration


def worker_pid(daemon_pid: int) -> int:
    """The model worker: the daemon's child running multiprocessing's spawn_main."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == daemon_pid and "spawn_main" in cmd and "resource_tracker" not in cmd:
            return int(entry.name)
    raise AssertionError("no model worker process found")


def ask(c: Client, d: Daemon, body: dict[str, object]) -> list[dict[str, object]]:
    rid = str(body.setdefault("id", uuid.uuid4().hex[:8]))
    c.publish(f"edged/{d.device_id}/request", json.dumps(body), response_topic="reply/w")
    return [m.json() for m in c.collect(rid, timeout_s=60)]


def test_worker_killed_mid_answer_then_restarted(make_daemon: Callable[..., Daemon],
                                                 broker: Broker) -> None:  # fmt: skip
    d = make_daemon(EDGED_LOCAL__ISOLATION="process")
    assert d.proc is not None
    with Client(broker.port) as c:
        c.subscribe("reply/w")
        rid = "crash-1"
        c.publish(f"edged/{d.device_id}/request",
                  json.dumps({"id": rid, "prompt": "Write a long story about a dragon.",
                              "max_tokens": 400}), response_topic="reply/w")  # fmt: skip
        assert c.get(timeout_s=30).json()["type"] == "chunk"
        os.kill(worker_pid(d.proc.pid), signal.SIGKILL)  # llama.cpp "aborts"
        final = [m.json() for m in c.collect(rid, timeout_s=30)][-1]
        # text had been sent: no fallback (it would repeat), a clean error instead
        assert final["type"] == "error" and final["code"] == "unavailable"
        assert "worker died" in str(final["message"])
        assert d.proc.poll() is None  # the daemon lives
        # the worker comes back (with back-off) and serves again
        deadline = time.monotonic() + 60
        while True:
            final = ask(c, d, {"prompt": "Say hi.", "max_tokens": 4})[-1]
            if final["type"] == "result":
                break
            assert final["code"] == "unavailable", final
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.5)
    assert "event=worker_died" in d.logs() and "event=worker_restarted" in d.logs()


def test_while_the_worker_restarts_requests_go_to_the_cloud_but_private_ones_do_not(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud_server: CloudServer
) -> None:
    d = make_daemon(EDGED_LOCAL__ISOLATION="process", EDGED_CLOUD__ENABLED="true",
                    EDGED_CLOUD__BASE_URL=cloud_server.base_url)  # fmt: skip
    assert d.proc is not None
    with Client(broker.port) as c:
        c.subscribe("reply/w")
        os.kill(worker_pid(d.proc.pid), signal.SIGKILL)
        time.sleep(0.1)  # the death is noticed at once (the pipe closes)
        final = ask(c, d, {"prompt": "Say hi.", "max_tokens": 4})[-1]
        assert final["type"] == "result"
        assert final["route"]["backend"] == "cloud"  # type: ignore[index]
        assert {"local_down", "local_failed"} & set(final["route"]["reasons"])  # type: ignore[index]
        secret = f"pangolin-{uuid.uuid4().hex[:6]}"
        private = ask(c, d, {"prompt": f"Say {secret}.", "max_tokens": 4,
                             "sensitivity": "private"})  # fmt: skip
        assert private[-1]["type"] in ("error", "result")
        if private[-1]["type"] == "result":  # the worker was already back
            assert private[-1]["route"]["backend"] == "local"  # type: ignore[index]
        else:
            assert private[-1]["code"] == "unavailable"
    assert not cloud_server.cloud_saw(secret)  # a private request never reaches the cloud
