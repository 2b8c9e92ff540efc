"""The loss window when Mosquitto is SIGKILLed with requests queued for edged, per persistence
setting, and what saving more often costs.

Mosquitto writes its whole in-memory state to ``mosquitto.db`` every ``autosave_interval``
seconds, or with ``autosave_on_changes true`` once that many changes piled up; a kill loses
what changed since the last save. Settings: ``interval:S`` or ``changes:N``. Loss run, one per
setting, all at once (own broker and daemon, fake backend): edged makes its persistent session
and stops; the broker restarts cleanly; ``--n`` QoS 1 requests are queued at ``--rate``/s; the
broker is SIGKILLed after the last PUBACK (or at ``--kill-at`` s), restarted, edged started, and
final replies counted. Figures: accepted, answered, LOST, duplicated, saves, last save to kill,
accepted-but-not-in-the-file (should equal LOST). Cost, one setting at a time: accepted QoS 1
publishes/s to a queued session ("pipelined", paho's window of 20, and "one at a time"),
ratio to the first setting; and saves per streamed answer while edged streams.

    .venv/bin/python bench/broker_loss.py [--n 750] [--rate 20] [--kill-at S]
        [--settings interval:1800,interval:30,changes:100,changes:1] [--throughput-n 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho

from bench import _harness as h

DEFAULT_SETTINGS = "interval:1800,interval:30,changes:100,changes:1"
# room for every queued request at once: a burst of queued requests gets results, not `busy`
DAEMON_ENV = {"EDGED_LOCAL__BACKEND": "fake", "EDGED_INGRESS__QUEUE_LIMIT": "1000"}
SAVE_LINE = "Saving in-memory database"


def setting_conf(spec: str) -> str:
    kind, _, value = spec.strip().partition(":")
    if kind not in ("interval", "changes") or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{spec!r}: want interval:SECONDS or changes:COUNT")
    on_changes = "autosave_on_changes true\n" if kind == "changes" else ""
    return f"{on_changes}autosave_interval {int(value)}\n"


class Publisher(h.Client):
    """Publishes requests at QoS 1 and records when each PUBACK arrived (wall clock, in paho's
    network thread). It never reconnects: after a kill, nothing unacknowledged is resent."""

    def __init__(self, port: int, device_id: str, reply_topic: str) -> None:
        super().__init__(port)
        self.topic, self.reply_topic = f"edged/{device_id}/request", reply_topic
        self.lock = threading.Condition()
        self.rid_by_mid: dict[int, str] = {}  # fewer than 65,536 publishes: mids do not wrap
        self.acks: dict[int, tuple[float, bool]] = {}  # mid -> (time.time(), refused)
        self._c.on_publish = self._on_publish
        self._c.max_inflight_messages_set(20)  # paho's default window, stated
        self._c.max_queued_messages_set(0)  # unbounded: the window throttles, not publish()
        self._c.reconnect_delay_set(min_delay=3600, max_delay=3600)
        connected = threading.Event()
        self._c.on_connect = lambda *a: connected.set()
        self.__enter__()
        if not connected.wait(10):
            raise RuntimeError("publisher: no CONNACK")

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        with self.lock:  # the PUBACK may come before send() registered its mid
            self.acks[mid] = (time.time(), bool(getattr(reason, "is_failure", False)))
            self.lock.notify_all()

    def send(self, rid: str) -> paho.MQTTMessageInfo:
        payload = json.dumps({"id": rid, "prompt": f"echo {rid}", "stream": False})
        info = self.publish(self.topic, payload, response_topic=self.reply_topic, wait=False)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")
        with self.lock:
            self.rid_by_mid[info.mid] = rid
        return info

    def wait_acked(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while len(self.acks) < len(self.rid_by_mid):
                if (left := deadline - time.monotonic()) <= 0:
                    raise RuntimeError("publishes not acknowledged")
                self.lock.wait(left)

    def accepted(self) -> dict[str, float]:
        """Id -> time.time() of its PUBACK, for the publishes the broker accepted."""
        with self.lock:
            return {
                self.rid_by_mid[m]: t
                for m, (t, refused) in self.acks.items()
                if not refused and m in self.rid_by_mid
            }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.__exit__()


def saves_since(broker: h.Broker, offset: int) -> int:
    with open(broker.log_path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").count(SAVE_LINE)


def log_size(broker: h.Broker) -> int:
    return broker.log_path.stat().st_size if broker.log_path.exists() else 0


def rig(root: Path, spec: str) -> tuple[h.Broker, h.Daemon]:
    broker = h.Broker(root / "broker", extra_conf=setting_conf(spec))
    broker.start()
    daemon = h.Daemon(
        broker.port, f"bl{uuid.uuid4().hex[:10]}", root / "edged.log", extra_env=DAEMON_ENV
    )
    return broker, daemon


def make_session(daemon: h.Daemon) -> None:
    """edged connects once (its persistent session and subscription), then stops."""
    daemon.start()
    if daemon.stop() != 0:
        raise RuntimeError(f"edged did not stop cleanly:\n{daemon.logs()[-2000:]}")


def loss_run(spec: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    broker, daemon = rig(root / f"loss-{spec.replace(':', '-')}", spec)
    reply = f"reply/bl-{uuid.uuid4().hex[:6]}"
    pub: Publisher | None = None
    try:
        make_session(daemon)
        broker.stop(signal.SIGTERM)  # saves the session, as on a broker up a while
        offset = log_size(broker)
        broker.start()
        started_wall = time.time()
        pub = Publisher(broker.port, daemon.device_id, reply)
        t0 = time.monotonic()
        for i in range(args.n):
            slot = t0 + i / args.rate
            if args.kill_at is not None and slot >= t0 + args.kill_at:
                break
            time.sleep(max(0.0, slot - time.monotonic()))
            pub.send(f"{spec}-{i:05d}")
        if args.kill_at is None:
            pub.wait_acked(timeout_s=30)
        else:
            time.sleep(max(0.0, t0 + args.kill_at - time.monotonic()))
        kill_wall = time.time()
        broker.stop(signal.SIGKILL)
        # the file the restart loads: the last save that completed
        db = broker.state_dir / "mosquitto.db"
        mtime = db.stat().st_mtime if db.exists() else 0.0
        on_disk = db.read_bytes() if db.exists() else b""
        accepted = {rid: t for rid, t in pub.accepted().items() if t <= kill_wall}
        sent = len(pub.rid_by_mid)
        pub.close()
        pub = None
        saves = saves_since(broker, offset)
        broker.start()  # same port, same persistence directory
        finals: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        with h.Client(broker.port) as c:
            c.subscribe(reply)
            daemon.start()

            def final(wait_s: float) -> None:
                body = c.get(timeout_s=wait_s).json()
                if body.get("type") in ("result", "error"):
                    finals[str(body.get("id"))] += 1
                    if body["type"] == "error":
                        errors[str(body.get("code"))] += 1

            with contextlib.suppress(queue.Empty):  # until none came for --quiet-s
                while not set(accepted) <= set(finals):
                    final(args.quiet_s)
            with contextlib.suppress(queue.Empty):  # late duplicates
                while True:
                    final(0.5)
    finally:
        if pub is not None:
            pub.close()
        h.stop_daemon(daemon)
        broker.stop()
    answered = sum(1 for rid in accepted if finals[rid])
    last_save = mtime if mtime > started_wall else started_wall
    return {
        "setting": spec,
        "published": sent,
        "accepted": len(accepted),
        "answered": answered,
        "lost": len(accepted) - answered,
        "duplicated": sum(1 for n in finals.values() if n > 1),
        "answered_not_accepted": sum(1 for rid in finals if rid not in accepted),
        "errors": dict(errors),
        "saves": saves,
        "saved_since_start": mtime > started_wall,
        "save_to_kill_s": round(kill_wall - last_save, 3),
        "accepted_not_in_file": sum(
            1 for rid in accepted if f'"id": "{rid}"'.encode() not in on_disk
        ),
    }


def throughput_run(spec: str, mode: str, n: int, root: Path) -> dict[str, Any]:
    broker, daemon = rig(root, spec)
    pub: Publisher | None = None
    try:
        make_session(daemon)
        offset = log_size(broker)
        pub = Publisher(broker.port, daemon.device_id, f"reply/bl-{uuid.uuid4().hex[:6]}")
        t0 = time.perf_counter()
        for i in range(n):
            info = pub.send(f"t{i:05d}")
            if mode == "one-at-a-time":
                info.wait_for_publish(30)
        pub.wait_acked(timeout_s=120)
        per_s = len(pub.accepted()) / (time.perf_counter() - t0)
        db = broker.state_dir / "mosquitto.db"
        saves = saves_since(broker, offset)
    finally:
        if pub is not None:
            pub.close()
        broker.stop()
    return {
        "per_s": round(per_s, 1),
        "saves": saves,
        "db_kb": round(db.stat().st_size / 1024, 1) if db.exists() else None,
    }


def streaming_run(spec: str, requests: int, chunks: int, root: Path) -> dict[str, Any]:
    """edged streaming to a QoS 1 subscriber: every QoS 1 delivery is a change, so on-change
    autosave saves over and over while edged answers."""
    broker, daemon = rig(root / f"stream-{spec.replace(':', '-')}", spec)
    prompt = json.dumps([f"w{k} " for k in range(chunks)])  # the fake backend: one chunk each
    try:
        daemon.start()
        with h.Client(broker.port) as c:
            c.subscribe("reply/stream")
            h.ask(c, daemon.device_id, {"prompt": prompt}, "reply/stream", 30)  # warm-up
            offset = log_size(broker)
            ms = []
            for _ in range(requests):
                r = h.ask(c, daemon.device_id, {"prompt": prompt}, "reply/stream", 30)
                if r["final"].get("type") != "result":
                    raise RuntimeError(f"streaming run: {r['final']}")
                ms.append((time.perf_counter() - r["t0"]) * 1000)
            saves = saves_since(broker, offset)
    finally:
        h.stop_daemon(daemon)
        broker.stop()
    return {"saves_per_request": round(saves / requests, 1), "ms_per_request": h.summary(ms, 1)}


def main() -> int:
    ap = h.parser(__doc__, "broker_loss")
    ap.add_argument("--n", type=int, default=750, help="requests per loss run")
    ap.add_argument("--rate", type=float, default=20.0, help="publishes a second")
    ap.add_argument(
        "--kill-at",
        type=float,
        default=None,
        help="SIGKILL this many seconds after the first publish (default: after the last PUBACK)",
    )
    ap.add_argument(
        "--settings",
        default=DEFAULT_SETTINGS,
        help="comma-separated interval:SECONDS or changes:COUNT",
    )
    ap.add_argument("--quiet-s", type=float, default=3.0, help="stop after this long without reply")
    ap.add_argument("--throughput-n", type=int, default=1000, help="requests per throughput run")
    ap.add_argument("--throughput-rounds", type=int, default=3, help="runs per setting (median)")
    ap.add_argument("--stream-requests", type=int, default=20, help="requests per streaming run")
    ap.add_argument("--chunks", type=int, default=32, help="chunks per streamed answer")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="where the brokers keep files")
    args = ap.parse_args()
    specs = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in specs:
        setting_conf(s)
    if args.n > 1000 or args.throughput_n > 1000:
        ap.error("at most 1000 requests: the brokers queue at most 1000 (max_queued_messages)")
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="edged-bench-broker-loss-", dir=args.tmp_dir))
    try:
        fs = subprocess.run(
            ["df", "-T", str(root)], capture_output=True, text=True, check=False
        ).stdout
        version = subprocess.run(
            [h.mosquitto_binary(), "-h"], capture_output=True, text=True, check=False
        )
        f: dict[str, Any] = {
            "mosquitto": (version.stdout or version.stderr).split("\n")[0],
            "filesystem": fs.split("\n")[1].split()[1] if fs else None,
        }
        with ThreadPoolExecutor(max_workers=len(specs)) as ex:
            f["loss"] = list(ex.map(lambda s: loss_run(s, args, root), specs))
        for r in f["loss"]:
            print(f"{r['setting']:>14}: accepted {r['accepted']}, LOST {r['lost']}")
        f["throughput"] = {}
        for mode in ("pipelined", "one-at-a-time"):  # settings interleaved in each round
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in specs}
            for k in range(args.throughput_rounds):
                for s in specs:
                    sub = root / f"tput-{k}-{mode}-{s.replace(':', '-')}"
                    runs[s].append(throughput_run(s, mode, args.throughput_n, sub))
            base = None
            for s in specs:
                med = sorted(runs[s], key=lambda r: float(r["per_s"]))[len(runs[s]) // 2]
                base = base or med["per_s"]
                f["throughput"][f"{s} {mode}"] = {
                    **med,
                    "ratio": round(med["per_s"] / base, 3),
                    "per_s_all": [r["per_s"] for r in runs[s]],
                }
        f["streaming"] = {
            s: streaming_run(s, args.stream_requests, args.chunks, root) for s in specs
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    h.write(args, f, started=started)
    bad = any(r["duplicated"] or r["answered_not_accepted"] for r in f["loss"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
