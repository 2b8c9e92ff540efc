"""The telemetry record and the request event against docs/schemas and docs/telemetry.md.

A real Reporter (fake sender, fake clock) builds the payloads: without a power source, and
over a Sampler reading a fake board; the outbox's replayed copies (``historical``) too.
"""

from __future__ import annotations

import asyncio
import json
import math
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from edged.app import App
from edged.config import Config
from edged.energy.meter import NullMeter
from edged.energy.sampler import Sampler
from edged.errors import WIRE_CODES, Blocked, EdgedError, Timeout
from edged.power.base import PowerSample, SensorInfo
from edged.telemetry.outbox import Outbox
from edged.telemetry.reporter import SCHEMA_VERSION, EnergyCounter, Reporter, Sender
from edged.telemetry.spool import Spool
from edged.types import (
    ChatMessage,
    EnergyReport,
    FinishReason,
    GuardianReport,
    ReplyAddress,
    Request,
    Result,
    RouteDecision,
    Timing,
    ToolDecision,
    Usage,
)
from tests.helpers import ROOT

SCHEMAS = ROOT / "docs" / "schemas"
TELEMETRY_MD = ROOT / "docs" / "telemetry.md"
HZ = 50.0
BOARD_W = 5.0
PROMPT = "my neighbour's gnome collection is hidden under the oak"
ANSWER = "The gnomes are safe under the old oak tree."

#: What App._stats adds to the record on a device with a cloud backend (the real method's
#: keys are checked against this in test_representative_stats_have_the_keys_app_adds).
STATS: dict[str, Any] = {
    "queue_depth": 1,
    "in_flight": 2,
    "idle_w": 4.87512,
    "ingress": {
        **{"received": 12, "admitted": 10, "rejected": 1, "duplicates": 1},
        **{"cancelled": 1, "cancels_ignored": 0},
    },
    "cloud": {"breaker": "half_open", "requests_today": 3, "tokens_today": 412},
    "session_cache": {
        **{"entries": 3, "ram_mb": 44.6, "budget_mb": 64.0, "lookups": 9, "hits": 8},
        **{"hit_rate": 0.8889, "restores": 6, "evictions": 0},
    },
    "spool_dropped": 0,
    "spool_pending": 0,
    "spool_failed_writes": 0,
    "spool_corrupt": 0,
    "profile": "jetson-orin-nano",
    "alarms": ["cloud_breaker_open"],
    "backends": {
        "local": {
            "kind": "local",
            "trust": "device",
            "healthy": True,
            "queue_depth": 1,
            "breaker": None,
            "retry_after_s": 0.0,
            "tokens_per_s": 81.5,
            "requests_today": None,
            "tokens_today": None,
        },
        "edge": {
            "kind": "openai",
            "trust": "lan",
            "healthy": False,
            "queue_depth": None,
            "breaker": "open",
            "retry_after_s": 0.0,
            "tokens_per_s": None,
            "requests_today": 4,
            "tokens_today": 96,
        },
    },
}


# --- fakes ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class BoardSource:
    """A board drawing BOARD_W with two rails, a discharging battery and a CPU sensor."""

    name = "fake-board"
    estimated = False
    max_rate_hz = 1000.0

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.fail = False

    def read(self) -> PowerSample:
        if self.fail:
            raise OSError("i2c bus gone")
        return PowerSample(
            t_s=self.clock(),
            total_w=BOARD_W,
            rails_w={"VDD_CPU_GPU_CV": 2.1134, "VDD_SOC": 1.40249},
            battery_pct=87.25,
            charging=False,
            battery_v=7.4123,
            battery_a=0.7,
            battery_w=5.18861,
            time_to_empty_s=12345.6,
            temps_c={"cpu-thermal": 48.25, "battery": 31.0},
            throttled=False,
        )

    def sensors(self) -> list[SensorInfo]:
        return []

    def close(self) -> None:
        pass


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, topic: str, record: dict[str, Any]) -> None:
        self.sent.append((topic, record))


class FakeLink:
    """The outbox's view of the MQTT link: starts disconnected, records what is published."""

    def __init__(self) -> None:
        self._connected = asyncio.Event()
        self.published: list[tuple[str, bytes]] = []

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload))


# --- builders ------------------------------------------------------------------------------------


