"""``power.reason`` and ``energy.reason`` when the power source cannot be built: they say
whether a source was configured at all (a fresh x86 machine configures none; its detected
board profile suggests RAPL, which may be missing)."""

from __future__ import annotations

from pathlib import Path

from edged.app import App
from edged.config import Config, PowerConfig
from edged.power.build import unavailable_reason
from edged.power.profile import load_profiles
from edged.telemetry.reporter import EnergyCounter, Reporter
from tests.helpers import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "sysfs" / "x86-laptop"


def profiles(tmp_path: Path) -> Path:
    """The x86-generic profile (any machine with DMI), made to suggest a source that
    cannot be built there (an external MQTT meter, with no meter topic configured)."""
    d = tmp_path / "profiles"
    d.mkdir()
    text = (ROOT / "hwprofiles" / "x86-generic.toml").read_text()
    assert 'source = "rapl"' in text
    (d / "x86-generic.toml").write_text(text.replace('source = "rapl"', 'source = "mqtt"'))
    return d


def app(tmp_path: Path, **power: str) -> App:
    return App(
        Config.model_validate(
            {
                "device_id": "kitchen-1",
                "local": {"backend": "fake"},
                "power": {
                    "profiles_dir": str(profiles(tmp_path)),
                    "sysfs_root": str(FIXTURE),
                    **power,
                },
                "telemetry": {
                    "spool_dir": str(tmp_path / "spool"),
                    "state_dir": str(tmp_path / "state"),
                },
            }
        )
    )


def test_no_source_configured_and_the_suggested_one_failing_says_so(tmp_path: Path) -> None:
    sampler = app(tmp_path)._build_sampler()
    assert sampler.source.name == "null"
    reason = sampler.source.read().total_reason
    assert reason is not None
    assert reason.startswith(
        "no power source configured (the detected board profile "
        "x86-generic suggests mqtt, which failed: "
    )
    assert "power source failed" not in reason
    reporter = Reporter(
        device_id="kitchen-1",
        telemetry_topic="t",
        events_topic="e",
        sender=None,  # type: ignore[arg-type]
        sampler=sampler,
        counter=EnergyCounter(tmp_path / "energy.json"),
        interval_s=10,
    )
    energy = reporter.snapshot()["energy"]
    assert energy == {"total_j": None, "idle_w": None, "reason": reason}


def test_a_configured_source_that_fails_is_named(tmp_path: Path) -> None:
    sampler = app(tmp_path, source="mqtt")._build_sampler()
    reason = sampler.source.read().total_reason
    assert reason is not None and reason.startswith("power source mqtt failed: ")


def test_unavailable_reason_cases() -> None:
    profiles = load_profiles(ROOT / "hwprofiles")
    x86 = profiles["x86-generic"]
    err = OSError("no /sys/class/powercap")
    auto = PowerConfig()
    assert unavailable_reason(auto, x86, err) == (
        "no power source configured (the detected board profile x86-generic suggests rapl, "
        "which failed: no /sys/class/powercap)"
    )
    assert unavailable_reason(auto, None, err).startswith("no power source configured (")
    named = PowerConfig(profile="x86-generic")
    assert unavailable_reason(named, x86, err).startswith(
        "power source rapl of board profile x86-generic failed"
    )
    assert unavailable_reason(PowerConfig(profile="nope"), None, err).startswith(
        "board profile nope unusable"
    )
    assert unavailable_reason(PowerConfig(source="ina3221"), x86, err).startswith(
        "power source ina3221 failed: "
    )
