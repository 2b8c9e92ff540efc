"""Power sources against fake sysfs trees (tests/fixtures/sysfs/<board>, see its README).

Each tree is copied into tmp_path so a test can change values, remove files or add some.
Expected numbers are worked out by hand from the fixture files (mV x mA, uJ / s, ...).
"""

from __future__ import annotations

import shutil
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest

from edged.config import PowerConfig, PowerSourceKind
from edged.errors import ConfigError
from edged.power.base import FedSource, factory, source_kinds
from edged.power.build import build_source
from edged.power.estimate import EstimateSource
from edged.power.ina3221 import Ina3221Source
from edged.power.jtop import JtopSource
from edged.power.mqtt_meter import MqttMeterSource
from edged.power.null import NullSource
from edged.power.power_supply import PowerSupplySource
from edged.power.profile import PowerFacts
from edged.power.rapl import RaplSource
from edged.power.trace import TraceError, TraceSource

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"
approx = pytest.approx


@pytest.fixture
def board(tmp_path: Path) -> Callable[[str], Path]:
    """``board(name)``: a private copy of tests/fixtures/sysfs/<name>."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(FIXTURES / name, dst)
        return dst

    return copy


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def by_name(infos: list[Any]) -> dict[str, Any]:
    return {i.name: i for i in infos}


def test_every_kind_is_registered_by_name() -> None:
    expected = {
        "ina3221": Ina3221Source,
        "power_supply": PowerSupplySource,
        "rapl": RaplSource,
        "trace": TraceSource,
        "estimate": EstimateSource,
        "null": NullSource,
        "jtop": JtopSource,
    }
    for kind, cls in expected.items():
        assert factory(kind) is cls
    assert set(expected) <= set(source_kinds())


def test_the_registry_is_the_configs_one_list_of_kinds() -> None:
    import edged.power.build  # imports every source module, so each registers its kind

    kinds = set(get_args(PowerSourceKind))
    assert set(source_kinds()) == kinds
    # the config adds "auto"; a board profile names one of the same kinds
    assert set(get_args(PowerConfig.model_fields["source"].annotation)) == kinds | {"auto"}
    assert set(get_args(PowerFacts.model_fields["source"].annotation)) == kinds
    assert edged.power.build.source_kinds() == sorted(kinds)


def test_built_by_name_through_the_registry(board: Callable[[str], Path]) -> None:
    root = board("x86-laptop")
    cfg = PowerConfig(source="rapl", sysfs_root=root)
    assert isinstance(build_source(cfg, None, root), RaplSource)
    mqtt = build_source(PowerConfig(source="mqtt", mqtt_topic="meter/w"), None, root)
    assert isinstance(mqtt, MqttMeterSource) and mqtt.topic == "meter/w"
    with pytest.raises(ConfigError, match=r"needs power\.mqtt_topic"):
        build_source(PowerConfig(source="mqtt"), None, root)
    with pytest.raises(ConfigError, match=r"needs power\.trace_file"):
        build_source(PowerConfig(source="trace"), None, root)
    with pytest.raises(ConfigError, match=r"needs a board profile with \[estimate\]"):
        build_source(PowerConfig(source="estimate"), None, root)
    with pytest.raises(KeyError, match="unknown power source 'nope'"):
        factory("nope")


# --- ina3221 ----------------------------------------------------------------------------

ORIN_NANO_W = {
    "VDD_IN": 4.984 * 1.208,
    "VDD_CPU_GPU_CV": 4.976 * 0.424,
    "VDD_SOC": 4.976 * 0.336,
}


def test_orin_nano_rails_are_volts_times_amps_and_vdd_in_is_the_total(board: Any) -> None:
    src = Ina3221Source(
        root=board("jetson-orin-nano"),
        total_rail="VDD_IN",
        rails={"VDD_IN": "total", "VDD_CPU_GPU_CV": "cpu_gpu_cv", "VDD_SOC": "soc"},
    )
    s = src.read()
    assert s.rails_w == approx(ORIN_NANO_W)  # exactly these: sum channel (in7/curr4) skipped
    assert s.total_w == approx(6.020672)
    assert s.total_reason is None
    assert not s.estimated and not src.estimated
    assert src.max_rate_hz == 100.0
    info = by_name(src.sensors())
    assert info["VDD_IN"].role == "total" and info["VDD_IN"].reading.startswith("6.02 W")
    assert info["VDD_SOC"].role == "soc"
    assert set(info) == set(ORIN_NANO_W)  # the sum channel is not a sensor, nor a problem
    assert all(i.problem is None for i in info.values())


def test_orin_nano_values_are_read_again_on_every_read(board: Any) -> None:
    root = board("jetson-orin-nano")
    src = Ina3221Source(root=root, total_rail="VDD_IN")
    hw = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    write(hw / "curr1_input", 2000)
    assert src.read().total_w == approx(4.984 * 2.0)


def test_orin_nx_is_found_through_class_hwmon_by_name(board: Any) -> None:
    src = Ina3221Source(root=board("jetson-orin-nx"), total_rail="VDD_IN")
    s = src.read()
    assert s.rails_w == approx(
        {"VDD_IN": 5.016 * 2.256, "VDD_CPU_GPU_CV": 5.008 * 0.904, "VDD_SOC": 5.008 * 0.496}
    )
    assert s.total_w == approx(5.016 * 2.256)


def test_agx_orin_total_is_the_sum_and_nc_channels_are_skipped(board: Any) -> None:
    rails = ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
    src = Ina3221Source(root=board("jetson-agx-orin"), total_sum=rails)
    s = src.read()
    expected = {
        "VDD_GPU_SOC": 19.184 * 0.312,
        "VDD_CPU_CV": 19.184 * 0.104,
        "VIN_SYS_5V0": 4.992 * 0.576,
        "VDDQ_VDD2_1V8AO": 4.992 * 0.096,
    }
    assert s.rails_w == approx(expected)  # no "NC", no "sum of shunt voltages"
    assert s.total_w == approx(5.985408 + 1.995136 + 2.875392 + 0.479232)
    assert src.rail_labels == rails


def test_agx_orin_without_a_total_says_why(board: Any) -> None:
    s = Ina3221Source(root=board("jetson-agx-orin")).read()
    assert s.total_w is None
    assert s.total_reason is not None and "total_rail or total_sum" in s.total_reason
    assert len(s.rails_w) == 4  # the rails are still reported


def test_a_total_rail_the_board_does_not_have_is_unknown_with_the_reason(board: Any) -> None:
    root = board("jetson-agx-orin")
    s = Ina3221Source(root=root, total_rail="VDD_IN").read()
    assert s.total_w is None
    assert s.total_reason is not None and "'VDD_IN' not found" in s.total_reason
    s = Ina3221Source(root=root, total_sum=["VDD_GPU_SOC", "VDD_X"]).read()
    assert s.total_w is None and s.total_reason is not None and "VDD_X" in s.total_reason


def test_xavier_nx_iio_layout_uses_the_drivers_power_in_milliwatts(board: Any) -> None:
    src = Ina3221Source(root=board("jetson-xavier-nx-iio"), total_rail="VDD_IN")
    s = src.read()
    # in_power*_input, not V x I (5.040 V x 1.376 A would be 6.935 W)
    assert s.rails_w == approx({"VDD_IN": 6.928, "VDD_CPU_GPU_CV": 2.056, "VDD_SOC": 2.177})
    assert s.total_w == approx(6.928)


def test_a_disabled_channel_is_skipped(board: Any) -> None:
    root = board("jetson-orin-nano")
    write(root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/in2_enable", 0)
    s = Ina3221Source(root=root, total_rail="VDD_IN").read()
    assert set(s.rails_w) == {"VDD_IN", "VDD_SOC"}


def test_a_vanished_rail_file_raises_oserror_and_sensors_reports_it(board: Any) -> None:
    root = board("jetson-orin-nano")
    src = Ina3221Source(root=root, total_rail="VDD_IN")
    src.read()
    (root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/curr2_input").unlink()
    with pytest.raises(OSError):
        src.read()
    info = by_name(src.sensors())
    assert info["VDD_CPU_GPU_CV"].problem is not None
    assert "curr2_input" in info["VDD_CPU_GPU_CV"].problem
    assert info["VDD_IN"].problem is None


def test_no_ina3221_under_the_root_is_unknown_with_the_reason(tmp_path: Path) -> None:
    src = Ina3221Source(root=tmp_path, total_rail="VDD_IN")
    s = src.read()
    assert s.total_w is None and s.rails_w == {}
    assert s.total_reason is not None and "no INA3221" in s.total_reason
    assert src.sensors()[0].problem is not None


# --- power_supply -----------------------------------------------------------------------

BAT = "sys/class/power_supply/BAT0"


def test_laptop_battery_discharging(board: Any) -> None:
    root = board("x86-laptop")
    s = PowerSupplySource(root=root).read()
    assert s.battery_pct == 76
    assert s.charging is False
    assert s.battery_v == approx(11.843)
    assert s.battery_w == approx(10.733)
    assert s.battery_a == approx(10.733 / 11.843)  # no current_now: derived from P / V
    assert s.time_to_empty_s == approx(38.22 / 10.733 * 3600)
    assert s.total_w is None  # the battery alone is not the board total...
    assert s.total_reason is not None and "battery only" in s.total_reason
    s = PowerSupplySource(root=root, also_total=True).read()
    assert s.total_w == approx(10.733)  # ...unless the profile says it is


def test_laptop_battery_charging_on_ac(board: Any) -> None:
    root = board("x86-laptop")
    write(root / BAT / "status", "Charging")
    write(root / "sys/class/power_supply/AC/online", 1)
    s = PowerSupplySource(root=root, also_total=True).read()
    assert s.charging is True
    assert s.battery_w == approx(-10.733)  # into the battery
    assert s.battery_a is not None and s.battery_a < 0
    assert s.time_to_empty_s is None
    assert s.total_w is None
    assert s.total_reason is not None and "external power" in s.total_reason


def test_full_battery_is_not_charging_and_has_no_time_to_empty(board: Any) -> None:
    root = board("x86-laptop")
    write(root / BAT / "status", "Full")
    write(root / BAT / "power_now", 0)
    s = PowerSupplySource(root=root).read()
    assert s.charging is False and s.time_to_empty_s is None


def charge_gauge(root: Path, status: str, current_ua: int, ac_online: int) -> None:
    """Turn BAT0 into a fuel gauge reporting current/charge instead of power/energy."""
    for name in ("power_now", "energy_now", "energy_full"):
        (root / BAT / name).unlink()
    write(root / BAT / "status", status)
    write(root / BAT / "current_now", current_ua)
    write(root / BAT / "charge_now", 3000000)
    write(root / BAT / "charge_full", 4000000)
    write(root / "sys/class/power_supply/AC/online", ac_online)


@pytest.mark.parametrize(
    ("status", "current_ua", "ac_online", "amps"),
    [
        ("Discharging", -1500000, 0, 1.5),  # ABI sign: negative while discharging
        ("Discharging", 1500000, 0, 1.5),  # drivers that report the magnitude only
        ("Charging", 1500000, 1, -1.5),
        ("Charging", -1500000, 1, -1.5),
        ("Unknown", 1500000, 0, 1.5),  # no status, but every external supply is offline
        ("Unknown", 1500000, 1, -1.5),  # no direction at all: the ABI sign
    ],
)
def test_current_sign_follows_the_status_not_the_driver(
    board: Any, status: str, current_ua: int, ac_online: int, amps: float
) -> None:
    root = board("x86-laptop")
    charge_gauge(root, status, current_ua, ac_online)
    s = PowerSupplySource(root=root).read()
    assert s.battery_a == approx(amps)
    assert s.battery_w == approx(11.843 * amps)


def test_time_to_empty_from_charge_and_current(board: Any) -> None:
    root = board("x86-laptop")
    charge_gauge(root, "Discharging", -1500000, 0)
    s = PowerSupplySource(root=root).read()
    assert s.time_to_empty_s == approx(3.0 / 1.5 * 3600)  # 3 Ah at 1.5 A
    assert s.battery_pct == 76  # capacity wins over charge_now / charge_full


def test_battery_temperature_is_in_tenths_of_a_degree(board: Any) -> None:
    root = board("x86-laptop")
    write(root / BAT / "temp", 296)
    assert PowerSupplySource(root=root).read().temps_c == {"battery": approx(29.6)}


def test_a_named_battery_that_does_not_exist(board: Any) -> None:
    s = PowerSupplySource(root=board("x86-laptop"), battery="BAT1").read()
    assert s.total_w is None and s.battery_pct is None
    assert s.total_reason is not None and "'BAT1'" in s.total_reason and "BAT0" in s.total_reason


def test_a_peripheral_battery_is_not_the_boards(board: Any) -> None:
    root = board("x86-laptop")
    shutil.rmtree(root / BAT)
    mouse = root / "sys/class/power_supply/hidpp_battery_0"
    write(mouse / "type", "Battery")
    write(mouse / "scope", "Device")
    write(mouse / "capacity", 55)
    src = PowerSupplySource(root=root)
    assert src.battery_name is None
    assert src.read().battery_pct is None


def test_board_without_battery(board: Any) -> None:
    src = PowerSupplySource(root=board("qcs6490-rb3gen2"), also_total=True)
    s = src.read()
    assert s.total_w is None and s.battery_pct is None
    assert s.total_reason is not None and "no battery" in s.total_reason
    assert src.sensors()[0].problem is not None


def test_a_vanished_battery_file_raises_oserror_and_sensors_reports_it(board: Any) -> None:
    root = board("x86-laptop")
    src = PowerSupplySource(root=root)
    (root / BAT / "power_now").unlink()
    with pytest.raises(OSError):
        src.read()
    info = by_name(src.sensors())
    assert info["BAT0"].problem is not None and "power_now" in info["BAT0"].problem
    assert info["AC"].reading == "offline"


# --- rapl -------------------------------------------------------------------------------

ZONES = "sys/class/powercap"


def add_uj(root: Path, zone: str, uj: int) -> None:
    f = root / ZONES / zone / "energy_uj"
    write(f, int(f.read_text()) + uj)


def test_rapl_first_read_has_no_power_then_power_is_energy_over_time(board: Any) -> None:
    root, clock = board("x86-laptop"), FakeClock()
    src = RaplSource(root=root, clock=clock)
    first = src.read()
    assert first.total_w is None
    assert first.total_reason is not None and "first sample" in first.total_reason
    add_uj(root, "intel-rapl:0", 15_000_000)
    add_uj(root, "intel-rapl:0:0", 6_000_000)
    add_uj(root, "intel-rapl:0:1", 750_000)
    add_uj(root, "intel-rapl:0:2", 1_500_000)
    clock.t += 1.5
    s = src.read()
    assert s.total_w == approx(10.0)
    assert s.rails_w == approx({"package-0": 10.0, "core": 4.0, "uncore": 0.5, "dram": 1.0})
    assert s.energy_j == approx(15.0)
    assert s.t_s == clock.t


def test_rapl_counter_wrap_around(board: Any) -> None:
    root, clock = board("x86-laptop"), FakeClock()
    pkg = root / ZONES / "intel-rapl:0" / "energy_uj"
    max_range = 262143328850
    write(pkg, max_range - 5_000_000)
    src = RaplSource(root=root, clock=clock)
    src.read()
    write(pkg, 7_000_000)  # below the previous value: the counter wrapped
    clock.t += 1.2
    s = src.read()
    assert s.total_w == approx(12.0 / 1.2)  # (max - prev) + now = 12 J
    assert s.energy_j == approx(12.0)


def test_rapl_only_packages_make_the_total(board: Any) -> None:
    root, clock = board("x86-laptop"), FakeClock()
    psys = root / ZONES / "intel-rapl:1"
    write(psys / "name", "psys")
    write(psys / "energy_uj", 5_000_000_000)
    write(psys / "max_energy_range_uj", 262143328850)
    src = RaplSource(root=root, clock=clock)
    src.read()
    add_uj(root, "intel-rapl:0", 8_000_000)
    add_uj(root, "intel-rapl:1", 20_000_000)
    clock.t += 2.0
    s = src.read()
    assert s.total_w == approx(4.0)
    assert s.rails_w["psys"] == approx(10.0)


def test_rapl_root_only_counters_are_a_clear_problem(
    board: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edged.power import base

    real = base.read_sysfs_str

    def root_only(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(base, "read_sysfs_str", root_only)  # the tests run as root
    src = RaplSource(root=board("x86-laptop"), clock=FakeClock())
    infos = src.sensors()
    assert len(infos) == 4
    for info in infos:
        assert info.problem is not None and "root only" in info.problem
        assert "CVE-2020-8694" in info.problem
    s = src.read()
    assert s.total_w is None
    assert s.total_reason is not None and "root only" in s.total_reason


def test_rapl_vanished_counter_raises_oserror_and_sensors_reports_it(board: Any) -> None:
    root = board("x86-laptop")
    src = RaplSource(root=root, clock=FakeClock())
    src.read()
    (root / ZONES / "intel-rapl:0:0" / "energy_uj").unlink()
    with pytest.raises(OSError):
        src.read()
    info = by_name(src.sensors())
    assert info["core"].problem is not None
    assert info["package-0"].problem is None and info["package-0"].role == "total"


def test_rapl_absent(tmp_path: Path) -> None:
    s = RaplSource(root=tmp_path).read()
    assert s.total_w is None
    assert s.total_reason is not None and "no RAPL zones" in s.total_reason


# --- trace ------------------------------------------------------------------------------


def trace_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "trace.csv"
    p.write_text(text)
    return p


def test_trace_interpolates_and_loops_from_creation(tmp_path: Path) -> None:
    # starts at t_s=10 (not 0): replay is relative to the first row; duration 3 s, 7 J a loop
    path = trace_file(tmp_path, "# bench run\nt_s,power_w\n10,2\n\n11,4\n13,0\n")
    clock = FakeClock(100.0)
    src = TraceSource(path=path, clock=clock)
    expected = [  # (seconds since creation, watts, joules since creation)
        (0.0, 2.0, 0.0),
        (0.5, 3.0, 1.25),
        (1.0, 4.0, 3.0),
        (2.0, 2.0, 6.0),
        (3.0, 2.0, 7.0),  # looped: back at the first row
        (3.5, 3.0, 8.25),
        (7.25, 3.5, 14.0 + 3.0 + 0.25 * (4.0 + 3.5) / 2),  # two loops, then 1.25 s in
    ]
    for dt, watts, joules in expected:
        clock.t = 100.0 + dt
        s = src.read()
        assert s.total_w == approx(watts), dt
        assert s.energy_j == approx(joules), dt
        assert s.t_s == clock.t
        assert s.estimated
    assert src.duration_s == 3.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty trace"),
        ("t,power\n0,1\n1,2\n", ":1: the header must be 't_s,power_w'"),
        ("t_s,power_w\n0,1\n1,abc\n", ":3: power_w 'abc' is not a number"),
        ("t_s,power_w\n0,1\nx,2\n", ":3: t_s 'x' is not a number"),
        ("t_s,power_w\n0,1\n1,nan\n", ":3: power_w 'nan' is not a finite number"),
        ("t_s,power_w\n0,1\n2,2\n1,3\n", ":4: t_s 1 is not after the previous row's 2"),
        ("t_s,power_w\n0,1\n0,2\n", ":3: t_s 0 is not after"),
        ("t_s,power_w\n0,1\n1,2,3\n", ":3: expected 2 fields"),
        ("t_s,power_w\n0,1\n1,-2\n", ":3: power_w -2.0 is negative"),
        ("t_s,power_w\n0,1\n", "at least 2 rows, got 1"),
    ],
)
def test_bad_trace_files_are_rejected_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = trace_file(tmp_path, text)
    with pytest.raises(TraceError) as err:
        TraceSource(path=path, clock=FakeClock())
    assert str(path) in str(err.value)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_the_shipped_sim_trace_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "hwprofiles" / "traces" / "sim.csv"
    if not path.is_file():
        pytest.skip("hwprofiles/traces/sim.csv is not there")
    s = TraceSource(path=path, clock=FakeClock()).read()
    assert s.total_w is not None and s.total_w > 0


# --- estimate ---------------------------------------------------------------------------

CORAL_STAT_2 = "cpu  81562 0 23715 1205330 1562 0 1039 0 100 0\n"


def test_estimate_from_two_proc_stat_snapshots(board: Any) -> None:
    root = board("coral-dev-board")
    src = EstimateSource(
        root=root,
        idle_w=2.0,
        max_w=6.0,
        temp_paths=["/sys/class/thermal/thermal_zone0/temp", "sys/class/apex/apex_0/temp"],
    )
    # +300 user (100 of it guest, already inside user), +100 system, +550 idle, +50 iowait:
    # busy 400 of 1000 ticks -> 0.4 -> 2 + 4 x 0.4
    (root / "proc/stat").write_text(CORAL_STAT_2)
    s = src.read()
    assert s.total_w == approx(3.6)
    assert s.estimated and src.estimated
    assert src.utilization == approx(0.4)
    assert s.temps_c == approx({"cpu-thermal": 47.0, "apex_0": 45.8})
    # no tick since: the last utilization stands
    assert src.read().total_w == approx(3.6)


def test_estimate_temperatures_by_name(board: Any) -> None:
    root = board("qcs6490-rb3gen2")
    src = EstimateSource(
        root=root, idle_w=3.0, max_w=9.0, temp_paths={"npu": "sys/class/thermal/thermal_zone2/temp"}
    )
    assert src.read().temps_c == approx({"npu": 45.3})
    listed = EstimateSource(
        root=root,
        idle_w=3.0,
        max_w=9.0,
        temp_paths=[f"sys/class/thermal/thermal_zone{i}/temp" for i in range(3)],
    )
    assert listed.read().temps_c == approx(
        {"cpu0-thermal": 48.5, "gpuss0-thermal": 44.1, "nspss0-thermal": 45.3}
    )


def test_estimate_vanished_temperature_raises_oserror_and_sensors_reports_it(
    board: Any,
) -> None:
    root = board("coral-dev-board")
    src = EstimateSource(
        root=root, idle_w=2.0, max_w=6.0, temp_paths=["sys/class/apex/apex_0/temp"]
    )
    (root / "sys/class/apex/apex_0/temp").unlink()
    with pytest.raises(OSError):
        src.read()
    info = by_name(src.sensors())
    assert info["apex_0"].problem is not None
    assert info["cpu"].problem is None


def test_estimate_rejects_a_model_that_makes_no_sense(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_w"):
        EstimateSource(root=tmp_path, idle_w=5.0, max_w=2.0)
    with pytest.raises(ValueError):
        EstimateSource(root=tmp_path, idle_w=-1.0, max_w=2.0)


# --- null and jtop ----------------------------------------------------------------------


def test_null_source() -> None:
    src = NullSource()
    s = src.read()
    assert s.total_w is None and s.total_reason == "no power source configured"
    assert src.sensors() == []


def test_jtop_without_jetson_stats_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jtop", None)  # makes `import jtop` fail
    with pytest.raises(ImportError, match=r"install edged\[jetson\] \(jetson-stats, AGPL-3.0\)"):
        JtopSource()


def test_jtop_power_dict_is_converted_from_milliwatts(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeJtop:  # the documented shape of jtop's ``power`` attribute
        def __init__(self, interval: float) -> None:
            self.interval = interval
            self.closed = False
            self.power = {
                "rail": {
                    "VDD_GPU_SOC": {"volt": 19184, "curr": 312, "power": 5985, "online": True},
                    "NC": {"power": 0, "online": False},
                },
                "tot": {"power": 11335, "name": "ALL"},
            }

        def start(self) -> None:
            pass

        def is_alive(self) -> bool:
            return not self.closed

        def close(self) -> None:
            self.closed = True

    fake = types.ModuleType("jtop")
    fake.jtop = FakeJtop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jtop", fake)
    src = JtopSource(interval_s=0.25)
    assert src.max_rate_hz == 4.0
    s = src.read()
    assert s.total_w == approx(11.335)
    assert s.rails_w == approx({"VDD_GPU_SOC": 5.985})
    src.close()
    with pytest.raises(OSError):
        src.read()


def test_mqtt_meter_parses_common_payloads_and_goes_stale() -> None:
    from edged.power.mqtt_meter import MqttMeterSource, parse_watts

    assert parse_watts(b"4.93") == 4.93
    assert parse_watts(b'{"power_w": 12}') == 12.0
    assert parse_watts(b'{"ENERGY": {"Power": 7.5, "Voltage": 230}}') == 7.5  # Tasmota
    assert parse_watts(b'{"apower": 3.25}') == 3.25  # Shelly
    for bad in (b"on", b'{"state": "ON"}', b"true", b"-5", b"\xff"):
        with pytest.raises((ValueError, UnicodeDecodeError)):
            parse_watts(bad)
    now = [100.0]
    src = MqttMeterSource(topic="plug/1/power", stale_s=10, clock=lambda: now[0])
    with pytest.raises(OSError, match="no reading"):
        src.read()
    src.feed(b"garbage")
    assert src.bad_messages == 1 and "no reading" not in (src.sensors()[0].problem or "x")
    src.feed(b'{"power": 6.5}')
    assert src.read().total_w == 6.5
    now[0] = 111.0
    with pytest.raises(OSError, match="silent"):
        src.read()


def test_only_the_mqtt_meter_is_fed_messages(tmp_path: Path) -> None:
    # the app hands power.mqtt_topic's messages to a source that is a FedSource, and only
    # to such a source (no attribute probing)
    assert isinstance(MqttMeterSource(topic="meter/x", root=tmp_path), FedSource)
    assert not isinstance(NullSource(), FedSource)