def make_reporter(
    tmp_path: Path, sampler: Sampler | None, clock: Clock, sender: Sender | None = None
) -> Reporter:
    return Reporter(
        device_id="kitchen-1",
        telemetry_topic="edged/kitchen-1/telemetry",
        events_topic="edged/kitchen-1/events/request",
        sender=sender or FakeSender(),
        sampler=sampler,
        counter=EnergyCounter(tmp_path / "state" / "energy.json"),
        interval_s=10.0,
        stats=lambda: dict(STATS),
        clock=clock,
    )


def sample_until(clock: Clock, sampler: Sampler, t_end: float) -> None:
    while clock.t < t_end - 1e-9:
        clock.t = round(clock.t + 1 / HZ, 9)
        sampler.sample_once()


def board_rig(tmp_path: Path) -> tuple[Clock, BoardSource, Sampler, Reporter]:
    clock = Clock()
    source = BoardSource(clock)
    sampler = Sampler(source, HZ, clock=clock)
    sampler.sample_once()
    reporter = make_reporter(tmp_path, sampler, clock)
    reporter.snapshot()  # the first report starts the energy counter's interval
    sample_until(clock, sampler, clock.t + 1.0)
    return clock, source, sampler, reporter


def request(request_id: str = "kitchen-42") -> Request:
    return Request(
        id=request_id,
        messages=(ChatMessage("system", "Answer briefly."), ChatMessage("user", PROMPT)),
        max_tokens=64,
        temperature=0.7,
        stream=True,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/panel", b"corr"),
        received_at_s=1000.0,
    )


MEASURED = EnergyReport(
    joules=0.781234,
    joules_active=0.192,
    tokens_per_joule=10.240271,
    mwh_per_1k_tokens=27.118,
    source="fake-board",
    estimated=False,
    sample_hz=49.6,
)
UNKNOWN = NullMeter().end("kitchen-42", 8)


def result(
    *,
    energy: EnergyReport = MEASURED,
    guardian: GuardianReport | None = None,
    timing: Timing | None = None,
    backend: str = "local",
    reasons: tuple[str, ...] = ("no_cloud",),
    usage: Usage | None = None,
) -> Result:
    return Result(
        id="kitchen-42",
        text=ANSWER,
        finish_reason="stop",
        route=RouteDecision(backend, reasons),
        usage=usage or Usage(prompt_tokens=31, completion_tokens=8),
        timing=timing or Timing(0.41234, 38.90512, 121.33749),
        energy=energy,
        guardian=guardian,
    )


def observe_all(reporter: Reporter) -> None:
    """Feed the reporter the outcomes a device sees."""
    reporter.observe(request(), result(guardian=GuardianReport({"pii.email": 2}, {})), None)
    reporter.observe(
        request("k-43"),
        result(
            energy=UNKNOWN,
            backend="cloud",
            reasons=("semantic:cloud",),
            usage=Usage(prompt_tokens=None, completion_tokens=20),
        ),
        None,
    )
    reporter.observe(request("k-44"), None, Timeout("deadline_ms passed"))
    reporter.observe(request("k-45"), None, None)  # no error given: counted as internal


# --- schema helpers ------------------------------------------------------------------------------


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def schema(name: str) -> dict[str, Any]:
    return dict(validator(name).schema)


def wire(record: dict[str, Any]) -> Any:
    """What a subscriber gets: the record through the outbox's JSON encoding."""
    return json.loads(json.dumps(record, separators=(",", ":"), allow_nan=False))


def assert_valid(name: str, record: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(record)]
    assert not errors, (name, record, errors)


def is_valid(name: str, record: Any) -> bool:
    return bool(validator(name).is_valid(record))


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


UNIT_SUFFIXES = ("_w", "_v", "_s", "_j", "_pct", "_c", "_hz", "_ms", "_avg")
#: String fields whose value is a name or a code, never a quantity.
STRING_FIELDS = {
    "device_id",
    "id",
    "outcome",
    "finish_reason",
    "code",
    "source",
    "reason",
    "backend",
    "reasons",
    "breaker",
    "kind",
    "trust",
    "profile",
    "alarms",
    "call_id",
    "tool",
    "decision",
    "rules",
    "arguments",
}


def assert_numbers_are_numbers(record: dict[str, Any]) -> None:
    """Quantities are JSON numbers (or null), never strings such as "5.0 W"."""
    for path, v in leaves(record):
        key = path.rsplit(".", 1)[-1].split("[")[0]
        if isinstance(v, str):
            assert key in STRING_FIELDS, path
            try:
                float(v.split()[0])
            except (ValueError, IndexError):
                pass
            else:
                pytest.fail(f"{path} is a number written as a string: {v!r}")
    for path, v in leaves(record):
        parts = path.split(".")
        # a field named with a unit (or inside a map named with one: rails_w, temps_c)
        if any(p.endswith(UNIT_SUFFIXES) for p in parts[-2:]):
            assert v is None or is_number(v), (path, v)


