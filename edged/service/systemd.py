"""systemd integration without libsystemd: sd_notify(3) and the service watchdog.

The notify protocol is one datagram of newline-separated ``VAR=VALUE`` assignments sent to
the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``: a file system path, or an abstract
socket written with a leading ``@`` (sent with a leading NUL byte). systemd attaches our
credentials itself (``SO_PASSCRED`` on its end), so nothing else is needed.

Without ``$NOTIFY_SOCKET`` edged is not running under systemd (or not as ``Type=notify``)
and every :class:`Notifier` call is a no-op. A failing send is logged once and never
raises: the service must not die because its supervisor's socket went away.

The watchdog (``WatchdogSec=``): systemd exports ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``);
:func:`watchdog_interval_s` turns that into a ping period of half the timeout, and
:func:`watchdog_loop` pings only while the caller's liveness check passes, so a wedged
daemon is aborted and restarted by systemd instead of looking alive. The same loop measures
event-loop lag (how late its own timer fires) and exposes it in a :class:`LoopLag`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("edged.systemd")

#: When ``watchdog_loop`` has no watchdog interval, it still runs the check this often.
DEFAULT_CHECK_S = 10.0
#: How often ``watchdog_loop`` wakes to measure event-loop lag (at most).
DEFAULT_TICK_S = 1.0
#: STATUS= text longer than this is cut (systemd shows one line; keep datagrams small).
MAX_STATUS_CHARS = 400


def _one_line(text: str) -> str:
    """A value that cannot break the newline-separated protocol."""
    flat = " ".join(text.split("\n"))
    return flat if len(flat) <= MAX_STATUS_CHARS else flat[: MAX_STATUS_CHARS - 3] + "..."


def notify_address(value: str) -> str | bytes:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value; ValueError if unsupported.

    ``@name`` is an abstract socket (Linux): NUL followed by ``name``. Anything else must be
    an absolute path. (systemd >= 253 can also hand out ``vsock:`` addresses, for guests of a
    VM; edged never runs there.)
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported NOTIFY_SOCKET address {value!r}")


def monotonic_usec() -> int:
    """``CLOCK_MONOTONIC`` in microseconds, as systemd wants it in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; every method returns whether it sent.

    ``socket_path``: the address to use instead of ``$NOTIFY_SOCKET`` (tests). ``environ``:
    where to read ``$NOTIFY_SOCKET`` (default ``os.environ``). ``unset_environment``: remove
    ``NOTIFY_SOCKET`` from ``os.environ`` so that child processes do not inherit it.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        unset_environment: bool = False,
    ) -> None:
        env = os.environ if environ is None else environ
        self.socket_path: str | None = socket_path or env.get("NOTIFY_SOCKET") or None
        if unset_environment:
            os.environ.pop("NOTIFY_SOCKET", None)
        #: The last text given to :meth:`status` (the watchdog restores it after a problem).
        self.last_status: str | None = None
        #: Messages sent, and sends that failed.
        self.sent = 0
        self.errors = 0
        self._warned = False
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if self.socket_path is None:
            return
        try:
            self._address = notify_address(self.socket_path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the event loop: a full queue on systemd's side drops a message
            # (logged) instead of stalling edged.
            sock.setblocking(False)
            self._sock = sock
        except (OSError, ValueError) as e:
            self._failed(e)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given (we run under systemd as Type=notify)."""
        return self.socket_path is not None

    def close(self) -> None:
        """Close the socket; later calls are no-ops that return False."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.socket_path = None

    def _failed(self, err: BaseException) -> None:
        self.errors += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "event=sd_notify_failed socket=%r error=%r (further failures logged at debug)",
                self.socket_path,
                str(err),
            )
        else:
            log.debug("event=sd_notify_failed socket=%r error=%r", self.socket_path, str(err))

    def notify(self, *assignments: str) -> bool:
        """Send ``VAR=VALUE`` assignments in one datagram. False when not under systemd or
        when sending failed (logged once)."""
        if self.socket_path is None:
            return False
        if self._sock is None or self._address is None:
            self._failed(OSError(f"notify socket {self.socket_path!r} unusable"))
            return False
        payload = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        try:
            self._sock.sendto(payload, self._address)
        except OSError as e:
            self._failed(e)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None, *, mainpid: int | None = None) -> bool:
        """``READY=1``: start-up (or a reload) is finished; optionally STATUS and MAINPID."""
        fields = ["READY=1"]
        if status is not None:
            self.last_status = status
            fields.append(f"STATUS={_one_line(status)}")
        if mainpid is not None:
            fields.append(f"MAINPID={int(mainpid)}")
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status``."""
        self.last_status = text
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float | None = None, *, usec: int | None = None) -> bool:
        """``EXTEND_TIMEOUT_USEC``: we need this much more time for the current start,
        stop or reload; repeat before it runs out. Give ``seconds`` or ``usec``."""
        if (seconds is None) == (usec is None):
            raise ValueError("give exactly one of seconds or usec")
        value = usec if usec is not None else round((seconds or 0.0) * 1_000_000)
        if value <= 0:
            raise ValueError(f"timeout extension must be positive, got {value} us")
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(value)}")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun (send it on SIGTERM)."""
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self.notify(*fields)

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (required by ``Type=notify-reload``,
        systemd >= 253, harmless before); send :meth:`ready` when the reload is done."""
        fields = ["RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self.notify(*fields)

    def mainpid(self, pid: int) -> bool:
        """``MAINPID=pid``: the service's main process is another one."""
        return self.notify(f"MAINPID={int(pid)}")


