"""sd_notify over a real AF_UNIX datagram socket, the watchdog interval, the watchdog loop."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.service import systemd
from edged.service.systemd import LoopLag, Notifier, watchdog_interval_s, watchdog_loop


class Receiver:
    """A bound datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str | bytes, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.env_value = env_value

    def messages(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return out

    def one(self) -> str:
        msgs = self.messages()
        assert len(msgs) == 1, msgs
        return msgs[0]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = tmp_path / "notify.sock"
    r = Receiver(str(path), str(path))
    yield r
    r.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"edged-test-{uuid.uuid4().hex}"
    r = Receiver(b"\0" + name.encode(), "@" + name)
    yield r
    r.close()


def test_each_message_arrives_exactly(receiver: Receiver) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": receiver.env_value})
    assert n.enabled
    assert n.ready()
    assert receiver.one() == "READY=1"
    assert n.status("serving: model smollm2 loaded")
    assert receiver.one() == "STATUS=serving: model smollm2 loaded"
    assert n.watchdog()
    assert receiver.one() == "WATCHDOG=1"
    assert n.extend_timeout(usec=45_000_000)
    assert receiver.one() == "EXTEND_TIMEOUT_USEC=45000000"
    assert n.extend_timeout(2.5)
    assert receiver.one() == "EXTEND_TIMEOUT_USEC=2500000"
    assert n.stopping()
    assert receiver.one() == "STOPPING=1"
    assert n.mainpid(4242)
    assert receiver.one() == "MAINPID=4242"
    assert n.sent == 7
    assert n.errors == 0


def test_ready_with_status_and_mainpid_is_one_datagram(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    n.ready("ready: 1 model", mainpid=99)
    assert receiver.one() == "READY=1\nSTATUS=ready: 1 model\nMAINPID=99"
    assert n.last_status == "ready: 1 model"
    n.stopping("stopping: 2 in flight")
    assert receiver.one() == "STOPPING=1\nSTATUS=stopping: 2 in flight"


def test_reloading_carries_monotonic_usec(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading("reloading config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = receiver.one().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=", 1)[1]) <= after
    assert lines[2] == "STATUS=reloading config"


def test_status_cannot_inject_assignments(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    n.status("bad\nREADY=1")
    assert receiver.one() == "STATUS=bad READY=1"
    n.status("x" * 1000)
    msg = receiver.one()
    assert len(msg) <= len("STATUS=") + systemd.MAX_STATUS_CHARS
    assert msg.endswith("...")


def test_abstract_socket(abstract_receiver: Receiver) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": abstract_receiver.env_value})
    assert n.ready()
    assert n.watchdog()
    assert abstract_receiver.messages() == ["READY=1", "WATCHDOG=1"]


def test_no_socket_is_a_silent_no_op(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.systemd")
    n = Notifier(environ={})
    assert not n.enabled
    assert not n.ready("x")
    assert not n.status("x")
    assert not n.watchdog()
    assert not n.extend_timeout(1.0)
    assert not n.stopping()
    assert not n.reloading()
    assert n.sent == 0
    assert n.errors == 0
    assert caplog.records == []


def test_default_reads_os_environ(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.env_value)
    n = Notifier(unset_environment=True)
    assert "NOTIFY_SOCKET" not in os.environ  # children will not inherit it
    n.ready()
    assert receiver.one() == "READY=1"


@pytest.mark.parametrize("bad", ["/nonexistent/dir/notify.sock", "relative/notify.sock", "@"])
def test_bad_socket_never_raises_and_logs_once(bad: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edged.systemd")
    n = Notifier(environ={"NOTIFY_SOCKET": bad})
    assert n.enabled
    results = [n.ready(), n.status("x"), n.watchdog(), n.stopping(), n.watchdog()]
    assert results == [False] * 5
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "sd_notify_failed" in warnings[0].getMessage()
    assert n.errors >= 5


def test_socket_that_goes_away_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edged.systemd")
    path = tmp_path / "gone.sock"
    r = Receiver(str(path), str(path))
    n = Notifier(str(path))
    assert n.watchdog()
    r.close()
    path.unlink()
    assert not n.watchdog()
    assert not n.watchdog()
    assert len(caplog.records) == 1


def test_extend_timeout_needs_exactly_one_positive_value(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    with pytest.raises(ValueError):
        n.extend_timeout()
    with pytest.raises(ValueError):
        n.extend_timeout(1.0, usec=5)
    with pytest.raises(ValueError):
        n.extend_timeout(0)
    assert receiver.messages() == []


def test_closed_notifier_is_a_no_op(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    n.close()
    assert not n.ready()
    assert receiver.messages() == []


# --- watchdog interval ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env) == expected


def test_watchdog_interval_explicit_pid() -> None:
    env = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1234"}
    assert watchdog_interval_s(env, pid=1234) == 2.0
    assert watchdog_interval_s(env, pid=1235) is None


def test_watchdog_interval_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 5.0


# --- watchdog loop ----------------------------------------------------------------------


def _run_for(seconds: float, coro_fn: object) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(coro_fn())  # type: ignore[operator]
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_watchdog_loop_pings_while_healthy(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    lag = LoopLag()
    _run_for(0.5, lambda: watchdog_loop(n, 0.05, lambda: None, lag=lag, tick_s=0.01))
    msgs = receiver.messages()
    assert set(msgs) == {"WATCHDOG=1"}
    assert 3 <= len(msgs) <= 12, len(msgs)  # every 0.05 s, never a catch-up burst
    assert lag.samples >= 5


def test_watchdog_loop_withholds_pings_on_a_problem_and_resumes(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edged.systemd")
    n = Notifier(receiver.env_value)
    n.status("serving")
    receiver.messages()
    state: dict[str, str | None] = {"problem": None}
    seen: list[list[str]] = []

    async def scenario() -> None:
        task = asyncio.ensure_future(watchdog_loop(n, 0.05, lambda: state["problem"], tick_s=0.01))
        await asyncio.sleep(0.3)
        seen.append(receiver.messages())
        state["problem"] = "sampler dead for 12 s"
        await asyncio.sleep(0.4)
        seen.append(receiver.messages())
        state["problem"] = None
        await asyncio.sleep(0.3)
        seen.append(receiver.messages())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    healthy, sick, recovered = seen
    assert healthy and set(healthy) == {"WATCHDOG=1"}
    # at most one ping that raced the flip, then the problem once, then no more pings
    problem_at = sick.index("STATUS=unhealthy: sampler dead for 12 s")
    assert set(sick[:problem_at]) <= {"WATCHDOG=1"} and problem_at <= 1
    assert sick[problem_at + 1 :] == []
    assert recovered[0] == "WATCHDOG=1"
    assert "STATUS=serving" in recovered
    assert recovered.count("WATCHDOG=1") >= 2
    logged = [r.getMessage() for r in caplog.records]
    assert sum("watchdog_unhealthy" in m for m in logged) == 1
    assert any("watchdog_recovered" in m for m in logged)


def test_watchdog_loop_check_that_raises_is_a_problem(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)

    def check() -> str | None:
        raise RuntimeError("boom")

    _run_for(0.2, lambda: watchdog_loop(n, 0.05, check, tick_s=0.01))
    msgs = receiver.messages()
    assert "WATCHDOG=1" not in msgs
    assert msgs == ["STATUS=unhealthy: liveness check raised RuntimeError: boom"]


def test_watchdog_loop_without_interval_never_pings(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    calls: list[int] = []

    def check() -> str | None:
        calls.append(1)
        return None

    _run_for(0.2, lambda: watchdog_loop(n, None, check, tick_s=0.01))
    assert receiver.messages() == []
    assert calls  # the check still ran (once at start)


def test_watchdog_loop_measures_event_loop_lag(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    lag = LoopLag()
    verdicts: list[str | None] = []

    def check() -> str | None:
        verdict = lag.over(0.1)
        verdicts.append(verdict)
        return verdict

    async def scenario() -> None:
        task = asyncio.ensure_future(watchdog_loop(n, 0.05, check, lag=lag, tick_s=0.01))
        await asyncio.sleep(0.1)
        # block the event loop for 0.3 s: the watchdog's timer fires late
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)
        await asyncio.sleep(0.4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert lag.max_s >= 0.25
    assert any(v is not None and v.startswith("event loop lag") for v in verdicts)
    # the spike is one window's problem: the next window is healthy again
    assert verdicts[-1] is None
    msgs = receiver.messages()
    assert any(m.startswith("STATUS=unhealthy: event loop lag") for m in msgs)
    assert msgs[-1] == "WATCHDOG=1"


def test_extending_timeout_repeats_until_done(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)

    async def scenario() -> None:
        async with systemd.extending_timeout(n, step_s=0.09):
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.1)

    asyncio.run(scenario())
    msgs = receiver.messages()
    assert set(msgs) == {"EXTEND_TIMEOUT_USEC=90000"}
    assert 3 <= len(msgs) <= 10, msgs


def test_extending_timeout_stops_at_its_limit(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)

    async def scenario() -> None:
        async with systemd.extending_timeout(n, step_s=0.06, limit_s=0.05):
            await asyncio.sleep(0.3)

    asyncio.run(scenario())
    msgs = receiver.messages()
    assert set(msgs) == {"EXTEND_TIMEOUT_USEC=60000"}
    assert 1 <= len(msgs) <= 3, msgs  # every 0.02 s, but only for 0.05 s


def test_extending_timeout_without_systemd_does_nothing() -> None:
    async def scenario() -> None:
        async with systemd.extending_timeout(Notifier(environ={}), step_s=0.01):
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
