"""edged.service.install (and .layout): files, modes, no overwrite, a config that loads with
the paths."""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edged.config import load_config
from edged.guardian.rules import load_packs
from edged.models import load_manifest
from edged.power.profile import load_profiles
from edged.router.router import load_policies
from edged.service import install, layout

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]

GOOD = b"a small model file that verifies\n"
BAD = b"this file does not match its sha256\n"


def _entry(name: str, file: str, content: bytes) -> str:
    return f"""
[[model]]
name = "{name}"
file = "{file}"
sha256 = "{hashlib.sha256(content).hexdigest()}"
size_bytes = {len(content)}
kind = "chat"
license = "Apache-2.0"
source = {{ package = "x", version = "1", member = "x/{file}" }}
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The repository's unit, configs and profiles, with a small models/ directory: one
    model that verifies, one whose bytes are wrong, one absent."""
    src = tmp_path / "src"
    for rel in ("systemd", "configs", "hwprofiles"):
        shutil.copytree(REPO / rel, src / rel)
    (src / "docs").mkdir()
    shutil.copy(REPO / "docs" / "service.md", src / "docs" / "service.md")
    models = src / "models"
    models.mkdir()
    (models / "manifest.toml").write_text(
        _entry("good", "good.gguf", GOOD)
        + _entry("corrupt", "corrupt.gguf", BAD + b"!")
        + _entry("absent", "absent.gguf", GOOD)
    )
    (models / "good.gguf").write_bytes(GOOD)
    (models / "corrupt.gguf").write_bytes(BAD + b"?")
    return src


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def under(prefix: Path, path: Path | str) -> Path:
    return prefix / str(path).lstrip("/")


