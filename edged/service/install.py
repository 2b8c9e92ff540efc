"""Install edged as a systemd service: the unit, a config for the install layout, the data
files it names, verified model files, and the credentials directory.

The layout (docs/service.md; ``systemd/edged.service`` names the same paths)::

    /etc/systemd/system/edged.service
    /etc/edged/edged.toml          config: absolute paths into this layout; never overwritten
    /etc/edged/guardian/           rule packs (configs/guardian/)
    /etc/edged/policies/           routing presets (configs/policies/)
    /etc/edged/hwprofiles/         board profiles (hwprofiles/)
    /etc/edged/credentials/        0700: mqtt-password, cloud-api-key (LoadCredential=)
    /etc/default/edged             0600: optional EDGED_* overrides (EnvironmentFile=)
    /opt/edged/.venv/              the daemon (built by ``--venv``; ExecStart=)
    /opt/edged/models/             manifest.toml and the model files that verified
    /opt/edged/docs/service.md
    /var/lib/edged/                StateDirectory= (created by systemd, not here)

Everything goes under ``prefix`` (a staging root; tests use a temporary directory) while
the paths written into files are the run-time ones. Data files under /etc/edged that an
admin changed are kept; the shipped version is put beside them as ``<name>.dist``.

``python -m edged.service.install [--prefix DIR] [--dry-run] [--venv]``; ``make install`` runs it.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from edged.config import Config, format_validation_error
from edged.errors import ConfigError, EdgedError, ModelError
from edged.models import check, load_manifest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from pydantic import ValidationError

OPT = PurePosixPath("/opt/edged")
ETC = PurePosixPath("/etc/edged")
VENV = OPT / ".venv"
MODELS = OPT / "models"
STATE = PurePosixPath("/var/lib/edged")
UNIT = PurePosixPath("/etc/systemd/system/edged.service")
DEFAULTS_FILE = PurePosixPath("/etc/default/edged")
CREDENTIALS = ETC / "credentials"
CREDENTIAL_NAMES = ("mqtt-password", "cloud-api-key")
CONFIG = ETC / "edged.toml"
NEXT_COMMAND = "systemctl daemon-reload && systemctl enable --now edged"

#: Relative paths of the source tree -> where they live once installed.
PATH_MAP: tuple[tuple[str, PurePosixPath], ...] = (
    ("configs/guardian", ETC / "guardian"),
    ("configs/policies", ETC / "policies"),
    ("hwprofiles", ETC / "hwprofiles"),
    ("models", MODELS),
)

DEFAULTS_TEXT = """\
# Environment for edged.service (EnvironmentFile=-/etc/default/edged). Mode 0600.
# Any config key can be overridden here: EDGED_<KEY> or EDGED_<SECTION>__<KEY>.
#
# EDGED_DEVICE_ID=kitchen-1
# EDGED_MQTT__HOST=broker.lan
# EDGED_MQTT__PORT=1883
# EDGED_LOG__LEVEL=debug
#
# Secrets belong in /etc/edged/credentials/ (systemd credentials), not here. Until edged
# reads the MQTT password from the credential, it can be given here instead:
# EDGED_MQTT_PASSWORD=...
"""

CONFIG_HEADER = """\
# Installed by edged/install.py for the service layout (docs/service.md): every path below
# is absolute. This file is never overwritten by a later install; new defaults arrive as
# edged.toml.dist beside it. Check it with:
#   /opt/edged/.venv/bin/edged check-config /etc/edged/edged.toml
#
"""


class InstallError(EdgedError):
    """The source tree or the target cannot be installed as asked."""


def runtime_path(value: str, key: str) -> str:
    """Where a path from the source tree's config lives in the install layout."""
    if value.startswith("/"):
        return value
    norm = PurePosixPath(value).as_posix().removeprefix("./")
    for src, dst in PATH_MAP:
        if norm == src:
            return str(dst)
        if norm.startswith(src + "/"):
            return str(dst / norm[len(src) + 1 :])
    raise InstallError(f"{key}: relative path {value!r} has no place in the install layout")


_HEADER = re.compile(r"^\s*\[")
_VALUE = re.compile(r'^(?P<val>"[^"\n]*"|\[[^\]\n]*\])(?P<trail>\s*(?:#.*)?)$')


