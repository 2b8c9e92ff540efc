"""The Jetson power mode (nvpmodel) from fake trees: into the power sample, telemetry, the
router's power state and its policy; edged bench's per-mode figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edged.config import Config, PolicyConfig, PowerConfig, TelemetryConfig
from edged.figures import DeviceFigures, load_figures, write_figures
from edged.power.base import PowerSample
from edged.power.build import build_source
from edged.power.nvpmodel import (
    CONF,
    STATUS,
    PowerModeReader,
    parse_conf,
    parse_status,
    reader_for,
)
from edged.power.profile import load_profiles
from edged.router.policy import RouteInputs, RouterState, decide
from edged.telemetry.reporter import power_mode
from edged.types import CLOUD, LOCAL, PowerState

ROOT = Path(__file__).resolve().parents[2]
SYSFS = ROOT / "tests" / "fixtures" / "sysfs"
SUPER = SYSFS / "jetson-orin-nano-super"
PROFILES = load_profiles(ROOT / "hwprofiles")
NANO = PROFILES["jetson-orin-nano"]
WATTS = [(m.name, m.watts) for m in NANO.power_modes]


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """An Orin Nano Super: the rails tree with the power-mode files over it."""
    root = tmp_path / "root"
    shutil.copytree(SYSFS / "jetson-orin-nano", root)
    shutil.copytree(SUPER, root, dirs_exist_ok=True)
    return root


def test_parse_the_documented_formats() -> None:
    modes, default = parse_conf((SUPER / CONF).read_text())
    assert modes == {0: "15W", 1: "25W", 2: "MAXN_SUPER", 3: "7W"} and default == 2
    assert parse_status("pmode:0002\n") == 2
    assert parse_status("pmode:0001 fmode:quiet") == 1
    assert parse_status("garbage") is None
    # section headers must start the line; a commented one does not count
    assert parse_conf("# < POWER_MODEL ID=9 NAME=X >\n") == ({}, None)


def test_the_mode_its_budget_and_the_clocks(board: Path) -> None:
    m = PowerModeReader(board, watts=dict(WATTS), gpu_devfreq=NANO.accel.gpu_devfreq).read()
    assert (m.id, m.name, m.watts, m.source, m.reason) == (1, "25W", 25, "status", None)
    assert m.clocks_mhz == {"gpu": 918.0, "cpu0": 1344.0}


def test_without_a_status_file_the_boot_default(board: Path) -> None:
    (board / STATUS).unlink()
    m = PowerModeReader(board, watts=dict(WATTS)).read()
    assert (m.id, m.name, m.source) == (2, "MAXN_SUPER", "default")
    assert m.watts is None  # MAXN_SUPER has no cap
    assert m.clocks_mhz == {"cpu0": 1344.0}  # no GPU devfreq names given


def test_an_unknown_mode_id_is_null_with_a_reason(board: Path) -> None:
    (board / STATUS).write_text("pmode:0007\n")
    m = PowerModeReader(board).read()
    assert m.id == 7 and m.name is None and m.reason is not None and "not defined" in m.reason


def test_the_reader_caches_for_refresh_s(board: Path) -> None:
    now = [0.0]
    reader = PowerModeReader(board, refresh_s=5.0, clock=lambda: now[0])
    assert reader.read().name == "25W"
    (board / STATUS).write_text("pmode:0003\n")  # someone ran nvpmodel -m 3
    now[0] = 4.0
    assert reader.read().name == "25W"
    now[0] = 5.0
    assert reader.read().name == "7W"


def test_no_reader_without_modes_or_configuration(board: Path, tmp_path: Path) -> None:
    assert reader_for(board, [], ()) is None
    assert reader_for(SYSFS / "jetson-orin-nano", WATTS, ()) is None  # no nvpmodel.conf
    assert reader_for(board, WATTS, ()) is not None


def test_the_power_sample_carries_the_mode(board: Path) -> None:
    cfg = PowerConfig(sysfs_root=board)
    source = build_source(cfg, NANO, board)
    s = source.read()
    assert s.total_w is not None  # the rails are read as before
    assert s.power_mode is not None and s.power_mode.name == "25W"
    names = {i.name: i for i in source.sensors()}
    assert names["power mode"].reading is not None
    assert "25W" in names["power mode"].reading and "gpu 918 MHz" in names["power mode"].reading
    # the tree without nvpmodel files: no mode
    plain = build_source(cfg, NANO, SYSFS / "jetson-orin-nano").read()
    assert plain.power_mode is None


def test_telemetry_power_mode(board: Path) -> None:
    s = build_source(PowerConfig(sysfs_root=board), NANO, board).read()
    assert power_mode(s) == {
        "id": 1,
        "name": "25W",
        "watts": 25,
        "source": "status",
        "clocks_mhz": {"gpu": 918.0, "cpu0": 1344.0},
        "reason": None,
    }
    none = power_mode(PowerSample(t_s=0.0, total_w=1.0))
    assert none["name"] is None and none["reason"] == "no power modes on this board"
    assert power_mode(None)["reason"] == "no power reading yet"


def inputs(mode: str | None) -> RouteInputs:
    return RouteInputs(
        power=PowerState(power_mode=mode, reason=None), cloud_configured=True, cloud_ok=True
    )


def test_a_policy_prefers_the_cloud_in_a_named_mode() -> None:
    policy = PolicyConfig(prefer="local", prefer_by_mode={"7W": "cloud"})
    assert decide(inputs("7W"), policy, RouterState())[0].backend == CLOUD
    assert decide(inputs("25W"), policy, RouterState())[0].backend == LOCAL
    assert decide(inputs(None), policy, RouterState())[0].backend == LOCAL
    route = decide(inputs("7W"), policy, RouterState())[0]
    assert route.reasons == ("policy",)
    # and local in a named mode where the policy otherwise prefers the cloud
    cloudy = PolicyConfig(prefer="cloud", prefer_by_mode={"MAXN_SUPER": "local"})
    assert decide(inputs("MAXN_SUPER"), cloudy, RouterState())[0].backend == LOCAL
    assert decide(inputs("15W"), cloudy, RouterState())[0].backend == CLOUD
    # a private request stays whatever the mode says
    pinned = RouteInputs(power=PowerState(power_mode="7W"), pinned=True, cloud_configured=True)
    assert decide(pinned, policy, RouterState())[0].backend == LOCAL


def figures(mode: str | None, jpt: float | None, t: float) -> DeviceFigures:
    return DeviceFigures(
        model="smollm2-135m-instruct",
        tokens_per_s=100.0,
        ttft_s=0.05,
        j_per_token=jpt,
        power_source="ina3221",
        estimated=False,
        runs=4,
        measured_unix_s=t,
        power_mode=mode,
    )


def test_bench_figures_are_kept_per_mode(tmp_path: Path) -> None:
    cfg = Config(telemetry=TelemetryConfig(state_dir=tmp_path))
    write_figures(cfg, figures("25W", 0.05, 1.0))
    write_figures(cfg, figures("7W", 0.04, 2.0))
    stored = load_figures(cfg)
    assert stored is not None and stored.power_mode == "7W"
    assert set(stored.by_mode) == {"25W", "7W"}
    assert stored.by_mode["25W"]["tokens_per_j"] == 20.0
    assert stored.by_mode["7W"]["j_per_token"] == 0.04
    write_figures(cfg, figures(None, None, 3.0))  # a board without modes adds no entry
    again = load_figures(cfg)
    assert again is not None and set(again.by_mode) == {"25W", "7W"}


def test_edged_status_shows_the_mode() -> None:
    from edged.cli.observe import telemetry_lines

    mode = {"id": 1, "name": "25W", "watts": 25, "clocks_mhz": {"gpu": 918.0}, "reason": None}
    lines = dict(telemetry_lines({"power_mode": mode}))
    assert lines["power mode"] == "25W (id 1); gpu 918.0 MHz"
    none = {"id": None, "name": None, "clocks_mhz": {}, "reason": "no power modes on this board"}
    assert "power mode" not in dict(telemetry_lines({"power_mode": none}))
