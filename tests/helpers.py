"""Real parts for tests: a Mosquitto broker on a free port, the edged daemon as a
subprocess, and an MQTT v5 client that collects replies."""

from __future__ import annotations

import getpass
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(path):
        raise RuntimeError("mosquitto is not installed; run `make test`, which installs it")
    return path


class Broker:
    """A Mosquitto process on a free loopback port, with persistence in ``state_dir``."""

    def __init__(self, state_dir: Path, port: int | None = None) -> None:
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
            f"user {user}\n"
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

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
        env.update(
            {
                "EDGED_DEVICE_ID": self.device_id,
                "EDGED_MQTT__PORT": str(self.broker_port),
                "EDGED_MQTT__RECONNECT_MIN_S": "0.2",
                "EDGED_MODELS__DIR": str(MODELS_DIR),
                "EDGED_MODELS__MANIFEST": str(MANIFEST),
                "EDGED_LOCAL__N_THREADS": "1",
                "EDGED_LOG__LEVEL": "debug",
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
                str(ROOT / "configs" / "edged.toml"),
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

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.payload))


class Client:
    """A paho MQTT v5 client for tests, in its own network thread."""

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
        self._subacks: queue.Queue[int] = queue.Queue()
        self._c.on_subscribe = lambda *a: self._subacks.put(1)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        self.inbox.put(
            Msg(
                msg.topic,
                bytes(msg.payload),
                bytes(corr) if corr is not None else None,
                bool(msg.retain),
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

    def subscribe(self, topic: str) -> None:
        self._c.subscribe(topic, qos=1)
        self._subacks.get(timeout=10)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
    ) -> None:
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
        self._c.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)

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