def test_install_lays_out_every_file_with_its_mode(source: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    lines = install.install_service(prefix, source_dir=source, dry_run=False)

    unit = prefix / "etc/systemd/system/edged.service"
    assert unit.read_bytes() == (REPO / "systemd/edged.service").read_bytes()
    assert mode(unit) == 0o644
    cfg = prefix / "etc/edged/edged.toml"
    assert mode(cfg) == 0o644
    for rel in (
        "guardian/default.toml",
        "guardian/examples/regex.toml",
        "policies/voice-agent.toml",
        "hwprofiles/jetson-orin-nano.toml",
        "hwprofiles/traces/sim.csv",
    ):
        assert (prefix / "etc/edged" / rel).is_file(), rel
        assert mode(prefix / "etc/edged" / rel) == 0o644
    creds = prefix / "etc/edged/credentials"
    assert mode(creds) == 0o700
    for name in ("mqtt-password", "cloud-api-key"):
        assert (creds / name).read_bytes() == b""
        assert mode(creds / name) == 0o600
    defaults = prefix / "etc/default/edged"
    assert mode(defaults) == 0o600
    assert all(
        line.startswith("#") or not line.strip() for line in defaults.read_text().splitlines()
    )
    models = prefix / "opt/edged/models"
    assert (models / "good.gguf").read_bytes() == GOOD
    assert mode(models / "good.gguf") == 0o644
    assert not (models / "corrupt.gguf").exists()  # never install a file that fails its hash
    assert not (models / "absent.gguf").exists()
    assert (models / "manifest.toml").is_file()
    assert (prefix / "opt/edged/docs/service.md").is_file()
    assert not list(prefix.rglob(".*.*"))  # no temporary files left behind

    assert lines[-1] == "next: systemctl daemon-reload && systemctl enable --now edged"
    text = "\n".join(lines)
    assert "skip model corrupt" in text and "wrong_sha256" in text
    assert "model absent is not installed" in text
    assert "model good is not installed" not in text


def test_installed_config_validates_and_points_into_the_layout(
    source: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "root"
    install.install_service(prefix, source_dir=source, dry_run=False)
    cfg = load_config(prefix / "etc/edged/edged.toml", environ={})

    assert cfg.models.dir == Path("/opt/edged/models")
    assert cfg.models.manifest == Path("/opt/edged/models/manifest.toml")
    assert cfg.router.policy_dir == Path("/etc/edged/policies")
    assert cfg.power.profiles_dir == Path("/etc/edged/hwprofiles")
    assert cfg.guardian.packs == [Path("/etc/edged/guardian/default.toml")]
    assert cfg.telemetry.spool_dir == Path("/var/lib/edged/spool")
    assert cfg.telemetry.state_dir == Path("/var/lib/edged/state")

    # Everything the daemon reads at start is where the config says, once the prefix is "/".
    load_manifest(under(prefix, cfg.models.manifest))
    assert load_packs([under(prefix, p) for p in cfg.guardian.packs])
    routing = cfg.router.model_copy(update={"policy_dir": under(prefix, cfg.router.policy_dir)})
    assert {"voice-agent", "content-pipeline", "battery-saver"} <= set(load_policies(routing))
    assert "jetson-orin-nano" in load_profiles(under(prefix, cfg.power.profiles_dir))

    # The same keys as the source config otherwise.
    src = tomllib.loads((source / "configs/edged.toml").read_text())
    ours = tomllib.loads((prefix / "etc/edged/edged.toml").read_text())
    assert ours["local"] == src["local"]
    assert ours["mqtt"] == src["mqtt"]


def test_the_unit_and_the_installed_config_agree(source: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    install.install_service(prefix, source_dir=source, dry_run=False)
    unit = (prefix / "etc/systemd/system/edged.service").read_text()
    assert f"ExecStart={layout.VENV}/bin/edged run --config {layout.CONFIG}" in unit
    assert "WorkingDirectory=%S/edged" in unit and "StateDirectory=edged" in unit
    for name in layout.CREDENTIAL_NAMES:
        assert f"LoadCredential={name}:{layout.CREDENTIALS}/{name}" in unit
    assert f"EnvironmentFile=-{layout.DEFAULTS_FILE}" in unit
    assert "Environment=EDGED_TELEMETRY__SPOOL_DIR=%S/edged/spool" in unit
    assert "Environment=EDGED_TELEMETRY__STATE_DIR=%S/edged/state" in unit


def test_an_existing_config_is_never_overwritten(source: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    cfg = prefix / "etc/edged/edged.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('device_id = "mine"\n')
    cfg.chmod(0o640)
    lines = install.install_service(prefix, source_dir=source, dry_run=False)
    assert cfg.read_text() == 'device_id = "mine"\n'
    assert mode(cfg) == 0o640
    assert any(line.startswith("kept /etc/edged/edged.toml") for line in lines)
    dist = prefix / "etc/edged/edged.toml.dist"
    assert load_config(dist, environ={}).models.dir == Path("/opt/edged/models")


def test_changed_data_files_and_secrets_are_kept(source: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    install.install_service(prefix, source_dir=source, dry_run=False)
    pack = prefix / "etc/edged/guardian/default.toml"
    pack.write_text(pack.read_text() + "\n# local change\n")
    secret = prefix / "etc/edged/credentials/mqtt-password"
    secret.write_text("hunter2\n")
    (prefix / "etc/edged/credentials").chmod(0o755)  # someone loosened it
    defaults = prefix / "etc/default/edged"
    defaults.write_text("EDGED_DEVICE_ID=kitchen-1\n")

    lines = install.install_service(prefix, source_dir=source, dry_run=False)
    assert pack.read_text().endswith("# local change\n")
    assert (prefix / "etc/edged/guardian/default.toml.dist").read_bytes() == (
        source / "configs/guardian/default.toml"
    ).read_bytes()
    assert secret.read_text() == "hunter2\n"
    assert mode(prefix / "etc/edged/credentials") == 0o700
    assert defaults.read_text() == "EDGED_DEVICE_ID=kitchen-1\n"
    # unchanged files and verified models are not touched again
    assert not any("install /opt/edged/models/good.gguf" in line for line in lines)
    assert not any("policies/voice-agent.toml" in line for line in lines)


def test_dry_run_writes_nothing(source: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    lines = install.install_service(prefix, source_dir=source, dry_run=True)
    assert not prefix.exists()
    assert all(line.startswith("(dry run) ") for line in lines)
    assert any("install /etc/edged/edged.toml" in line for line in lines)
    assert any("install /opt/edged/models/good.gguf" in line for line in lines)
    assert lines[-1].endswith("next: systemctl daemon-reload && systemctl enable --now edged")


def test_lines_are_printed(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = install.install_service(tmp_path / "root", source_dir=source, dry_run=False)
    assert capsys.readouterr().out.splitlines() == lines


def test_not_a_source_tree(tmp_path: Path) -> None:
    with pytest.raises(layout.InstallError, match="not found"):
        install.install_service(tmp_path / "root", source_dir=tmp_path, dry_run=False)


def test_config_keys_added_or_rewritten(tmp_path: Path) -> None:
    src = tmp_path / "edged.toml"
    src.write_text(
        '[models]\ndir = "models"   # here\n\n[guardian]\npacks = ["configs/guardian/a.toml"]\n'
        '\n[power]\nsource = "auto"\ntrace_file = "hwprofiles/traces/sim.csv"\n'
    )
    data = tomllib.loads(layout.service_config_text(src))
    assert data["models"]["dir"] == "/opt/edged/models"
    assert data["models"]["manifest"] == "/opt/edged/models/manifest.toml"
    assert data["guardian"]["packs"] == ["/etc/edged/guardian/a.toml"]
    assert data["power"] == {
        "source": "auto",
        "trace_file": "/etc/edged/hwprofiles/traces/sim.csv",
        "profiles_dir": "/etc/edged/hwprofiles",
    }
    assert data["router"]["policy_dir"] == "/etc/edged/policies"
    assert "# here" in layout.service_config_text(src)


def test_a_relative_path_outside_the_layout_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "edged.toml"
    src.write_text('[guardian]\npacks = ["somewhere/else.toml"]\n')
    with pytest.raises(layout.InstallError, match=r"guardian\.packs"):
        layout.service_config_text(src)


def test_main_dry_run_on_the_repository(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = install.main(["--prefix", str(tmp_path / "root"), "--source-dir", str(REPO), "--dry-run"])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "(dry run) next: systemctl daemon-reload && systemctl enable --now edged"
    assert not (tmp_path / "root").exists()


def test_build_venv_commands(tmp_path: Path) -> None:
    ran: list[list[str]] = []

    class Done:
        returncode = 0

    def fake_run(cmd: list[str], check: bool) -> Done:
        ran.append(cmd)
        return Done()

    install.build_venv(
        tmp_path, source_dir=REPO, python="/usr/bin/python3", dry_run=False, run=fake_run
    )
    venv = str(tmp_path / "opt/edged/.venv")
    assert ran[0] == ["/usr/bin/python3", "-m", "venv", venv]
    assert ran[-1][:3] == [f"{venv}/bin/python", "-m", "pip"]
    assert ran[-1][-1] == str(REPO)  # not editable: the service must not need the checkout
    assert "-e" not in ran[-1]


def test_build_venv_refuses_a_python_under_home(tmp_path: Path) -> None:
    with pytest.raises(layout.InstallError, match="ProtectHome"):
        install.build_venv(
            tmp_path,
            source_dir=REPO,
            python="/root/.pyenv/versions/3.11/bin/python3",
            dry_run=True,
        )


def test_the_unit_keeps_its_hardening_score(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze is missing: `make test` installs it (systemd)"
    unit = tmp_path / "edged.service"
    shutil.copy(REPO / "systemd/edged.service", unit)
    proc = subprocess.run(
        [tool, "security", "--offline=true", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "unrecognized" not in proc.stderr, "systemd-analyze needs --offline (systemd 250+)"
    score = re.search(r"Overall exposure level for edged.service: ([0-9.]+)", proc.stdout)
    assert score is not None, proc.stdout + proc.stderr
    assert float(score.group(1)) <= 2.0, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