def set_toml_value(text: str, section: str, key: str, literal: str, comment: str = "") -> str:
    """``text`` with ``[section] key = literal``: the value replaced (its comment kept), or
    the key added under the section header, or the section appended. ``comment`` goes above
    a key that had to be added."""
    note = f"# {comment}\n" if comment else ""
    lines = text.splitlines(keepends=True)
    start: int | None = None
    end = len(lines)
    for i, line in enumerate(lines):
        if not _HEADER.match(line):
            continue
        if start is not None:
            end = i
            break
        if line.strip() == f"[{section}]" or line.split("#", 1)[0].strip() == f"[{section}]":
            start = i
    if start is None:
        sep = "" if text.endswith("\n") or not text else "\n"
        return f"{text}{sep}\n[{section}]\n{note}{key} = {literal}\n"
    key_re = re.compile(rf"^(?P<lead>\s*{re.escape(key)}\s*=\s*)(?P<rest>.*?)(?P<nl>\r?\n?)$")
    for i in range(start + 1, end):
        m = key_re.match(lines[i])
        if m is None:
            continue
        v = _VALUE.match(m.group("rest"))
        if v is None:
            raise InstallError(f"cannot rewrite {section}.{key}: {lines[i].strip()!r}")
        lines[i] = f"{m.group('lead')}{literal}{v.group('trail')}{m.group('nl') or chr(10)}"
        return "".join(lines)
    lines.insert(start + 1, f"{note}{key} = {literal}\n")
    return "".join(lines)


def _toml_literal(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def service_config_text(source_config: Path) -> str:
    """The source tree's config with every path moved into the install layout, validated."""
    text = source_config.read_text(encoding="utf-8")
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InstallError(f"{source_config}: not valid TOML: {e}") from e

    def get(section: str, key: str, default: object) -> Any:
        return data.get(section, {}).get(key, default)

    state_note = "edged.service sets the same with Environment= (StateDirectory=edged)"
    wanted: list[tuple[str, str, str | list[str], str]] = [
        ("models", "dir", str(MODELS), ""),
        ("models", "manifest", runtime_path(
            get("models", "manifest", "models/manifest.toml"), "models.manifest"), ""),
        ("router", "policy_dir", runtime_path(
            get("router", "policy_dir", "configs/policies"), "router.policy_dir"), ""),
        ("power", "profiles_dir", runtime_path(
            get("power", "profiles_dir", "hwprofiles"), "power.profiles_dir"),
            "Board profiles: power.profile = 'auto' picks the detected board's from here."),
        ("telemetry", "spool_dir", str(STATE / "spool"), ""),
        ("telemetry", "state_dir", str(STATE / "state"), state_note),
    ]  # fmt: skip
    packs = get("guardian", "packs", None)
    if packs is not None:
        wanted.append(("guardian", "packs", [runtime_path(p, "guardian.packs") for p in packs], ""))
    trace = get("power", "trace_file", None)
    if trace is not None:
        wanted.append(("power", "trace_file", runtime_path(trace, "power.trace_file"), ""))
    out = text
    for section, key, value, note in wanted:
        out = set_toml_value(out, section, key, _toml_literal(value), note)
    # Comments that point into the source tree point into /etc/edged instead.
    out = "\n".join(_fix_comment(line) for line in out.split("\n"))
    out = CONFIG_HEADER + out
    try:
        parsed = tomllib.loads(out)
        Config.model_validate(parsed)
    except tomllib.TOMLDecodeError as e:  # pragma: no cover - set_toml_value keeps TOML
        raise InstallError(f"adjusted config is not valid TOML: {e}") from e
    except ValidationError as e:
        raise InstallError(format_validation_error(e, f"{source_config} (adjusted)")) from e
    for section, key, value, _ in wanted:
        if parsed.get(section, {}).get(key) != value:  # pragma: no cover - a bug if hit
            raise InstallError(f"could not set {section}.{key} in the adjusted config")
    return out


def _fix_comment(line: str) -> str:
    at = line.find("#")
    if at < 0:
        return line
    comment = line[at:].replace(
        "relative to the working directory", f"relative to the working directory, {STATE}"
    )
    for src, dst in PATH_MAP[:2]:  # configs/guardian, configs/policies
        comment = comment.replace(src, str(dst))
    return line[:at] + comment


class _Installer:
    """Does (or, dry, describes) each step and records one line per step."""

    def __init__(self, prefix: Path, source_dir: Path, dry_run: bool) -> None:
        self.prefix = prefix
        self.source = source_dir
        self.dry = dry_run
        self.lines: list[str] = []
        self._made: set[PurePosixPath] = set()  # directories a dry run "created"

    def target(self, path: PurePosixPath) -> Path:
        return self.prefix / str(path).lstrip("/")

    def say(self, line: str) -> None:
        line = f"(dry run) {line}" if self.dry else line
        print(line, flush=True)
        self.lines.append(line)

    def mkdir(self, path: PurePosixPath, mode: int = 0o755, *, enforce: bool = False) -> None:
        """Create a directory; ``enforce``: also fix the mode of an existing one."""
        t = self.target(path)
        if path in self._made:
            return
        self._made.add(path)
        if t.is_dir():
            if enforce and (t.stat().st_mode & 0o777) != mode:
                self.say(f"chmod {mode:o} {path}")
                if not self.dry:
                    t.chmod(mode)
            return
        self.say(f"mkdir {path} (mode {mode:o})")
        if not self.dry:
            t.mkdir(parents=True, exist_ok=True)
            t.chmod(mode)

    def write(self, path: PurePosixPath, data: bytes, mode: int) -> None:
        """Write atomically (temporary file in the same directory, then rename)."""
        if self.dry:
            return
        t = self.target(path)
        t.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{t.name}.", dir=t.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, t)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def copy(self, src: Path, path: PurePosixPath, mode: int) -> None:
        """Copy a large file atomically."""
        if self.dry:
            return
        t = self.target(path)
        t.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{t.name}.", dir=t.parent)
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, mode)
            os.replace(tmp, t)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def conffile(self, src: Path, path: PurePosixPath, mode: int = 0o644) -> None:
        """Install a data file under /etc: new, identical, or changed by the admin (kept,
        the shipped one beside it as .dist)."""
        t = self.target(path)
        if not t.exists():
            self.say(f"install {path}")
            self.copy(src, path, mode)
        elif filecmp.cmp(src, t, shallow=False):
            return
        else:
            dist = PurePosixPath(f"{path}.dist")
            self.say(f"kept {path} (changed locally); the shipped version is {dist}")
            self.copy(src, dist, mode)

    def tree(self, src_dir: Path, dst: PurePosixPath, accept: Callable[[Path], bool]) -> None:
        if not src_dir.is_dir():
            raise InstallError(f"{src_dir}: not found in the source tree")
        self.mkdir(dst)
        for src in sorted(src_dir.rglob("*")):
            if src.is_file() and accept(src) and not src.name.startswith("."):
                rel = src.relative_to(src_dir)
                for parent in reversed(rel.parents[:-1]):
                    self.mkdir(dst / parent.as_posix())
                self.conffile(src, dst / rel.as_posix())


