"""``edged status``: what a device says about itself over MQTT.

Two messages describe a device: its retained status on ``<prefix>/<device>/status``
(``online``/``offline``, version, model, pid; docs/protocol.md) and its periodic telemetry
on ``<prefix>/<device>/telemetry`` (power, battery, temperatures, tokens/s and tokens/J,
queue, routes, guardian actions, spool; :meth:`edged.telemetry.reporter.Reporter.snapshot`).
The status is retained, so it arrives as soon as we subscribe; telemetry is not, so
:func:`observe` waits for the next one, up to a timeout that should cover one telemetry
interval (:func:`default_timeout_s`).

:func:`observe` is the only part that needs a broker. The rest are pure functions from the
messages to text (:func:`format_report`), JSON (:func:`format_json`) and an exit status
(:attr:`Observation.exit_code`), testable without one.
"""

from __future__ import annotations

import contextlib
import json
import queue
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

from edged.cli.client import cli_client

#: Seconds added to the telemetry interval for the default wait: one interval, plus time to
#: connect and for the message to cross the broker.
TIMEOUT_SLACK_S = 2.0
#: Once telemetry has arrived without a retained status, how long to wait for the status
#: (the broker sends retained messages right after the subscription, so this is a margin).
STATUS_GRACE_S = 0.5

LABEL_WIDTH = 10


def default_timeout_s(telemetry_interval_s: float) -> float:
    """How long ``edged status`` waits by default: one telemetry interval plus slack."""
    return telemetry_interval_s + TIMEOUT_SLACK_S


@dataclass
class Observation:
    """What came back from the broker for one device."""

    device_id: str
    status_topic: str
    telemetry_topic: str
    timeout_s: float
    status: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    #: seconds from the subscription to the telemetry message (None: none seen)
    telemetry_after_s: float | None = None
    #: the telemetry message was a retained one (edged does not retain it; a bridge might)
    telemetry_retained: bool = False
    #: the broker could not be reached, or refused us
    error: str | None = None

    @property
    def state(self) -> str | None:
        """``online``, ``offline``, or None without a status message."""
        if self.status is None:
            return None
        state = self.status.get("state")
        return state if isinstance(state, str) else None

    @property
    def exit_code(self) -> int:
        """0 when the device answered and is not offline; 1 when it is offline, when
        nothing answered, or when the broker could not be reached."""
        if self.error is not None:
            return 1
        if self.status is None:
            return 0 if self.telemetry is not None else 1
        return 0 if self.state == "online" else 1


# --- the network part ---------------------------------------------------------------------


