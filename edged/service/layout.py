"""The install layout, and the config rewritten for it.

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

These are the run-time paths; :mod:`edged.service.install` puts the files there (under a
staging ``prefix``). :func:`service_config_text` turns the source tree's config into the one
installed as /etc/edged/edged.toml: every path moved into this layout, then validated.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from edged.config import Config, format_validation_error
from edged.errors import EdgedError

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

CONFIG_HEADER = """\
# Installed by edged/service/install.py for the service layout (docs/service.md): every path below
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
        (
            "models",
            "manifest",
            runtime_path(get("models", "manifest", "models/manifest.toml"), "models.manifest"),
            "",
        ),
        (
            "router",
            "policy_dir",
            runtime_path(get("router", "policy_dir", "configs/policies"), "router.policy_dir"),
            "",
        ),
        (
            "power",
            "profiles_dir",
            runtime_path(get("power", "profiles_dir", "hwprofiles"), "power.profiles_dir"),
            "Board profiles: power.profile = 'auto' picks the detected board's from here.",
        ),
        ("telemetry", "spool_dir", str(STATE / "spool"), ""),
        ("telemetry", "state_dir", str(STATE / "state"), state_note),
    ]
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