def _data_file(path: Path) -> bool:
    return path.suffix in (".toml", ".csv")


def install_service(prefix: Path = Path("/"), *, source_dir: Path, dry_run: bool) -> list[str]:
    """Install the unit, config, data files, models and credentials dir under ``prefix``.

    Prints one line per change and returns them; the last line is the command to run next.
    Never overwrites an existing config. Raises InstallError (or ConfigError/ModelError)
    naming what is wrong with the source tree.
    """
    inst = _Installer(prefix, source_dir, dry_run)
    unit_src = source_dir / "systemd" / "edged.service"
    config_src = source_dir / "configs" / "edged.toml"
    manifest_src = source_dir / "models" / "manifest.toml"
    for needed in (unit_src, config_src, manifest_src):
        if not needed.is_file():
            raise InstallError(f"{needed}: not found (is {source_dir} an edged source tree?)")

    # The unit: ours, replaced on every install (local changes go in drop-ins:
    # `systemctl edit edged`).
    unit_t = inst.target(UNIT)
    if not (unit_t.is_file() and filecmp.cmp(unit_src, unit_t, shallow=False)):
        inst.say(f"install {UNIT}")
        inst.write(UNIT, unit_src.read_bytes(), 0o644)

    # Config and the data files it names.
    inst.mkdir(ETC)
    text = service_config_text(config_src)
    config_t = inst.target(CONFIG)
    if config_t.exists():
        if config_t.read_text(encoding="utf-8") != text:
            inst.say(f"kept {CONFIG} (never overwritten); new defaults in {CONFIG}.dist")
            inst.write(PurePosixPath(f"{CONFIG}.dist"), text.encode(), 0o644)
    else:
        inst.say(f"install {CONFIG} (paths adjusted to the install layout)")
        inst.write(CONFIG, text.encode(), 0o644)
    inst.tree(source_dir / "configs" / "guardian", ETC / "guardian", _data_file)
    inst.tree(source_dir / "configs" / "policies", ETC / "policies", _data_file)
    inst.tree(source_dir / "hwprofiles", ETC / "hwprofiles", _data_file)

    # Secrets: a root-only directory; empty files so that LoadCredential= finds them
    # (empty means "not set").
    inst.mkdir(CREDENTIALS, 0o700, enforce=True)
    for name in CREDENTIAL_NAMES:
        path = CREDENTIALS / name
        t = inst.target(path)
        if not t.exists():
            inst.say(f"create {path} (empty, mode 600)")
            inst.write(path, b"", 0o600)
        elif (t.stat().st_mode & 0o777) != 0o600:
            inst.say(f"chmod 600 {path}")
            if not dry_run:
                t.chmod(0o600)
    if not inst.target(DEFAULTS_FILE).exists():
        inst.mkdir(DEFAULTS_FILE.parent)
        inst.say(f"create {DEFAULTS_FILE} (commented, mode 600)")
        inst.write(DEFAULTS_FILE, DEFAULTS_TEXT.encode(), 0o600)

    # Models: the manifest and every listed file that is present and verifies.
    inst.mkdir(OPT)
    inst.mkdir(MODELS)
    inst.conffile(manifest_src, MODELS / "manifest.toml")
    missing = _install_models(inst, manifest_src)
    doc = source_dir / "docs" / "service.md"
    if doc.is_file():
        inst.mkdir(OPT / "docs")
        inst.conffile(doc, OPT / "docs" / "service.md")

    if not inst.target(VENV / "bin" / "edged").exists():
        inst.say(f"note: {VENV} is not built: `sudo make install` builds it (--venv)")
    for name in missing:
        inst.say(
            f"note: model {name} is not installed: `make model`, then install again "
            f"(or: {VENV}/bin/edged models fetch {name} --config {CONFIG})"
        )
    inst.say(f"secrets: {CREDENTIALS}/mqtt-password, {CREDENTIALS}/cloud-api-key (mode 600)")
    inst.say(f"next: {NEXT_COMMAND}")
    return inst.lines