def observe(
    *,
    host: str,
    port: int,
    device_id: str,
    status_topic: str,
    telemetry_topic: str,
    timeout_s: float,
    username: str | None = None,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Observation:
    """Subscribe to the device's status and telemetry; return once both are known.

    Returns early when the status says the device is not online (no telemetry is awaited
    then), or when a telemetry message arrives; otherwise after ``timeout_s`` from the
    subscription. Replayed telemetry (``"historical": true``, sent after an outage) is
    skipped: it describes the past.
    """
    obs = Observation(device_id, status_topic, telemetry_topic, timeout_s)
    inbox: queue.Queue[tuple[str, Any, bool]] = queue.Queue()
    c = cli_client(
        f"edged-status-{uuid.uuid4().hex[:12]}", username=username, password=password, tls=tls
    )

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            inbox.put(("fail", f"the broker refused the connection: {reason}", False))
            return
        client.subscribe([(status_topic, 1), (telemetry_topic, 0)])

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        refused = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if refused:  # e.g. an ACL that does not let this user read edged's topics
            inbox.put(("fail", f"the broker refused the subscription: {refused}", False))
        else:
            inbox.put(("subscribed", None, False))

    def on_message(client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(body, dict):
            inbox.put((msg.topic, body, bool(msg.retain)))

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    try:
        c.connect(host, port, keepalive=30, clean_start=True)
    except OSError as e:
        obs.error = f"cannot reach the broker at {host}:{port}: {e}"
        return obs
    c.loop_start()
    try:
        try:
            kind, value, _ = inbox.get(timeout=min(timeout_s, 10.0) + 1.0)
        except queue.Empty:
            obs.error = f"the broker at {host}:{port} did not confirm the subscription"
            return obs
        if kind == "fail":
            obs.error = str(value)
            return obs
        subscribed = time.monotonic()
        deadline = subscribed + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                topic, body, retained = inbox.get(timeout=remaining)
            except queue.Empty:
                break
            if topic == "fail":
                obs.error = str(body)
                break
            if topic == status_topic:
                obs.status = body
                if obs.state != "online":
                    break  # offline: no telemetry to wait for
                if obs.telemetry is not None:
                    break
            elif topic == telemetry_topic and not body.get("historical"):
                obs.telemetry = body
                obs.telemetry_after_s = time.monotonic() - subscribed
                obs.telemetry_retained = retained
                if obs.status is not None:
                    break
                # no retained status came before it: give it a moment, then stop
                deadline = min(deadline, time.monotonic() + STATUS_GRACE_S)
    finally:
        with contextlib.suppress(Exception):
            c.disconnect()
        c.loop_stop()
    return obs


# --- pure formatting ----------------------------------------------------------------------


def format_json(obs: Observation) -> str:
    """Both messages as received (``null`` when not seen), for scripts."""
    return json.dumps(
        {
            "device_id": obs.device_id,
            "status": obs.status,
            "telemetry": obs.telemetry,
            "error": obs.error,
        },
        indent=2,
        ensure_ascii=False,
    )


def format_report(obs: Observation, now: float | None = None) -> str:
    """The status and telemetry of one device, one aspect per line."""
    now = time.time() if now is None else now
    lines: list[tuple[str, str]] = [("device", obs.device_id)]
    if obs.error is not None:
        lines.append(("error", obs.error))
        return _render(lines)
    lines += _status_lines(obs, now)
    t = obs.telemetry
    if t is not None:
        lines += telemetry_lines(t)
    elif obs.status is not None and obs.state == "online":
        started = _num((obs.status or {}).get("started_unix_s"))
        if started is not None:
            lines.append(("uptime", f"{_duration(now - started)} (from the status message)"))
    lines.append(("telemetry", _telemetry_note(obs, now)))
    return _render(lines)


def _render(lines: list[tuple[str, str]]) -> str:
    return "\n".join(f"{k:<{LABEL_WIDTH}} {v}" for k, v in lines)


def _status_lines(obs: Observation, now: float) -> list[tuple[str, str]]:
    s = obs.status
    if s is None:
        return [("state", f"unknown: no retained status on {obs.status_topic}")]
    state = obs.state or "?"
    ts = _num(s.get("ts_unix_s"))
    if state == "online":
        started = _num(s.get("started_unix_s"))
        since = f" since {_when(started)}" if started is not None else ""
        pid = f" (pid {s['pid']})" if s.get("pid") is not None else ""
        out = [("state", f"online{since}{pid}")]
        out.append(("version", str(s.get("version", "?"))))
        out.append(("model", str(s.get("model", "?"))))
        return out
    reason = s.get("reason")
    why = {
        "shutdown": "edged stopped",
        "connection_lost": "the broker published edged's last will: connection lost",
    }.get(str(reason), str(reason) if reason is not None else "no reason given")
    at = f" at {_when(ts)}" if ts is not None else ""
    return [("state", f"{state} ({why}){at}")]


def _telemetry_note(obs: Observation, now: float) -> str:
    t = obs.telemetry
    if t is None:
        if obs.status is not None and obs.state != "online":
            return "not awaited: the device is offline"
        return (
            f"none seen within {obs.timeout_s:g} s (telemetry is not retained: edged publishes "
            f"it every telemetry.interval_s, 10 s by default, on {obs.telemetry_topic}; "
            "try a longer --timeout-s)"
        )
    ts = _num(t.get("ts_unix_s"))
    age = f", composed {max(0.0, now - ts):.1f} s ago" if ts is not None else ""
    kind = "retained message" if obs.telemetry_retained else "live message"
    after = f" after {obs.telemetry_after_s:.1f} s" if obs.telemetry_after_s is not None else ""
    return f"{kind} received{after}{age}"


def telemetry_lines(t: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One telemetry record as (label, text) lines; unknown values say why."""
    out: list[tuple[str, str]] = []
    uptime = _num(t.get("uptime_s"))
    if uptime is not None:
        out.append(("uptime", _duration(uptime)))
    out.append(("power", _power(_map(t.get("power")))))
    out.append(("battery", _battery(_map(t.get("battery")))))
    out.append(("temps", _temps(_map(t.get("temps_c")), t.get("throttled"))))
    mode = _map(t.get("power_mode"))
    if mode.get("name"):  # Jetson nvpmodel; absent on other boards (and older records)
        clocks = ", ".join(f"{k} {v} MHz" for k, v in _map(mode.get("clocks_mhz")).items())
        out.append(
            (
                "power mode",
                f"{mode['name']} (id {mode.get('id')})" + (f"; {clocks}" if clocks else ""),
            )
        )
    energy = _map(t.get("energy"))
    if energy:
        total = _num(energy.get("total_j"))
        text = f"{total:.3f} J counted since first start" if total is not None else "unknown"
        if total == 0 and _num(_map(t.get("power")).get("total_w")) is None:
            text += " (no power readings to count)"
        idle = _num(energy.get("idle_w"))
        if idle is not None:
            text += f"; idle baseline {idle:.2f} W"
        if energy.get("reason"):
            text += f" ({energy['reason']})"
        out.append(("energy", text))
    llm = _map(t.get("llm"))
    tps = _num(llm.get("tokens_per_s_avg"))
    tpj = _num(llm.get("tokens_per_joule_avg"))
    out.append(
        ("tokens/s", f"{tps:.2f} (recent average)" if tps is not None else "- (no answer yet)")
    )
    out.append(
        ("tokens/J", f"{tpj:.4f} (recent average)" if tpj is not None else "- (no energy reading)")
    )
    queue_text = f"{_int(llm.get('in_flight'))} in flight"
    if _num(llm.get("queue_depth")) is not None:
        queue_text += f", {_int(llm.get('queue_depth'))} waiting for the local model"
    out.append(("queue", queue_text))
    requests = _map(t.get("requests"))
    errors = _map(t.get("errors"))
    text = f"{_int(requests.get('result'))} answered, {_int(requests.get('error'))} failed"
    if errors:
        text += " (" + _counts(errors) + ")"
    out.append(("requests", text))
    routes = _map(t.get("routes"))
    out.append(("routes", _counts(routes) if routes else "none yet"))
    g = _map(t.get("guardian"))
    gin, gout = _map(g.get("input")), _map(g.get("output"))
    if gin or gout:
        text = f"input: {_counts(gin) or 'none'}; output: {_counts(gout) or 'none'}"
    else:
        text = "no rule has acted"
    out.append(("guardian", text))
    spool = f"{_int(t.get('spool_pending'))} pending, {_int(t.get('spool_dropped'))} dropped"
    if _num(t.get("spool_failed_writes")):
        spool += f", {_int(t.get('spool_failed_writes'))} failed writes"
    out.append(("spool", spool))
    cloud = t.get("cloud")
    if isinstance(cloud, Mapping):
        cloud_text = (
            f"breaker {cloud.get('breaker', '?')}; today {_int(cloud.get('requests_today'))} "
            f"requests, {_int(cloud.get('tokens_today'))} tokens"
        )
        out.append(("cloud", cloud_text))
    if t.get("profile"):
        out.append(("profile", str(t["profile"])))
    alarms = t.get("alarms")
    if isinstance(alarms, list) and alarms:
        out.append(("alarms", ", ".join(str(a) for a in alarms)))
    return out


def _power(p: Mapping[str, Any]) -> str:
    if not p:
        return "unknown (not in the telemetry)"
    total = _num(p.get("total_w"))
    source = p.get("source", "?")
    if total is None:
        text = f"unknown ({p.get('reason') or 'no reading'}; source {source})"
    else:
        kind = "estimated" if p.get("estimated") else "measured"
        hz = _num(p.get("sample_hz"))
        rate = f", {hz:g} Hz" if hz is not None else ""
        text = f"{total:.2f} W ({kind}, source {source}{rate})"
    rails = _map(p.get("rails_w"))
    shown = [f"{k} {v:.2f} W" for k, v in rails.items() if _num(v) is not None]
    if shown:
        text += "; rails " + ", ".join(shown)
    return text


def _battery(b: Mapping[str, Any]) -> str:
    pct = _num(b.get("pct"))
    if pct is None:
        return f"none ({b.get('reason') or 'no battery reading'})"
    parts = [f"{pct:.1f}%"]
    charging = b.get("charging")
    if charging is True:
        parts.append("charging")
    elif charging is False:
        parts.append("not charging")
    volts = _num(b.get("voltage_v"))
    if volts is not None:
        parts.append(f"{volts:.2f} V")
    watts = _num(b.get("power_w"))
    if watts is not None:
        parts.append(f"{watts:.2f} W")
    tte = _num(b.get("time_to_empty_s"))
    if tte is not None:
        parts.append(f"{_duration(tte)} to empty")
    return ", ".join(parts)


def _temps(temps: Mapping[str, Any], throttled: Any) -> str:
    shown = [f"{k} {v:.1f} C" for k, v in temps.items() if _num(v) is not None]
    text = ", ".join(shown) if shown else "none"
    if throttled is True:
        text += "; THROTTLED"
    elif throttled is False:
        text += "; not throttled"
    return text


def _counts(d: Mapping[str, Any]) -> str:
    items = sorted(d.items(), key=lambda kv: (-(_num(kv[1]) or 0), kv[0]))
    return ", ".join(f"{k} {v}" for k, v in items)


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _int(v: Any) -> str:
    n = _num(v)
    return "?" if n is None else f"{n:.0f}"


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    if d:
        return f"{d}d {h}h {m:02d}m"
    if h:
        return f"{h}h {m:02d}m {sec:02d}s"
    return f"{m}m {sec:02d}s"


def _when(ts: float | None) -> str:
    if ts is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts)).strip()
