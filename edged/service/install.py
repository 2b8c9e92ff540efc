"""Install edged as a systemd service: the unit, a config for the install layout, the data
files it names, verified model files, and the credentials directory.

The layout, and the config rewritten for it, are in :mod:`edged.service.layout`.
Everything goes under ``prefix`` (a staging root; tests use a temporary directory) while
the paths written into files are the run-time ones. Data files under /etc/edged that an
admin changed are kept; the shipped version is put beside them as ``<name>.dist``.

``python -m edged.service.install [--prefix DIR] [--dry-run] [--venv]``; ``make install`` runs it.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from edged.errors import ConfigError, ModelError
from edged.models import check, load_manifest
from edged.service.layout import (
    CONFIG,
    CREDENTIAL_NAMES,
    CREDENTIALS,
    DEFAULTS_FILE,
    ETC,
    MODELS,
    NEXT_COMMAND,
    OPT,
    UNIT,
    VENV,
    InstallError,
    service_config_text,
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
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--upgrade",
            "pip",
        ],
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(source_dir.resolve()),
        ],
    ]
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