def _install_models(inst: _Installer, manifest_src: Path) -> list[str]:
    """Copy each model file that verifies (size and sha256) and is not already installed
    intact; returns the names of models not installed."""
    src_dir = manifest_src.parent
    dst_dir = inst.target(MODELS)
    missing: list[str] = []
    for entry in load_manifest(manifest_src).model:
        if dst_dir.is_dir() and check(entry, dst_dir, full=True) == "ok":
            continue
        state = check(entry, src_dir, full=True)
        if state != "ok":
            if state != "missing":
                inst.say(f"skip model {entry.name}: {src_dir / entry.file} is {state}")
            missing.append(entry.name)
            continue
        inst.say(f"install {MODELS / entry.file} ({entry.size_bytes / 1e6:.1f} MB, verified)")
        inst.copy(src_dir / entry.file, MODELS / entry.file, 0o644)
    return missing


def build_venv(
    prefix: Path,
    *,
    source_dir: Path,
    python: str,
    dry_run: bool,
    run: Callable[..., Any] | None = None,
) -> list[str]:
    """Create ``/opt/edged/.venv`` with ``python`` and pip-install the source tree into it
    (not editable: the service must not depend on the checkout)."""
    venv = prefix / str(VENV).lstrip("/")
    real = Path(python).resolve()
    if str(real).startswith(("/root/", "/home/")):
        raise InstallError(
            f"{python} lives under {real.parent}: the service cannot read /root or /home "
            "(ProtectHome=yes); give --python /usr/bin/python3"
        )
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", "--upgrade", "pip"],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", str(source_dir.resolve())],
    ]  # fmt: skip
    runner = run or subprocess.run
    lines = []
    for cmd in steps:
        line = ("(dry run) " if dry_run else "") + "run " + " ".join(cmd)
        print(line, flush=True)
        lines.append(line)
        if not dry_run:
            proc = runner(cmd, check=False)
            if proc.returncode != 0:
                raise InstallError(f"{' '.join(cmd)} failed (exit {proc.returncode})")
    return lines


def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m edged.service.install", description=__doc__.split("\n")[0]
    )
    p.add_argument("--prefix", default="/", help="install under this root (default /)")
    p.add_argument(
        "--source-dir", default=".", help="the edged source tree (default: current directory)"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    p.add_argument(
        "--venv", action="store_true", help="also build /opt/edged/.venv from the source tree"
    )
    p.add_argument("--python", default="/usr/bin/python3", help="interpreter for the venv (--venv)")
    return p.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m edged.service.install``: exit 0, or 1 with one line saying what is wrong."""
    args = _parse(argv)
    prefix = Path(args.prefix)
    if prefix.resolve() == Path("/") and not args.dry_run and os.geteuid() != 0:
        print("edged install: run as root (sudo make install)", file=sys.stderr)
        return 1
    os.umask(0o022)  # the service's transient user must be able to read what we install
    try:
        if args.venv:
            build_venv(
                prefix, source_dir=Path(args.source_dir), python=args.python, dry_run=args.dry_run
            )
        install_service(prefix, source_dir=Path(args.source_dir), dry_run=args.dry_run)
    except (InstallError, ConfigError, ModelError) as e:
        print(f"edged install: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
