"""Real parts for tests and benchmarks (bench/_harness.py builds on these): a Mosquitto
broker on a free port, the edged daemon as a subprocess, the loopback test cloud, and an MQTT
v5 client that collects replies and stamps each message's arrival."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import getpass
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
MANIFEST = ROOT / "models" / "manifest.toml"
DEFAULT_MODEL_FILE = MODELS_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf"


# Where the value is kept for the processes pytest starts (pytest-xdist's workers, which
# import this module after the main process took EDGED_TEST_N_THREADS out): a name edged
# does not read.
_N_THREADS_CARRIED = "PYTEST_EDGED_N_THREADS"


def _test_n_threads() -> int:
    # taken out of the environment: edged reads every EDGED_* variable as a setting, and a
    # daemon or CLI that a test starts would refuse this one as an unknown key
    raw = os.environ.pop("EDGED_TEST_N_THREADS", None) or os.environ.get(_N_THREADS_CARRIED, "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise RuntimeError(f"EDGED_TEST_N_THREADS must be a whole number >= 1, not {raw!r}")
    os.environ[_N_THREADS_CARRIED] = str(n)
    return n


# Decode threads of the local models the tests run (the daemon's, the backends built in
# tests; not the test cloud's, see CloudServer): 1 unless EDGED_TEST_N_THREADS says
# otherwise, so that the suite can be run as a 2- or 4-core board would run it.
TEST_N_THREADS = _test_n_threads()


@functools.lru_cache(maxsize=1)
def _vocab() -> Any:
    from llama_cpp import Llama

    return Llama(model_path=str(DEFAULT_MODEL_FILE), vocab_only=True, verbose=False)


def run_example(
    script: str,
    broker_port: int,
    device_id: str,
    *args: str,
    reply_timeout_s: int = 30,
    timeout_s: int = 90,
) -> subprocess.CompletedProcess[str]:
    """``examples/<script>`` run against the daemon ``device_id`` on the broker at
    ``broker_port`` (waiting at most ``reply_timeout_s`` for a reply), its output captured."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / script),
            "--host",
            "127.0.0.1",
            "--port",
            str(broker_port),
            "--device",
            device_id,
            "--timeout-s",
            str(reply_timeout_s),
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
    )


def token_count(text: str) -> int:
    """How many tokens the default model's tokenizer makes of ``text`` (no BOS). An answer of
    n generated tokens tokenizes to about n again; the same answer sent twice, to about 2n."""
    return len(_vocab().tokenize(text.encode(), add_bos=False, special=False))


