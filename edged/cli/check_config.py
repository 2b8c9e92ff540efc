"""``edged check-config``: validate a config (plus environment overrides) and print the
effective settings with secrets masked."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edged.cli.common import Commands
from edged.config import env_override_vars, load_config


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file (plus environment overrides) and print the effective settings.

    stdout: the settings as JSON, secrets masked. stderr: the ``EDGED_*`` variables that
    were applied (secret values masked), before the settings are validated, so that an
    error naming a key path can be traced to the variable that set it.
    """
    overrides = applied_env_overrides(os.environ)
    if overrides:
        print(f"environment overrides applied ({len(overrides)}):", file=sys.stderr)
        for name, value, path in overrides:
            print(f"  {name}={value}  -> {path}", file=sys.stderr)
    else:
        print("environment overrides applied: none", file=sys.stderr)
    cfg = load_config(Path(args.path))
    print(json.dumps(mask_secrets(cfg.model_dump(mode="json")), indent=2))
    return 0


#: Words that make a setting secret when its name ends with one (the name split into words
#: at ``_``, ``-``, ``.`` and camelCase): ``password``, ``mqtt_password``, ``api_key``,
#: ``private_key``, ``access_token``, ``client_secret``, ``credentials``. A name that only
#: *mentions* one of them is not a secret: ``first_token_timeout_s`` is a time,
#: ``key_file`` a path, ``max_tokens_limit`` a count.
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "key", "apikey", "credentials"}
)
#: Suffixes of names that only *name* a secret (an environment variable, a systemd
#: credential), which are not secrets themselves: ``password_env``, ``api_key_credential``.
_SECRET_NAME_SUFFIXES = ("_env", "_credential")
MASK = "***"


def is_secret_name(name: str) -> bool:
    """Whether a setting called ``name`` holds a secret: its last word is a secret's
    (``mqtt.password``, ``api_key``, ``access_token``, ``clientSecret``); not
    ``password_env`` (names a variable), ``first_token_timeout_s`` (a time), ``key_file``
    (a path) nor ``local_j_per_token`` (a unit)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # clientSecret -> client_Secret
    words = [w for w in re.split(r"[_.\-]+", spaced.lower()) if w]
    if not words or "_".join(words).endswith(_SECRET_NAME_SUFFIXES):
        return False
    # "local_j_per_token" is a unit, not a token
    return words[-1] in _SECRET_WORDS and not (len(words) > 1 and words[-2] == "per")


def mask_secrets(value: Any, name: str = "") -> Any:
    """A copy of ``value`` (JSON-like) with every secret setting's value replaced by ``***``.

    A secret that is unset (``null``) stays ``null``: that reveals nothing and tells that
    none is configured.
    """
    if name and is_secret_name(name) and value is not None:
        return MASK
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def applied_env_overrides(environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """The ``EDGED_*`` variables that :func:`edged.config.load_config` applies, sorted:
    (name, value with secrets masked, key path). ``EDGED_CONFIG`` and the variables that
    hold the broker password and the cloud API key are not config overrides: never listed.
    """
    out = []
    for name, parts, raw in sorted(env_override_vars(environ)):
        if any(is_secret_name(p) for p in parts if p):
            shown = MASK
        elif raw.lstrip().startswith(("[", "{")):
            try:
                shown = json.dumps(mask_secrets(json.loads(raw)))
            except ValueError:
                shown = raw
        else:
            shown = raw
        out.append((name, shown, ".".join(parts)))
    return out


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged check-config``."""
    c = sub.add_parser("check-config", help="validate a config and print effective settings")
    c.add_argument("path")
    c.set_defaults(func=cmd_check_config)
