"""An external power meter over MQTT: a smart plug publishing the watts it measures.

The app subscribes to ``power.mqtt_topic`` and hands each message to :meth:`feed` (on the
event loop); the sampler thread reads the latest value. Accepted payloads: a bare number
(``4.93``), or JSON with ``power_w``, ``power`` or Tasmota's ``{"ENERGY": {"Power": ...}}``;
Shelly's ``apower`` too. A value older than ``stale_s`` is not served as current.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.errors import ConfigError
from edged.power.base import BuildContext, PowerSample, SensorInfo, register


def parse_watts(payload: bytes) -> float:
    """Watts from a meter message; ValueError when it holds none."""
    text = payload.decode("utf-8", "strict").strip()
    try:
        value: Any = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not a number or JSON: {text[:40]!r}") from e
    if isinstance(value, dict):
        for key in ("power_w", "power", "apower", "Power"):
            if key in value:
                value = value[key]
                break
        else:
            energy = value.get("ENERGY")
            if isinstance(energy, dict) and "Power" in energy:
                value = energy["Power"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"no power value in {text[:60]!r}")
    w = float(value)
    if not 0 <= w < 100_000:
        raise ValueError(f"implausible power {w} W")
    return w


@register("mqtt", board_extras=False)
class MqttMeterSource:
    """The last value a meter published (measured at the wall, so it includes the PSU)."""

    name = "mqtt"
    estimated = False
    max_rate_hz = 50.0

    @classmethod
    def from_config(cls, ctx: BuildContext) -> MqttMeterSource:
        """The meter on ``power.mqtt_topic``; ConfigError without one."""
        if not ctx.cfg.mqtt_topic:
            raise ConfigError("power.source 'mqtt' needs power.mqtt_topic (the meter's topic)")
        return cls(topic=ctx.cfg.mqtt_topic, root=ctx.root)

    def __init__(
        self,
        *,
        topic: str,
        root: Path = Path("/"),
        stale_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self._stale_s = stale_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (t_s, watts)
        self.bad_messages = 0
        self.last_problem: str | None = None

    def feed(self, payload: bytes) -> None:
        """One message from the meter's topic (event loop thread)."""
        try:
            w = parse_watts(payload)
        except (ValueError, UnicodeDecodeError) as e:
            self.bad_messages += 1
            self.last_problem = str(e)
            return
        with self._lock:
            self._last = (self._clock(), w)

    def read(self) -> PowerSample:
        """The latest value; OSError when none arrived or it is stale."""
        now = self._clock()
        with self._lock:
            last = self._last
        if last is None:
            raise OSError(f"no reading from the meter on {self.topic} yet")
        if now - last[0] > self._stale_s:
            raise OSError(f"the meter on {self.topic} has been silent for {now - last[0]:.0f} s")
        return PowerSample(t_s=now, total_w=last[1], rails_w={"meter": last[1]})

    def sensors(self) -> list[SensorInfo]:
        """The topic, with the last reading or why there is none."""
        with self._lock:
            last = self._last
        if last is None:
            return [
                SensorInfo(
                    "meter", self.topic, "total", None, self.last_problem or "no message yet"
                )
            ]
        return [SensorInfo("meter", self.topic, "total", f"{last[1]:.2f} W")]

    def close(self) -> None:
        """Nothing to release."""