def rss_mb(pid: int) -> float:
    """A process's resident set size (VmRSS), MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cloud_env(cloud: CloudServer, **overrides: str) -> dict[str, str]:
    """Environment overrides for a daemon that uses ``cloud``: short timeouts, a breaker that
    opens after 2 failed requests and stays open 1 s; ``overrides`` win."""
    return {
        "EDGED_CLOUD__ENABLED": "true",
        "EDGED_CLOUD__BASE_URL": cloud.base_url,
        "EDGED_CLOUD__CONNECT_TIMEOUT_S": "1",
        "EDGED_CLOUD__READ_TIMEOUT_S": "10",
        "EDGED_CLOUD__BREAKER_FAILURES": "2",
        "EDGED_CLOUD__BREAKER_COOLDOWN_S": "1",
        **overrides,
    }


# Ports the tests listen on: below the kernel's ephemeral range, so that no outgoing
# connection (a client, another test process) is ever given one, and each claimed with a lock
# file held for the life of the process that took it, so that two processes (pytest-xdist
# workers, another checkout's suite) never get the same one; a port is handed out once per
# process. Binding to port 0 and closing, as this did before, let a second process be given
# the port in between, and then its test talked to the first one's broker.
_PORT_LOCKS = Path(tempfile.gettempdir()) / "edged-test-ports"
_PORT_RANGE = (20000, 32000)
_claimed: dict[int, int] = {}  # port -> the fd holding its lock
_rng = random.SystemRandom()  # not `random`: pytest-randomly seeds that alike in every worker


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port that nothing listens on and that no other test process holds."""
    low, high = _PORT_RANGE
    high = min(high, _ephemeral_low() - 1)
    _PORT_LOCKS.mkdir(parents=True, exist_ok=True)
    for _ in range(200):
        port = _rng.randint(low, high)
        if port in _claimed:
            continue
        fd = os.open(_PORT_LOCKS / str(port), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            os.close(fd)  # someone else's listener: leave it alone
            continue
        _claimed[port] = fd
        return port
    raise RuntimeError(f"no free port in {low}..{high} after 200 tries")


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(path):
        raise RuntimeError("mosquitto is not installed; run `make test`, which installs it")
    return path


class Broker:
    """A Mosquitto process on a free loopback port, with persistence in ``state_dir``.
    ``extra_conf`` (lines of mosquitto.conf) is appended to the configuration written."""

    def __init__(self, state_dir: Path, port: int | None = None, extra_conf: str = "") -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        state_dir.mkdir(parents=True, exist_ok=True)
        self.conf = state_dir / "mosquitto.conf"
        user = getpass.getuser()
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "persistence true\n"
            f"persistence_location {state_dir}/\n"
            "max_queued_messages 1000\n"
            # run as whoever runs the tests (as root this means: do not drop privileges)
            f"user {user}\n" + (extra_conf.rstrip("\n") + "\n" if extra_conf else "")
        )
        self.log_path = state_dir / "mosquitto.log"

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class Daemon:
    """``edged run`` as a subprocess, configured through environment overrides."""

    broker_port: int
    device_id: str
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    #: the config file ``edged run --config`` reads (a reload test rewrites its own copy)
    config: Path = ROOT / "configs" / "edged.toml"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
        env.update(
            {
                "EDGED_DEVICE_ID": self.device_id,
                "EDGED_MQTT__PORT": str(self.broker_port),
                "EDGED_MQTT__RECONNECT_MIN_S": "0.2",
                "EDGED_MODELS__DIR": str(MODELS_DIR),
                "EDGED_MODELS__MANIFEST": str(MANIFEST),
                "EDGED_LOCAL__N_THREADS": str(TEST_N_THREADS),
                "EDGED_LOG__LEVEL": "debug",
                # configs/edged.toml serves HTTP on a fixed port: off unless a test turns it on
                "EDGED_HTTP__ENABLED": "false",
                # each daemon its own spool and state, beside its log
                "EDGED_TELEMETRY__SPOOL_DIR": str(self.log_path.parent / f"spool-{self.device_id}"),
                "EDGED_TELEMETRY__STATE_DIR": str(self.log_path.parent / f"state-{self.device_id}"),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, wait_online: bool = True) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edged.cli",
                "run",
                "--config",
                str(self.config),
            ],
            env=self.env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        if wait_online:
            self.wait_online()

    def wait_online(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait for the retained status to say online, from this process."""
        assert self.proc is not None
        with Client(self.broker_port) as c:
            c.subscribe(f"edged/{self.device_id}/status")
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"edged exited {self.proc.returncode}:\n{self.logs()}")
                try:
                    msg = c.get(timeout_s=0.5)
                except queue.Empty:
                    continue
                body = json.loads(msg.payload)
                if body.get("state") == "online" and body.get("pid") == self.proc.pid:
                    return dict(body)
        raise RuntimeError(f"edged did not come online:\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout_s)
        self._log.close()
        return rc

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Msg:
    topic: str
    payload: bytes
    correlation_data: bytes | None
    retain: bool
    #: ``time.perf_counter()`` when paho's network thread handed it over (for timings)
    at_s: float = 0.0

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.payload))


class Client:
    """A paho MQTT v5 client (TCP_NODELAY) in its own network thread; every message lands in
    ``inbox`` stamped with its arrival time, so a benchmark can time replies as they came."""

    def __init__(self, port: int, protocol: int = paho.MQTTv5) -> None:
        self.port = port
        self.protocol = protocol
        self.inbox: queue.Queue[Msg] = queue.Queue()
        self._c = paho.Client(
            callback_api_version=paho.CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        self._c.on_message = self._on_message
        self._c.on_socket_open = lambda c, u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self._subacks: queue.Queue[int] = queue.Queue()
        self._c.on_subscribe = lambda *a: self._subacks.put(1)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        props = getattr(msg, "properties", None)
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        self.inbox.put(
            Msg(
                msg.topic,
                bytes(msg.payload),
                bytes(corr) if corr is not None else None,
                bool(msg.retain),
                now,
            )
        )

    def __enter__(self) -> Client:
        if self.protocol == paho.MQTTv5:
            self._c.connect("127.0.0.1", self.port, clean_start=True)
        else:
            self._c.connect("127.0.0.1", self.port)
        self._c.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._c.disconnect()
        self._c.loop_stop()

    def subscribe(self, *topics: str) -> None:
        self._c.subscribe([(t, 1) for t in topics])
        self._subacks.get(timeout=10)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
        wait: bool = True,
    ) -> paho.MQTTMessageInfo:
        """Publish at QoS 1; ``wait``: return only once the broker has acknowledged it."""
        props = None
        if self.protocol == paho.MQTTv5 and (response_topic or correlation_data or expiry_s):
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data:
                props.CorrelationData = correlation_data
            if expiry_s:
                props.MessageExpiryInterval = expiry_s
        if isinstance(payload, str):
            payload = payload.encode()
        info = self._c.publish(topic, payload, qos=1, properties=props)
        if wait:
            info.wait_for_publish(10)
        return info

    def get(self, timeout_s: float = 30.0) -> Msg:
        return self.inbox.get(timeout=timeout_s)

    def collect(self, request_id: str | None = None, timeout_s: float = 60.0) -> list[Msg]:
        """Messages (optionally for one id) up to and including the final reply."""
        out: list[Msg] = []
        deadline = time.monotonic() + timeout_s
        while True:
            msg = self.get(timeout_s=max(0.01, deadline - time.monotonic()))
            body = msg.json()
            if request_id is not None and body.get("id") != request_id:
                continue
            out.append(msg)
            if body.get("type") in ("result", "error"):
                return out


# --- the "cloud": llama.cpp's OpenAI-compatible server behind a recording TCP proxy ----------


class DeviceStub:
    """A test client standing in for the devices behind device tools: subscribed to
    ``home/#``, it records every message in ``seen`` and hands each to :meth:`answer`,
    which a test overrides to publish the tool's reply."""

    def __init__(self, port: int) -> None:
        self.client = Client(port)
        self.seen: list[Msg] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DeviceStub:
        self.client.__enter__()
        self.client.subscribe("home/#")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.__exit__(*exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.client.get(timeout_s=0.05)
            except queue.Empty:
                continue
            self.seen.append(msg)
            self.answer(msg, msg.topic.split("/"))

    def answer(self, msg: Msg, levels: list[str]) -> None:
        """Reply to ``msg`` (its topic split into ``levels``); by default, nothing."""

    def topics(self) -> list[str]:
        return [m.topic for m in self.seen]


class TcpRecorder:
    """A loopback TCP proxy (client -> ``port`` -> ``upstream_port``) that keeps every byte
    clients sent, so a test can prove what did or did not reach the server.

    It runs its own asyncio loop in a thread, so sync and async tests can both use it.
    ``stop()`` closes the listener and every connection (clients then get "connection
    refused"); ``sever()`` cuts the live connections but keeps listening. When the upstream
    refuses, the client's connection is closed at once and ``upstream_failures`` counts it.

    ``fail_with(status, headers)`` makes it answer every new HTTP request itself with that
    status (a JSON error body, ``Connection: close``) instead of passing it on, as a real
    server does when it is overloaded (429, 503) or broken (500); ``heal()`` passes requests
    on again. ``faulted`` counts the requests it answered so.
    """

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._received = bytearray()
        self.accepted = 0
        self.upstream_failures = 0
        self.faulted = 0
        self._fault: tuple[int, dict[str, str]] | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    # --- control, from the test's thread ---

    def start(self) -> None:
        ready: queue.Queue[BaseException | None] = queue.Queue()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", self.port)
                )
            except BaseException as e:
                ready.put(e)
                loop.close()
                return
            ready.put(None)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"tcp-recorder-{self.port}", daemon=True)
        self._thread.start()
        err = ready.get(timeout=10)
        if err is not None:
            raise RuntimeError(f"proxy could not listen on {self.port}: {err!r}")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._server = self._thread = None

    def sever(self) -> None:
        """Cut every live connection (a network failure mid-stream); keep listening."""
        self._call(self._close_live())

    def fail_with(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer each new request with HTTP ``status`` (and ``headers``) from now on. Live
        connections are cut first, so a kept-alive one cannot slip past."""
        self._fault = (status, dict(headers or {}))
        self.sever()

    def heal(self) -> None:
        """Pass requests on to the server again."""
        self._fault = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def live(self) -> int:
        """Connections open right now."""
        return len(self._live)

    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def saw(self, text: str) -> bool:
        """Whether ``text`` reached the proxy from a client, as is or JSON-escaped."""
        data = self.received()
        forms = {text.encode(), json.dumps(text)[1:-1].encode()}
        return any(f in data for f in forms)

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --- inside the proxy's loop ---

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._close_live()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _close_live(self) -> None:
        for w in list(self._live):
            w.transport.abort()  # RST, like a dead link or a killed server
        self._live.clear()

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
    ) -> None:
        """Read one HTTP request (recorded like passed-on bytes) and answer it ourselves."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            writer.transport.abort()
            return
        with self._lock:
            self._received += head + body
        self.faulted += 1
        reason = {
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }.get(status, "Error")
        payload = json.dumps(
            {"error": {"message": f"injected {status}", "type": "server_error", "code": status}}
        ).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n{extra}\r\n".encode()
            + payload
        )
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._fault is not None:
            await self._answer(reader, writer, *self._fault)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            self.upstream_failures += 1
            writer.transport.abort()
            return
        self._live.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            try:
                while data := await src.read(65536):
                    if record:
                        with self._lock:
                            self._received += data
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        finally:
            self._live.discard(writer)
            self._live.discard(up_writer)
            writer.close()
            up_writer.close()


