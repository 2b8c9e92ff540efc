"""The loss window when Mosquitto is killed (SIGKILL) with requests queued for edged, per
persistence setting, and what saving more often costs.

Mosquitto keeps sessions and queued messages in memory and writes the whole of it to
``persistence_location/mosquitto.db`` (a new file, fsynced, renamed over the old one) every
``autosave_interval`` seconds (1800 by default), or, with ``autosave_on_changes true``, once
that many changes have piled up (a message queued for a client, a QoS 1 delivery completed, a
subscription, a persistent session connecting), and at a clean shutdown; not at start. A kill
loses what changed since the last save. Settings are given as ``interval:S`` (save every S
seconds) or ``changes:N`` (``autosave_on_changes true`` + ``autosave_interval N``); the
default list is Mosquitto's default (interval:1800), configs/mosquitto/edged-dev.conf
(interval:30), changes:100 and changes:1.

The loss run, one per setting, all at once (each its own Mosquitto on a free loopback port,
persistence in a temporary directory, and its own daemon with the fake backend):

  1. edged starts (its persistent session and subscription), comes online and stops; the
     broker is restarted cleanly, so the session is on disk as on a broker that has been up
     a while (this restart is the "start" below);
  2. ``--n`` QoS 1 requests (``stream: false``, each its own id) are published to
     ``edged/<device>/request`` at ``--rate`` a second on a fixed schedule and queued in the
     offline session; a request is accepted when its PUBACK arrived before the kill;
  3. the broker is SIGKILLed: right after the last PUBACK by default, or ``--kill-at`` seconds
     after the first publish (publishing stops there);
  4. it is restarted on the same port and directory, edged is started again, and the final
     replies (result or error) on the reply topic are collected until every accepted request
     has one or none came for ``--quiet-s``.

Reported per setting: accepted, answered (accepted ids with a final reply), LOST (accepted,
never answered), duplicated finals, error finals, saves during the run (Mosquitto's log), the
time from the last save to the kill (the file's mtime, a few ms coarse; "(start)" when
nothing was saved since the start), and the accepted requests that were not in the file on
disk at the kill (what the window predicts is lost; it should equal LOST).

Then the cost, one setting after another with nothing else running:

  - queued: a fresh broker and edged's session (edged offline), ``--throughput-n`` QoS 1
    requests published "pipelined" (paho's window of 20 unacknowledged publishes) and "one
    at a time" (each waits for its PUBACK); accepted requests a second, median of
    ``--throughput-rounds``, ratio to the first setting, saves, and the size of the file;
  - while edged streams: edged online, ``--stream-requests`` requests one after another,
    each answered in ``--chunks`` chunks at QoS 1 to a QoS 1 subscriber: saves per request
    and the median time from publish to the final reply.

Every save writes the whole database and fsyncs it, so its cost grows with the queue and with
the disk's fsync latency: run it on the disk the broker uses (``--tmp-dir``). The last line
printed is JSON with every figure. Not run in CI. About 80 s with the defaults.

    .venv/bin/python bench/broker_loss.py [--n 750] [--rate 20] [--kill-at S]
        [--settings interval:1800,interval:30,changes:100,changes:1] [--throughput-n 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from edged.mqtt.link import props_for
from tests.helpers import Broker, Client, Daemon, mosquitto_binary

DEFAULT_SETTINGS = "interval:1800,interval:30,changes:100,changes:1"
NOTES = {
    "interval:1800": "Mosquitto's default",
    "interval:30": "edged-dev.conf",
}
# room for every queued request at once (edged's receive maximum is 4x this): a burst of
# queued requests gets results, not `busy`
DAEMON_ENV = {"EDGED_LOCAL__BACKEND": "fake", "EDGED_INGRESS__QUEUE_LIMIT": "1000"}
SAVE_LINE = "Saving in-memory database"
PAHO_WINDOW = 20  # paho's default max_inflight_messages


@dataclass(frozen=True)
class Setting:
    spec: str
    conf: str

    @property
    def label(self) -> str:
        kind, _, value = self.spec.partition(":")
        text = (
            f"autosave_interval {value}"
            if kind == "interval"
            else f"autosave_on_changes, interval {value}"
        )
        note = NOTES.get(self.spec)
        return f"{text} ({note})" if note else text

    @property
    def slug(self) -> str:
        return self.spec.replace(":", "-")


def parse_setting(spec: str) -> Setting:
    kind, _, value = spec.strip().partition(":")
    if kind not in ("interval", "changes") or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{spec!r}: want interval:SECONDS or changes:COUNT")
    if kind == "interval":
        return Setting(f"interval:{int(value)}", f"autosave_interval {int(value)}\n")
    return Setting(
        f"changes:{int(value)}", f"autosave_on_changes true\nautosave_interval {int(value)}\n"
    )


def _nodelay(c: paho.Client, u: Any, sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Publisher:
    """An MQTT v5 client that publishes requests at QoS 1 and records, in paho's network
    thread, the wall-clock time each PUBACK arrived. It never reconnects: after the broker is
    killed, nothing it had not seen acknowledged is sent again."""

    def __init__(self, port: int, device_id: str, reply_topic: str) -> None:
        self.topic = f"edged/{device_id}/request"
        self.reply_topic = reply_topic
        self.lock = threading.Condition()
        self.rid_by_mid: dict[int, str] = {}  # fewer than 65,536 publishes: mids do not wrap
        self.acks: dict[int, tuple[float, bool]] = {}  # mid -> time.time() of PUBACK, refused
        self.sent = 0
        self.c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bl-pub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.c.on_socket_open = _nodelay
        self.c.on_publish = self._on_publish
        self.c.max_inflight_messages_set(PAHO_WINDOW)
        self.c.max_queued_messages_set(0)  # unbounded: the window throttles, not publish()
        self.c.reconnect_delay_set(min_delay=3600, max_delay=3600)
        connected = threading.Event()
        self.c.on_connect = lambda *a: connected.set()
        self.c.connect("127.0.0.1", port, clean_start=True)
        self.c.loop_start()
        if not connected.wait(10):
            raise RuntimeError("publisher: no CONNACK")

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        # called with paho's message lock held: only our lock, briefly, in here; the PUBACK
        # may come before send() has registered its mid, so it is recorded by mid
        now = time.time()
        with self.lock:
            self.acks[mid] = (now, bool(getattr(reason, "is_failure", False)))
            self.lock.notify_all()

    def send(self, rid: str) -> paho.MQTTMessageInfo:
        props = props_for(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        payload = json.dumps({"id": rid, "prompt": f"echo {rid}", "stream": False})
        info = self.c.publish(self.topic, payload, qos=1, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")
        with self.lock:
            self.rid_by_mid[info.mid] = rid
            self.sent += 1
        return info

    def wait_acked(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while len(self.acks) < self.sent:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.sent - len(self.acks)} publishes not acknowledged")
                self.lock.wait(left)

    def accepted(self) -> dict[str, float]:
        """Id -> time.time() of its PUBACK, for the publishes the broker accepted."""
        with self.lock:
            return {
                self.rid_by_mid[mid]: t
                for mid, (t, refused) in self.acks.items()
                if not refused and mid in self.rid_by_mid
            }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.c.disconnect()
        self.c.loop_stop()


def saves_in_log(broker: Broker, offset: int) -> int:
    with open(broker.log_path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").count(SAVE_LINE)


def log_size(broker: Broker) -> int:
    return broker.log_path.stat().st_size if broker.log_path.exists() else 0


def db_path(broker: Broker) -> Path:
    return broker.state_dir / "mosquitto.db"


def in_file(rid: str, db: bytes) -> bool:
    """Whether the request ``rid`` (its payload as Publisher.send wrote it) is in ``db``."""
    return f'"id": "{rid}"'.encode() in db


def new_daemon(broker: Broker, root: Path, name: str) -> Daemon:
    return Daemon(
        broker_port=broker.port,
        device_id=f"bl{uuid.uuid4().hex[:10]}",
        log_path=root / f"edged-{name}.log",
        extra_env=DAEMON_ENV,
    )


def make_session(daemon: Daemon) -> None:
    """edged connects once (its persistent session and subscription), then stops."""
    daemon.start()
    if daemon.stop() != 0:
        raise RuntimeError(f"edged did not stop cleanly:\n{daemon.logs()[-2000:]}")


# --- the loss run ----------------------------------------------------------------------------


def loss_run(setting: Setting, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    root = root / f"loss-{setting.slug}"
    broker = Broker(root / "broker", extra_conf=setting.conf)
    broker.start()
    daemon = new_daemon(broker, root, "loss")
    reply_topic = f"reply/bl-{setting.slug}-{uuid.uuid4().hex[:6]}"
    pub: Publisher | None = None
    try:
        make_session(daemon)
        broker.stop(signal.SIGTERM)  # saves the session
        offset = log_size(broker)
        broker.start()
        started_wall = time.time()

        pub = Publisher(broker.port, daemon.device_id, reply_topic)
        t0 = time.monotonic()
        late_max = 0.0
        for i in range(args.n):
            slot = t0 + i / args.rate
            if args.kill_at is not None and slot >= t0 + args.kill_at:
                break
            if (wait := slot - time.monotonic()) > 0:
                time.sleep(wait)
            late_max = max(late_max, time.monotonic() - slot)
            pub.send(f"{setting.slug}-{i:05d}")
        if args.kill_at is None:
            pub.wait_acked(timeout_s=30)
        elif (wait := t0 + args.kill_at - time.monotonic()) > 0:
            time.sleep(wait)

        kill_wall = time.time()
        broker.stop(signal.SIGKILL)
        # the file the restart will load: the last save that completed (a save cut short by
        # the kill never replaced it)
        db = db_path(broker)
        mtime = db.stat().st_mtime if db.exists() else 0.0
        on_disk = db.read_bytes() if db.exists() else b""
        saved_since_start = mtime > started_wall
        last_save = mtime if saved_since_start else started_wall
        publish_s = time.monotonic() - t0
        accepted = {rid: t for rid, t in pub.accepted().items() if t <= kill_wall}
        sent = pub.sent
        pub.close()
        pub = None
        saves = saves_in_log(broker, offset)

        broker.start()  # same port, same persistence directory
        finals: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        with Client(broker.port) as c:
            c.subscribe(reply_topic)
            t_restart = time.monotonic()
            daemon.start()
            while not set(accepted) <= set(finals):
                try:
                    body = c.get(timeout_s=args.quiet_s).json()
                except queue.Empty:
                    break
                if body.get("type") in ("result", "error"):
                    finals[str(body.get("id"))] += 1
                    if body["type"] == "error":
                        errors[str(body.get("code"))] += 1
            answered_s = time.monotonic() - t_restart
            with contextlib.suppress(queue.Empty):  # late duplicates
                while True:
                    body = c.get(timeout_s=0.5).json()
                    if body.get("type") in ("result", "error"):
                        finals[str(body.get("id"))] += 1
            daemon.stop()
    finally:
        if pub is not None:
            pub.close()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        broker.stop()

    answered = [rid for rid in accepted if finals[rid]]
    return {
        "setting": setting.spec,
        "label": setting.label,
        "conf": setting.conf.strip().replace("\n", "; "),
        "published": sent,
        "accepted": len(accepted),
        "answered": len(answered),
        "lost": len(accepted) - len(answered),
        "duplicated": sum(1 for n in finals.values() if n > 1),
        "answered_not_accepted": sum(1 for rid in finals if rid not in accepted),
        "errors": dict(errors),
        "saves": saves,
        "saved_since_start": saved_since_start,
        "save_to_kill_s": round(kill_wall - last_save, 3),
        "accepted_not_in_file": sum(1 for rid in accepted if not in_file(rid, on_disk)),
        "publish_s": round(publish_s, 1),
        "schedule_late_ms_max": round(late_max * 1000, 1),
        "answered_in_s": round(answered_s, 2),
    }


# --- the throughput run ----------------------------------------------------------------------


def throughput_run(setting: Setting, mode: str, n: int, root: Path) -> dict[str, float | int | str]:
    root = root / f"tput-{setting.slug}-{mode}"
    broker = Broker(root / "broker", extra_conf=setting.conf)
    broker.start()
    daemon = new_daemon(broker, root, mode)
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
        elapsed = time.perf_counter() - t0
        accepted = len(pub.accepted())
        pub.close()
        pub = None
        saves = saves_in_log(broker, offset)
        db_kb = db_path(broker).stat().st_size / 1024 if db_path(broker).exists() else 0.0
    finally:
        if pub is not None:
            pub.close()
        broker.stop()
    return {
        "setting": setting.spec,
        "mode": mode,
        "accepted": accepted,
        "per_s": round(accepted / elapsed, 1),
        "seconds": round(elapsed, 2),
        "saves": saves,
        "db_kb_last_save": round(db_kb, 1),
    }


def streaming_run(setting: Setting, requests: int, chunks: int, root: Path) -> dict[str, Any]:
    """edged online and streaming to a QoS 1 subscriber: every QoS 1 delivery that completes
    (each chunk, and each request edged acknowledges) is a change, so on-change autosave
    saves the database over and over while edged answers."""
    root = root / f"stream-{setting.slug}"
    broker = Broker(root / "broker", extra_conf=setting.conf)
    broker.start()
    daemon = new_daemon(broker, root, "stream")
    prompt = json.dumps([f"w{k} " for k in range(chunks)])  # the fake backend: one chunk each
    topic = f"edged/{daemon.device_id}/request"
    times: list[float] = []
    try:
        daemon.start()
        with Client(broker.port) as c:
            c.subscribe("reply/stream")  # QoS 1

            def ask(rid: str) -> float:
                t0 = time.perf_counter()
                c.publish(
                    topic, json.dumps({"id": rid, "prompt": prompt}), response_topic="reply/stream"
                )
                final = c.collect(rid, timeout_s=30)[-1].json()
                if final.get("type") != "result":
                    raise RuntimeError(f"streaming run: {final}")
                return time.perf_counter() - t0

            ask("warm-up")
            offset = log_size(broker)
            times = [ask(f"s{i:04d}") for i in range(requests)]
            saves = saves_in_log(broker, offset)
        daemon.stop()
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        broker.stop()
    times.sort()
    return {
        "setting": setting.spec,
        "requests": requests,
        "chunks": chunks,
        "saves_per_request": round(saves / requests, 1),
        "ms_per_request_p50": round(times[len(times) // 2] * 1000, 1),
    }


# --- report ----------------------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "-T", str(path)], capture_output=True, text=True, check=True
        ).stdout
        return out.splitlines()[1].split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def mosquitto_version() -> str:
    out = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0] if first else "?"


def print_loss(rows: list[dict[str, Any]]) -> None:
    w = max(len(r["label"]) for r in rows)
    print(
        f"{'setting':<{w}}  {'accepted':>8} {'answered':>8} {'LOST':>5} {'dup':>4} {'errors':>6} "
        f"{'saves':>5} {'last save->kill':>16} {'not in saved file':>17}"
    )
    for r in rows:
        since = f"{r['save_to_kill_s']:.3f} s" + ("" if r["saved_since_start"] else " (start)")
        print(
            f"{r['label']:<{w}}  {r['accepted']:>8} {r['answered']:>8} {r['lost']:>5} "
            f"{r['duplicated']:>4} {sum(r['errors'].values()):>6} {r['saves']:>5} {since:>16} "
            f"{r['accepted_not_in_file']:>17}"
        )


def print_throughput(rows: list[dict[str, Any]], labels: dict[str, str]) -> None:
    w = max(len(v) for v in labels.values())
    base: dict[str, float] = {}
    head = f"{'mode':<14} {'accepted/s':>10} {'ratio':>6} {'saves':>6} {'db KiB':>7}"
    print(f"{'setting':<{w}}  {head}")
    for r in rows:
        base.setdefault(str(r["mode"]), float(r["per_s"]))
        ratio = float(r["per_s"]) / base[str(r["mode"])]
        r["ratio"] = round(ratio, 3)
        kb = f"{r['db_kb_last_save']:.1f}" if r["saves"] else "-"
        print(
            f"{labels[str(r['setting'])]:<{w}}  {r['mode']:<14} {r['per_s']:>10.0f} "
            f"{ratio:>6.2f} {r['saves']:>6} {kb:>7}"
        )


def throughput(
    settings: list[Setting], n: int, rounds: int, root: Path
) -> list[dict[str, float | int | str]]:
    """Per mode and setting, the median of ``rounds`` runs (settings interleaved in each
    round, so that machine noise hits them alike)."""
    out: list[dict[str, float | int | str]] = []
    for mode in ("pipelined", "one-at-a-time"):
        runs: dict[str, list[dict[str, float | int | str]]] = {s.spec: [] for s in settings}
        for k in range(rounds):
            for s in settings:
                runs[s.spec].append(throughput_run(s, mode, n, root / f"round-{k}"))
        for s in settings:
            rs = sorted(runs[s.spec], key=lambda r: float(r["per_s"]))
            med = dict(rs[len(rs) // 2])
            med["per_s_all"] = ", ".join(str(r["per_s"]) for r in runs[s.spec])
            out.append(med)
    return out


def print_streaming(rows: list[dict[str, Any]], labels: dict[str, str]) -> None:
    w = max(len(v) for v in labels.values())
    print(f"{'setting':<{w}}  {'saves/request':>13} {'ms/request p50':>14}")
    for r in rows:
        print(
            f"{labels[str(r['setting'])]:<{w}}  {r['saves_per_request']:>13.1f} "
            f"{r['ms_per_request_p50']:>14.1f}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=750, help="requests per loss run (default 750)")
    ap.add_argument("--rate", type=float, default=20.0, help="publishes a second (default 20)")
    ap.add_argument(
        "--kill-at",
        type=float,
        default=None,
        help="SIGKILL this many seconds after the first publish (default: after the last PUBACK)",
    )
    ap.add_argument(
        "--settings",
        default=DEFAULT_SETTINGS,
        help=f"comma-separated interval:SECONDS or changes:COUNT (default {DEFAULT_SETTINGS})",
    )
    ap.add_argument(
        "--quiet-s", type=float, default=3.0, help="stop collecting after this long without a reply"
    )
    ap.add_argument(
        "--throughput-n", type=int, default=1000, help="requests per throughput run (default 1000)"
    )
    ap.add_argument(
        "--throughput-rounds", type=int, default=3, help="runs per setting and mode (median)"
    )
    ap.add_argument(
        "--stream-requests", type=int, default=20, help="requests per streaming run (default 20)"
    )
    ap.add_argument("--chunks", type=int, default=32, help="chunks per streamed answer")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="where the brokers keep their files")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    settings = [parse_setting(s) for s in args.settings.split(",") if s.strip()]
    if args.n > 1000 or args.throughput_n > 1000:
        ap.error("at most 1000 requests: the brokers queue at most 1000 (max_queued_messages)")
    if args.tmp_dir is not None:
        args.tmp_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="edged-bench-broker-loss-", dir=args.tmp_dir))
    started = time.monotonic()
    print(
        f"{mosquitto_version()}; brokers in {root} ({filesystem_of(root)}); "
        f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    try:
        kill = "after the last PUBACK" if args.kill_at is None else f"at {args.kill_at} s"
        print(
            f"\nloss: {args.n} requests at {args.rate:g}/s to an offline edged, broker "
            f"SIGKILLed {kill}, restarted, edged started ({len(settings)} settings at once)",
            flush=True,
        )
        with ThreadPoolExecutor(max_workers=len(settings)) as ex:
            loss = list(ex.map(lambda s: loss_run(s, args, root), settings))
        print_loss(loss)

        print(
            f"\ncost: {args.throughput_n} QoS 1 requests to a queued offline session, "
            f"accepted per second, median of {args.throughput_rounds} (ratio to the first "
            "setting)",
            flush=True,
        )
        tput = throughput(settings, args.throughput_n, args.throughput_rounds, root)
        labels = {s.spec: s.label for s in settings}
        print_throughput(tput, labels)
        print(
            f"\nwhile edged streams: {args.stream_requests} requests one after another, "
            f"{args.chunks} chunks each at QoS 1 to a QoS 1 subscriber",
            flush=True,
        )
        stream = [streaming_run(s, args.stream_requests, args.chunks, root) for s in settings]
        print_streaming(stream, labels)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(f"\n{elapsed:.0f} s")
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "mosquitto": mosquitto_version(),
                "machine": platform.machine(),
                "cores": os.cpu_count(),
                "filesystem": filesystem_of(root.parent),
                "n": args.n,
                "rate": args.rate,
                "kill_at": args.kill_at,
                "loss": loss,
                "throughput": tput,
                "streaming": stream,
                "seconds": round(elapsed, 1),
            }
        )
    )
    bad = any(r["duplicated"] or r["answered_not_accepted"] for r in loss)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
