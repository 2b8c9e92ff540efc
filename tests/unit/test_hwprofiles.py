"""Board profiles: every shipped profile loads, each fake sysfs tree is detected as its board,
and build_source turns a profile into the right source with the fixture's numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edged.config import PowerConfig
from edged.errors import ConfigError
from edged.power.build import build_source, source_kind
from edged.power.detect import detect, detect_reason, select_profile
from edged.power.profile import HwProfile, load_profile, load_profiles

ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = ROOT / "hwprofiles"
SYSFS = ROOT / "tests" / "fixtures" / "sysfs"

#: fake tree -> the profile it must be detected as
BOARDS = {
    "jetson-orin-nano": "jetson-orin-nano",
    "jetson-orin-nx": "jetson-orin-nx",
    "jetson-agx-orin": "jetson-agx-orin",
    "jetson-xavier-nx-iio": "jetson-xavier-nx",
    "coral-dev-board": "coral-dev-board",
    "qcs6490-rb3gen2": "qcs6490-rb3gen2",
    "x86-laptop": "x86-generic",
}

#: the board total each tree's files give, computed by hand (mV x mA, or the iio mW)
TOTAL_W = {
    "jetson-orin-nano": 4.984 * 1.208,  # VDD_IN
    "jetson-orin-nx": 5.016 * 2.256,  # VDD_IN, through /sys/class/hwmon
    # no VDD_IN: VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 + VDDQ_VDD2_1V8AO
    "jetson-agx-orin": 19.184 * 0.312 + 19.184 * 0.104 + 4.992 * 0.576 + 4.992 * 0.096,
    "jetson-xavier-nx-iio": 6.928,  # in_power0_input, the driver's own reading
}


@pytest.fixture(scope="module")
def profiles() -> dict[str, HwProfile]:
    return load_profiles(PROFILES_DIR)


def copy_tree(board: str, tmp_path: Path) -> Path:
    dst = tmp_path / board
    shutil.copytree(SYSFS / board, dst, symlinks=True)
    return dst


def add_zone(root: Path, n: int, kind: str, milli_c: int) -> None:
    z = root / "sys" / "class" / "thermal" / f"thermal_zone{n}"
    z.mkdir(parents=True, exist_ok=True)
    (z / "type").write_text(f"{kind}\n")
    (z / "temp").write_text(f"{milli_c}\n")


# --- loading ------------------------------------------------------------------------------


def test_every_shipped_profile_loads(profiles: dict[str, HwProfile]) -> None:
    assert set(profiles) >= {
        "jetson-orin-nano",
        "jetson-orin-nx",
        "jetson-agx-orin",
        "coral-dev-board",
        "qcs6490-rb3gen2",
        "x86-generic",
        "sim",
    }
    for name, p in profiles.items():
        assert p.path == PROFILES_DIR / f"{name}.toml"
        assert p.description


@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_profile_names_its_sources(path: Path) -> None:
    text = path.read_text()
    assert "Sources (public)" in text or "synthetic" in text, path.name


def test_unknown_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    src = (PROFILES_DIR / "jetson-orin-nano.toml").read_text()
    bad = tmp_path / "jetson-orin-nano.toml"
    bad.write_text(src.replace("[power.ina3221]", "[power.ina3221]\nbogus_key = 1"))
    with pytest.raises(ConfigError) as e:
        load_profiles(tmp_path)
    assert str(bad) in str(e.value)
    assert "power.ina3221.bogus_key: unknown key" in str(e.value)


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "board.toml"
    bad.write_text(
        'name = "board"\ndescription = "x"\n[power]\nsource = "ina3221"\nsample_hz = 0\n'
        "[power.ina3221]\n[power.rails]\nVDD_IN = 'bogus-role'\n"
    )
    with pytest.raises(ConfigError) as e:
        load_profile(bad)
    msg = str(e.value)
    assert f"{bad}: power.sample_hz:" in msg
    assert f"{bad}: power.rails.VDD_IN:" in msg


def test_name_must_match_the_file(tmp_path: Path) -> None:
    p = tmp_path / "other.toml"
    p.write_text((PROFILES_DIR / "sim.toml").read_text())
    with pytest.raises(ConfigError, match="must match the file name"):
        load_profile(p)


def test_total_rail_must_be_a_listed_rail(tmp_path: Path) -> None:
    src = (PROFILES_DIR / "jetson-orin-nano.toml").read_text()
    p = tmp_path / "jetson-orin-nano.toml"
    p.write_text(src.replace('total_rail = "VDD_IN"', 'total_rail = "VDD_NOPE"'))
    with pytest.raises(ConfigError, match=r"power: .*VDD_NOPE"):
        load_profile(p)


def test_sim_trace_is_a_minute_of_idle_and_bursts(profiles: dict[str, HwProfile]) -> None:
    sim = profiles["sim"]
    assert sim.power.trace is not None
    lines = (PROFILES_DIR / sim.power.trace).read_text().splitlines()
    assert lines[0] == "t_s,power_w"
    rows = [tuple(map(float, line.split(","))) for line in lines[1:]]
    assert rows[0][0] == 0.0 and 55.0 <= rows[-1][0] <= 65.0
    watts = sorted(w for _, w in rows)
    assert 2.5 < watts[len(watts) // 4] < 3.5  # mostly idle around 3 W
    assert 7.5 < watts[-len(watts) // 20] < 9.5  # bursts around 8 W


# --- detection ----------------------------------------------------------------------------


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_each_fake_tree_is_detected_as_its_board(
    board: str, profiles: dict[str, HwProfile]
) -> None:
    found = detect_reason(SYSFS / board, profiles)
    assert found is not None, board
    assert found.profile.name == BOARDS[board]
    assert detect(SYSFS / board, profiles) is found.profile
    expected_rule = "dmi_any" if board == "x86-laptop" else "compatible"
    assert found.rule == expected_rule, found.reason


def test_nothing_detected_on_an_empty_root(tmp_path: Path, profiles: dict[str, HwProfile]) -> None:
    assert detect(tmp_path, profiles) is None


def test_sim_is_never_detected(tmp_path: Path, profiles: dict[str, HwProfile]) -> None:
    assert profiles["sim"].detect.empty
    only_sim = {"sim": profiles["sim"]}
    for board in BOARDS:
        assert detect(SYSFS / board, only_sim) is None


def test_model_string_alone_detects_and_nx_is_not_orin_nx(
    tmp_path: Path, profiles: dict[str, HwProfile]
) -> None:
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super\0")
    found = detect_reason(tmp_path, profiles)
    assert found is not None and found.profile.name == "jetson-orin-nx"
    assert found.rule == "model"
    (dt / "model").write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit (SD-card)\0")
    assert detect(tmp_path, profiles) == profiles["jetson-xavier-nx"]


def test_device_tree_beats_dmi(tmp_path: Path, profiles: dict[str, HwProfile]) -> None:
    root = copy_tree("jetson-orin-nano", tmp_path)
    dmi = root / "sys" / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("NVIDIA\n")
    found = detect_reason(root, profiles)
    assert found is not None and found.profile.name == "jetson-orin-nano"


def test_configured_profile_wins_and_unknown_names_fail(profiles: dict[str, HwProfile]) -> None:
    cfg = PowerConfig(profile="sim", sysfs_root=SYSFS / "jetson-orin-nano")
    found = select_profile(cfg, profiles)
    assert found is not None and found.profile.name == "sim" and found.rule == "configured"
    with pytest.raises(ConfigError, match="no board profile 'nope'"):
        select_profile(PowerConfig(profile="nope"), profiles)


# --- building sources ---------------------------------------------------------------------


@pytest.mark.parametrize("board", sorted(TOTAL_W))
def test_rails_give_the_fixture_total(board: str, profiles: dict[str, HwProfile]) -> None:
    root = SYSFS / board
    profile = detect(root, profiles)
    src = build_source(PowerConfig(), profile, root)
    try:
        assert src.name == "ina3221" and not src.estimated
        s = src.read()
        assert s.total_w == pytest.approx(TOTAL_W[board], rel=1e-9), s.total_reason
        assert s.total_reason is None
        roles = {i.name: i.role for i in src.sensors() if i.problem is None}
        assert profile is not None
        for label, role in profile.power.rails.items():
            assert roles[label] == role
    finally:
        src.close()


def test_agx_orin_total_is_the_sum_of_its_rails(profiles: dict[str, HwProfile]) -> None:
    root = SYSFS / "jetson-agx-orin"
    profile = profiles["jetson-agx-orin"]
    assert profile.power.total_rail is None
    assert profile.power.total_sum is not None
    src = build_source(PowerConfig(), profile, root)
    s = src.read()
    assert "VDD_IN" not in s.rails_w
    assert set(s.rails_w) == set(profile.power.total_sum)  # the NC channels are skipped
    assert s.total_w == pytest.approx(sum(s.rails_w.values()))


def test_coral_is_estimated_with_the_edge_tpu_temperature(
    tmp_path: Path, profiles: dict[str, HwProfile]
) -> None:
    root = copy_tree("coral-dev-board", tmp_path)
    profile = detect(root, profiles)
    assert profile is not None and profile.name == "coral-dev-board"
    assert source_kind(PowerConfig(), profile) == "estimate"
    src = build_source(PowerConfig(), profile, root)
    assert src.name == "estimate" and src.estimated
    # the CPU was half busy since the source took its first /proc/stat snapshot
    stat = root / "proc" / "stat"
    f = stat.read_text().splitlines()[0].split()
    f[1] = str(int(f[1]) + 400)  # user ticks
    f[4] = str(int(f[4]) + 400)  # idle ticks
    stat.write_text(" ".join(f) + "\n")
    s = src.read()
    assert s.estimated
    assert profile.estimate is not None
    assert s.total_w == pytest.approx(
        profile.estimate.idle_w + 0.5 * (profile.estimate.max_w - profile.estimate.idle_w)
    )
    assert s.temps_c["edgetpu"] == pytest.approx(45.8)
    assert s.temps_c["cpu-thermal"] == pytest.approx(47.0)
    assert s.throttled is False  # 45.8 C, the Edge TPU slows down from 85 C
    (root / "sys/class/apex/apex_0/temp").write_text("86000\n")
    assert src.read().throttled is True


def test_config_idle_w_overrides_the_profile(
    tmp_path: Path, profiles: dict[str, HwProfile]
) -> None:
    root = copy_tree("coral-dev-board", tmp_path)
    src = build_source(PowerConfig(idle_w=1.5), profiles["coral-dev-board"], root)
    assert "1.5" in " ".join(i.reading or "" for i in src.sensors())


def test_sim_replays_the_bundled_trace(profiles: dict[str, HwProfile], tmp_path: Path) -> None:
    src = build_source(PowerConfig(profile="sim"), profiles["sim"], tmp_path)
    assert src.name == "trace"
    s = src.read()
    assert s.total_w is not None and 2.5 < s.total_w < 9.5
    # power.trace_file replaces the bundled trace
    trace = tmp_path / "flat.csv"
    trace.write_text("t_s,power_w\n0,5.0\n1,5.0\n2,5.0\n")
    src = build_source(PowerConfig(trace_file=trace), profiles["sim"], tmp_path)
    assert src.read().total_w == pytest.approx(5.0)


def test_x86_reads_rapl_and_the_battery(tmp_path: Path, profiles: dict[str, HwProfile]) -> None:
    root = copy_tree("x86-laptop", tmp_path)
    src = build_source(PowerConfig(), detect(root, profiles), root)
    assert src.name == "rapl"
    first = src.read()
    assert first.total_w is None and first.total_reason  # counters need two reads
    assert first.battery_pct == 76 and first.charging is False
    pkg = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    pkg.write_text(str(int(pkg.read_text()) + 1_000_000) + "\n")  # +1 J
    second = src.read()
    assert second.total_w is not None and second.total_w > 0
    assert second.battery_pct == 76
    names = {i.name for i in src.sensors()}
    assert {"package-0", "BAT0"} <= names


def test_jetson_throttling_from_tj_thermal(tmp_path: Path, profiles: dict[str, HwProfile]) -> None:
    root = copy_tree("jetson-orin-nano", tmp_path)
    profile = profiles["jetson-orin-nano"]
    assert build_source(PowerConfig(), profile, root).read().throttled is None  # no zones
    add_zone(root, 0, "cpu-thermal", 61000)
    add_zone(root, 1, "tj-thermal", 62500)
    s = build_source(PowerConfig(), profile, root).read()
    assert s.temps_c == {"cpu-thermal": 61.0, "tj-thermal": 62.5}
    assert s.throttled is False
    add_zone(root, 1, "tj-thermal", 99500)
    assert build_source(PowerConfig(), profile, root).read().throttled is True


def test_kind_comes_from_the_config_then_the_profile_then_null(
    profiles: dict[str, HwProfile],
) -> None:
    root = SYSFS / "jetson-orin-nano"
    nano = profiles["jetson-orin-nano"]
    assert build_source(PowerConfig(source="null"), nano, root).name == "null"
    assert build_source(PowerConfig(), None, root).name == "null"
    assert source_kind(PowerConfig(), nano) == "ina3221"
    # an explicit kind without a profile still works where the source can find its sensors
    src = build_source(PowerConfig(source="ina3221"), None, root)
    s = src.read()
    assert s.total_w is None and "no total configured" in (s.total_reason or "")


def test_kinds_that_need_profile_facts_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="estimate"):
        build_source(PowerConfig(source="estimate"), None, tmp_path)
    with pytest.raises(ConfigError, match="trace_file"):
        build_source(PowerConfig(source="trace"), None, tmp_path)