class CloudServer:
    """``python -m llama_cpp.server`` with the default model on a free loopback port, one
    thread, behind a :class:`TcpRecorder`. ``base_url`` points at the
    proxy, so everything a client sends is recorded (``cloud_saw``). ``stop()`` takes down
    both (clients get "connection refused"); ``start()`` brings them back on the same ports."""

    def __init__(self, model: Path, log_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.model = model
        #: More server options (``--chat_format chatml-function-calling``).
        self.extra_args = tuple(extra_args)
        self.log_path = log_dir / "llama-server.log"
        self.server_port = free_port()
        self.proxy = TcpRecorder(self.server_port)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/v1"

    @property
    def direct_url(self) -> str:
        """The server itself, bypassing the proxy (for overhead measurements)."""
        return f"http://127.0.0.1:{self.server_port}/v1"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.proxy.running

    def start(self, timeout_s: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start_server(timeout_s)
        if not self.proxy.running:
            self.proxy.start()

    def _start_server(self, timeout_s: float) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGED_", "OPENAI_"))}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(self.model),
                "--model_alias",
                "default",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.server_port),
                # one thread whatever EDGED_TEST_N_THREADS says: the server stands in for
                # a remote machine, and more threads here only take cores from the daemon's
                # model (llama.cpp's threads spin; oversubscribed, a 2-thread server took
                # 28 s for its first answer on a busy 2-core machine)
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                "--n_ctx",
                "2048",
                # queue concurrent requests like a real server instead of cutting the
                # running one short
                "--interrupt_requests",
                "False",
                "--verbose",
                "False",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        url = f"http://127.0.0.1:{self.server_port}/v1/models"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.logs()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer {url}: {self.logs()[-4000:]}")

    def stop(self) -> None:
        """Proxy and server down: nothing listens on ``base_url`` any more."""
        self.proxy.stop()
        self.stop_upstream()

    def stop_upstream(self) -> None:
        """Only the server down: the proxy still accepts, then drops each connection."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the server: connections are still accepted (by the kernel), nothing is
        answered. ``thaw()`` lets it go on."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def cloud_saw(self, text: str) -> bool:
        """Whether ``text`` ever reached the cloud (through ``base_url``)."""
        return self.proxy.saw(text)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