# --- the schemas themselves ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["telemetry", "request-event", "tool-event"])
def test_schema_is_valid_draft_2020_12_and_its_examples_validate(name: str) -> None:
    s = schema(name)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(s)
    assert s.get("additionalProperties") is False
    assert s["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert s["examples"]
    for example in s["examples"]:
        assert_valid(name, example)


def test_error_codes_in_the_schemas_are_the_wire_codes() -> None:
    assert schema("request-event")["properties"]["code"]["enum"] == list(WIRE_CODES)
    errors = schema("telemetry")["properties"]["errors"]
    assert errors["propertyNames"]["enum"] == list(WIRE_CODES)


def test_event_schema_has_no_field_for_prompt_or_answer_text() -> None:
    props = set(schema("request-event")["properties"])
    assert not props & {"text", "prompt", "messages", "content", "reply_to"}


# --- (a) no power source -------------------------------------------------------------------------


def test_snapshot_without_a_power_source_validates_with_unknowns_null_and_reasons(
    tmp_path: Path,
) -> None:
    clock = Clock()
    reporter = make_reporter(tmp_path, None, clock)
    clock.t += 12.5
    snap = wire(reporter.snapshot())
    assert_valid("telemetry", snap)
    assert_numbers_are_numbers(snap)
    assert snap["schema_version"] == 1 and snap["device_id"] == "kitchen-1"
    assert snap["uptime_s"] == 12.5
    power = snap["power"]
    assert power["source"] == "none" and power["estimated"] is False
    assert power["total_w"] is None and power["sample_hz"] is None and power["rails_w"] == {}
    assert power["reason"] == "no power source configured"
    battery = snap["battery"]
    assert all(battery[k] is None for k in battery if k != "reason")
    assert battery["reason"] == "no battery reading"
    assert snap["temps_c"] == {} and snap["throttled"] is None
    # nothing measured: the counter has counted nothing (0, not null; see power.reason)
    # no power source: the counter is unknown, not 0
    assert snap["energy"] == {
        "total_j": None,
        "idle_w": None,
        "reason": "no power source configured",
    }
    assert snap["llm"] == {
        "tokens_per_s_avg": None,
        "tokens_per_joule_avg": None,
        "queue_depth": 1,
        "in_flight": 2,
    }
    assert snap["requests"] == {"result": 0, "error": 0}
    assert snap["errors"] == {} and snap["routes"] == {}
    for key in STATS.keys() - {"queue_depth", "in_flight", "idle_w"}:
        assert snap[key] == STATS[key], key


def test_snapshot_with_unknown_request_energy_keeps_tokens_per_joule_null(
    tmp_path: Path,
) -> None:
    clock = Clock()
    reporter = make_reporter(tmp_path, None, clock)
    reporter.events = False
    reporter.observe(request(), result(energy=UNKNOWN), None)
    snap = wire(reporter.snapshot())
    assert_valid("telemetry", snap)
    assert snap["llm"]["tokens_per_joule_avg"] is None
    assert snap["llm"]["tokens_per_s_avg"] is not None


# --- (b) a board with a power source -------------------------------------------------------------


def test_snapshot_over_a_sampler_validates_with_units_and_energy(tmp_path: Path) -> None:
    _clock, _source, _sampler, reporter = board_rig(tmp_path)
    reporter.events = False
    observe_all(reporter)
    snap = wire(reporter.snapshot())
    assert_valid("telemetry", snap)
    assert_numbers_are_numbers(snap)
    power = snap["power"]
    assert power == {
        "source": "fake-board",
        "estimated": False,
        "total_w": 5.0,
        "rails_w": {"VDD_CPU_GPU_CV": 2.113, "VDD_SOC": 1.402},
        "sample_hz": 50.0,
        "reason": None,
    }
    assert snap["battery"] == {
        "pct": 87.2,
        "charging": False,
        "voltage_v": 7.412,
        "power_w": 5.189,
        "time_to_empty_s": 12346.0,
        "reason": None,
    }
    assert snap["temps_c"] == {"cpu-thermal": 48.2, "battery": 31.0}
    assert snap["throttled"] is False
    # 5 W for the 1 s since the first report, floored to the mJ
    assert abs(snap["energy"]["total_j"] - BOARD_W * 1.0) <= 0.002
    assert snap["energy"]["total_j"] == math.floor(snap["energy"]["total_j"] * 1000) / 1000
    llm = snap["llm"]
    # first result: 7 tokens after the first in (121.33749 - 38.90512) ms; the second has
    # its decode rate too (same timing, 19 tokens), averaged with weight 0.2
    first = 7 / ((121.33749 - 38.90512) / 1000)
    second = 19 / ((121.33749 - 38.90512) / 1000)
    assert llm["tokens_per_s_avg"] == round(first + 0.2 * (second - first), 2)
    # the unknown energy of the second result is skipped
    assert llm["tokens_per_joule_avg"] == round(MEASURED.tokens_per_joule or 0, 4)
    assert snap["requests"] == {"result": 2, "error": 2}
    assert snap["errors"] == {"timeout": 1, "internal": 1}
    assert snap["routes"] == {"local:no_cloud": 1, "cloud:semantic:cloud": 1}
    assert snap["guardian"] == {"input": {"pii.email": 2}, "output": {}}


def test_energy_counter_never_goes_backwards_and_survives_a_restart(tmp_path: Path) -> None:
    clock, _source, sampler, reporter = board_rig(tmp_path)
    first = reporter.snapshot()["energy"]["total_j"]
    sample_until(clock, sampler, clock.t + 2.0)
    second = reporter.snapshot()["energy"]["total_j"]
    assert second >= first + 2 * BOARD_W - 0.002
    reporter.counter.save()
    again = make_reporter(tmp_path, sampler, clock)  # a restart reads the file
    assert again.snapshot()["energy"]["total_j"] >= second


def test_stale_and_failing_readings_give_null_power_with_a_reason(tmp_path: Path) -> None:
    clock, source, sampler, reporter = board_rig(tmp_path)
    source.fail = True
    sampler.sample_once()
    clock.t += 1.0  # no reading for 50 periods
    snap = wire(reporter.snapshot())
    assert_valid("telemetry", snap)
    assert snap["power"]["total_w"] is None
    assert "stopped answering" in snap["power"]["reason"]
    assert "i2c bus gone" in snap["power"]["reason"]


def test_source_without_a_reading_yet_is_null_with_a_reason(tmp_path: Path) -> None:
    clock = Clock()
    sampler = Sampler(BoardSource(clock), HZ, clock=clock)
    snap = wire(make_reporter(tmp_path, sampler, clock).snapshot())
    assert_valid("telemetry", snap)
    assert snap["power"]["total_w"] is None
    assert snap["power"]["reason"] == "no power reading yet"
    assert snap["battery"]["pct"] is None and snap["battery"]["reason"] == "no battery reading"


def test_schema_refuses_quantities_written_as_strings(tmp_path: Path) -> None:
    _clock, _source, _sampler, reporter = board_rig(tmp_path)
    snap = wire(reporter.snapshot())
    for path, bad in [
        (("power", "total_w"), "5.0 W"),
        (("battery", "pct"), "87%"),
        (("energy", "total_j"), "5.0"),
        (("llm", "queue_depth"), 1.5),
        (("power", "rails_w"), {"VDD_SOC": "1.4"}),
    ]:
        broken = json.loads(json.dumps(snap))
        broken[path[0]][path[1]] = bad
        assert not is_valid("telemetry", broken), path
    assert not is_valid("telemetry", {**snap, "watts": 5.0})
    assert not is_valid("telemetry", {**snap, "historical": True})  # without spool_seq


# --- the extra keys App._stats adds --------------------------------------------------------------


def app_config(tmp_path: Path, cloud: bool = False) -> Config:
    return Config.model_validate(
        {
            "device_id": "kitchen-1",
            "local": {"backend": "fake"},
            "cloud": {"enabled": cloud},
            "telemetry": {
                "spool_dir": str(tmp_path / "spool"),
                "state_dir": str(tmp_path / "state"),
            },
        }
    )


def test_representative_stats_have_the_keys_app_adds(tmp_path: Path) -> None:
    for cloud in (False, True):
        real = App(app_config(tmp_path, cloud))._stats()
        assert set(real) == set(STATS)
        assert (real["cloud"] is None) is not cloud
        if cloud:
            assert set(real["cloud"]) == set(STATS["cloud"])
        assert set(real["ingress"]) == set(STATS["ingress"])


def test_snapshot_with_the_real_app_stats_validates(tmp_path: Path) -> None:
    app = App(app_config(tmp_path))
    clock = Clock()
    reporter = make_reporter(tmp_path, None, clock)
    reporter._stats = app._stats
    snap = wire(reporter.snapshot())
    assert_valid("telemetry", snap)
    # every field the schema requires is in the record, and nothing else (backends, tools:
    # optional in the schema, added later; the daemon always sends them)
    assert set(snap) == set(schema("telemetry")["required"]) | {"backends", "tools"}


# --- the request event ---------------------------------------------------------------------------


def test_events_are_sent_for_each_outcome_and_validate(tmp_path: Path) -> None:
    async def main() -> list[tuple[str, dict[str, Any]]]:
        sender = FakeSender()
        reporter = make_reporter(tmp_path, None, Clock(), sender)
        observe_all(reporter)
        reporter.observe(request("k-46"), None, Blocked("refused by guardian rule(s): x"))
        await asyncio.gather(*reporter._pending)
        return sender.sent

    sent = asyncio.run(main())
    assert [t for t, _ in sent] == ["edged/kitchen-1/events/request"] * 5
    events = [wire(r) for _, r in sent]
    for ev in events:
        assert_valid("request-event", ev)
        assert_numbers_are_numbers(ev)
        assert ev["device_id"] == "kitchen-1" and ev["schema_version"] == 1
        assert isinstance(ev["ts_unix_s"], float)
    measured, unknown, timeout, internal, blocked = events
    assert measured["outcome"] == "result" and measured["id"] == "kitchen-42"
    assert measured["timing_ms"] == {"queue": 0.412, "ttft": 38.905, "total": 121.337}
    assert measured["usage"] == {"prompt_tokens": 31, "completion_tokens": 8, "cached_tokens": None}
    assert measured["energy"]["joules"] == MEASURED.joules and measured["energy"]["reason"] is None
    assert measured["guardian"] == {"input": {"pii.email": 2}, "output": {}, "tools": {}}
    # unknown energy: every number null, with the reason
    energy = unknown["energy"]
    for k in ("joules", "joules_active", "tokens_per_joule", "mwh_per_1k_tokens", "sample_hz"):
        assert energy[k] is None, k
    assert energy["reason"] == "no power source configured" and energy["source"] == "none"
    assert unknown["usage"]["prompt_tokens"] is None and unknown["guardian"] is None
    assert unknown["route"] == {"backend": "cloud", "reasons": ["semantic:cloud"]}
    assert {k: timeout[k] for k in ("outcome", "code", "id")} == {
        "outcome": "error",
        "code": "timeout",
        "id": "k-44",
    }
    assert internal["code"] == "internal" and blocked["code"] == "blocked"
    assert set(timeout) == {"schema_version", "device_id", "id", "ts_unix_s", "outcome", "code"}


def test_events_carry_no_prompt_or_answer_text(tmp_path: Path) -> None:
    reporter = make_reporter(tmp_path, None, Clock())
    ev = reporter.event(request(), result(), None)
    text = json.dumps(ev)
    for secret in (PROMPT, ANSWER, "gnome", "Answer briefly", "reply/panel", "corr"):
        assert secret not in text, secret
    err = json.dumps(reporter.event(request(), None, EdgedError("internal detail: " + PROMPT)))
    assert "gnome" not in err and "internal detail" not in err


def test_event_schema_refuses_mixed_outcomes_and_text(tmp_path: Path) -> None:
    reporter = make_reporter(tmp_path, None, Clock())
    ok = wire(reporter.event(request(), result(), None))
    err = wire(reporter.event(request(), None, Timeout("late")))
    assert not is_valid("request-event", {**ok, "code": "timeout"})
    assert not is_valid("request-event", {**err, "usage": ok["usage"]})
    assert not is_valid("request-event", {**ok, "text": ANSWER})
    assert not is_valid("request-event", {k: v for k, v in ok.items() if k != "energy"})
    assert not is_valid("request-event", {**err, "code": "nope"})
    assert not is_valid("request-event", {**ok, "timing_ms": {**ok["timing_ms"], "total": "1"}})


def test_schema_properties_are_what_the_reporter_emits(tmp_path: Path) -> None:
    reporter = make_reporter(tmp_path, None, Clock())
    keys = set(reporter.event(request(), result(), None))
    keys |= set(reporter.event(request(), None, Timeout("late")))
    assert set(schema("request-event")["properties"]) == keys | {"historical", "spool_seq"}
    snap_keys = set(make_reporter(tmp_path, None, Clock()).snapshot())
    optional = {"historical", "spool_seq", "backends", "tools"}
    assert set(schema("telemetry")["properties"]) == snap_keys | optional
    assert set(schema("telemetry")["required"]) == snap_keys - {"backends", "tools"}


# --- replayed records: historical and spool_seq --------------------------------------------------


def test_replayed_records_validate_with_historical_and_spool_seq(tmp_path: Path) -> None:
    async def main() -> list[tuple[str, bytes]]:
        link = FakeLink()
        outbox = Outbox(link, Spool(tmp_path / "spool", 1 << 20))
        clock = Clock()
        await outbox.spool.open()
        reporter = make_reporter(tmp_path, None, clock, sender=outbox)
        reporter.observe(request(), result(), None)  # while the broker is away: spooled
        reporter.observe(request("k-44"), None, Timeout("late"))
        await asyncio.gather(*reporter._pending)
        await outbox.send(reporter.telemetry_topic, reporter.snapshot())
        assert link.published == [] and outbox.spool.pending == 3
        link.connected.set()
        assert await outbox.flush()
        await outbox.send(reporter.telemetry_topic, reporter.snapshot())  # live again
        await outbox.spool.close()
        return link.published

    published = asyncio.run(main())
    assert len(published) == 4
    names = {
        "edged/kitchen-1/events/request": "request-event",
        "edged/kitchen-1/telemetry": "telemetry",
    }
    records = [(names[topic], json.loads(payload)) for topic, payload in published]
    for name, record in records:
        assert_valid(name, record)
    replayed, live = records[:3], records[3]
    assert [r["spool_seq"] for _, r in replayed] == [1, 2, 3]
    assert all(r["historical"] is True for _, r in replayed)
    assert "historical" not in live[1] and "spool_seq" not in live[1]


# --- the doc -------------------------------------------------------------------------------------


def schema_fields(node: dict[str, Any]) -> Iterator[str]:
    for key, sub in node.get("properties", {}).items():
        yield key
        yield from schema_fields(sub)
    for sub in node.get("oneOf", []):
        yield from schema_fields(sub)


@pytest.mark.parametrize("name", ["telemetry", "request-event", "tool-event"])
def test_telemetry_doc_names_every_field(name: str) -> None:
    text = TELEMETRY_MD.read_text(encoding="utf-8")
    for field in set(schema_fields(schema(name))):
        assert f"`{field}`" in text, field


def test_telemetry_doc_names_the_topics_and_the_alarms() -> None:
    text = TELEMETRY_MD.read_text(encoding="utf-8")
    for topic in (
        "edged/<device_id>/telemetry",
        "edged/<device_id>/events/request",
        "edged/<device_id>/status",
    ):
        assert f"`{topic}`" in text, topic
    for alarm in (
        "spool_write_failed",
        "spool_dropped",
        "power_source_failing",
        "cloud_breaker_open",
        "cloud_throttled",
    ):
        assert f"`{alarm}`" in text, alarm


def test_finish_reasons_in_the_request_event_are_the_types() -> None:
    enum = schema("request-event")["properties"]["finish_reason"]["enum"]
    assert enum == list(typing.get_args(FinishReason))


# --- the tool decision event (the guardian's audit trail) ---------------------------------------


def test_tool_decisions_are_sent_as_events_without_arguments_unless_asked(tmp_path: Path) -> None:
    decision = ToolDecision(
        "kitchen-42", "call_1", "unlock_door", "block", ("door.never",), 2.4, "{}"
    )

    async def main(log_arguments: bool) -> list[tuple[str, dict[str, Any]]]:
        sender = FakeSender()
        reporter = make_reporter(tmp_path, None, Clock(), sender)
        reporter.tool_events_topic = "edged/kitchen-1/events/tool"
        reporter.log_arguments = log_arguments
        reporter.observe_tool(decision)
        await asyncio.gather(*reporter._pending)
        return sender.sent

    ((topic, plain),) = asyncio.run(main(False))
    assert topic == "edged/kitchen-1/events/tool"
    ev = wire(plain)
    assert_valid("tool-event", ev)
    assert_numbers_are_numbers(ev)
    assert (ev["tool"], ev["decision"], ev["rules"]) == ("unlock_door", "block", ["door.never"])
    assert "arguments" not in ev and ev["id"] == "kitchen-42" and ev["latency_us"] == 2.4
    ((_, logged),) = asyncio.run(main(True))
    assert_valid("tool-event", wire(logged)) and logged["arguments"] == "{}"
