"""The daemon under a systemd-like supervisor: notifications on a real notify socket."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Daemon

pytestmark = pytest.mark.integration


def test_ready_status_watchdog_and_stopping(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    d = make_daemon(start=False, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000")
    d.start(wait_online=False)
    assert d.proc is not None
    got: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("READY=1" in m for m in got):
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    assert any("READY=1" in m for m in got), (got, d.logs())
    ready = next(m for m in got if "READY=1" in m)
    assert "STATUS=serving smollm2-135m-instruct on edged/" in ready
    assert any(m.startswith("STATUS=loading") or "STATUS=starting backend" in m for m in got)
    assert "mqtt_connected" in d.logs()  # READY came after the broker connection
    # the watchdog pings at half the interval while healthy
    pings = 0
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            pings += sock.recv(4096).decode().count("WATCHDOG=1")
    assert pings >= 2
    d.proc.send_signal(signal.SIGTERM)
    stopping = False
    end = time.monotonic() + 10
    while time.monotonic() < end and not stopping:
        try:
            stopping = "STOPPING=1" in sock.recv(4096).decode()
        except TimeoutError:
            continue
    assert stopping
    assert d.proc.wait(30) == 0
    sock.close()