def watchdog_interval_s(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds: how often to ping; None when no watchdog.

    None too when ``$WATCHDOG_PID`` is set and is not our pid (the variables were inherited
    from a parent that is the one being watched), or when the values are not valid.
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC", "").strip()
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("event=watchdog_env_invalid WATCHDOG_USEC=%r", raw)
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID", "").strip()
    if raw_pid:
        try:
            watched = int(raw_pid)
        except ValueError:
            log.warning("event=watchdog_env_invalid WATCHDOG_PID=%r", raw_pid)
            return None
        if watched != (os.getpid() if pid is None else pid):
            return None
    return usec / 2 / 1_000_000


@dataclass
class LoopLag:
    """Event-loop lag as measured by :func:`watchdog_loop`: how late its timer fired.

    ``window_max_s`` is the largest lag since the last liveness check (what a check should
    look at); ``max_s`` the largest since start.
    """

    last_s: float = 0.0
    window_max_s: float = 0.0
    max_s: float = 0.0
    samples: int = 0

    def record(self, lag_s: float) -> None:
        """Add one measurement."""
        lag_s = max(0.0, lag_s)
        self.last_s = lag_s
        self.window_max_s = max(self.window_max_s, lag_s)
        self.max_s = max(self.max_s, lag_s)
        self.samples += 1

    def over(self, limit_s: float) -> str | None:
        """A problem string when the lag in this window passed ``limit_s``, else None (for
        use inside a liveness check)."""
        if self.window_max_s > limit_s:
            return f"event loop lag {self.window_max_s:.2f} s > {limit_s:.2f} s"
        return None


def _run_check(check: Callable[[], str | None]) -> str | None:
    try:
        return check()
    except Exception as e:
        log.exception("event=watchdog_check_failed")
        return f"liveness check raised {type(e).__name__}: {e}"


async def watchdog_loop(
    notifier: Notifier,
    interval_s: float | None,
    check: Callable[[], str | None],
    *,
    lag: LoopLag | None = None,
    tick_s: float = DEFAULT_TICK_S,
) -> None:
    """Ping the systemd watchdog every ``interval_s`` while ``check()`` returns None.

    ``check`` is the liveness check: it returns None when edged is healthy, or a short
    description of the problem (event loop lagging, sampler dead, a backend stuck past its
    deadline). On a problem the ping is withheld, the problem is logged and sent as STATUS,
    so systemd aborts and restarts edged once ``WatchdogSec=`` passes without a ping; when a
    later check passes again, pings resume and the previous STATUS is restored.

    ``interval_s`` None (no watchdog configured): nothing is pinged, the check still runs
    every ``DEFAULT_CHECK_S`` and problems are still logged. The loop wakes at least every
    ``tick_s`` to measure event-loop lag into ``lag`` (the caller's check can read it).
    Runs until cancelled.
    """
    loop = asyncio.get_running_loop()
    lag = lag if lag is not None else LoopLag()
    period = interval_s if interval_s is not None and interval_s > 0 else DEFAULT_CHECK_S
    tick = max(0.001, min(tick_s, period))
    problem: str | None = None
    next_check = loop.time()
    while True:
        now = loop.time()
        if now >= next_check:
            found = _run_check(check)
            lag.window_max_s = 0.0
            if found is None:
                if interval_s is not None:
                    notifier.watchdog()
                if problem is not None:
                    log.info("event=watchdog_recovered was=%r", problem)
                    if notifier.last_status is not None:
                        notifier.notify(f"STATUS={_one_line(notifier.last_status)}")
            elif found != problem:
                log.error("event=watchdog_unhealthy problem=%r pinging=no", found)
                notifier.notify(f"STATUS={_one_line('unhealthy: ' + found)}")
            problem = found
            next_check += period
            if next_check <= now:  # we were stalled: no burst of catch-up checks
                next_check = now + period
        wake_at = min(now + tick, next_check)
        await asyncio.sleep(max(0.0, wake_at - now))
        lag.record(loop.time() - wake_at)


@contextlib.asynccontextmanager
async def extending_timeout(
    notifier: Notifier, step_s: float = 30.0, *, limit_s: float | None = None
) -> AsyncIterator[None]:
    """While the body runs (loading a model, draining requests), keep asking systemd for
    ``step_s`` more seconds, every ``step_s / 3``: a slow start or stop is not killed at
    ``TimeoutStartSec=`` / ``TimeoutStopSec=``.

    The extensions come from the event loop, not from the work itself, so a load that hangs
    in a thread would be extended forever: ``limit_s`` stops extending after that long, and
    the last extension (``step_s``) is then the time left.
    """

    async def keep() -> None:
        loop = asyncio.get_running_loop()
        until = None if limit_s is None else loop.time() + limit_s
        while until is None or loop.time() < until:
            notifier.extend_timeout(step_s)
            await asyncio.sleep(step_s / 3)

    task = asyncio.ensure_future(keep()) if notifier.enabled else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
