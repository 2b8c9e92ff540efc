"""Secrets (the broker password, the cloud API key): one reader, one set of rules.

A secret is looked up in two places, in this order:

1. the environment variable the config names (``mqtt.password_env``, ``cloud.api_key_env``);
2. the systemd credential the config names (``LoadCredential=``), the file
   ``$CREDENTIALS_DIRECTORY/<name>``, when the variable is unset.

Rules, the same for every secret:

- a value that is empty or only whitespace counts as unset (the next place is tried);
- trailing newlines (``\\n``, ``\\r\\n``) are stripped; nothing else is;
- a credential name must be a plain file name: one with ``/``, ``\\``, a NUL, or that is
  ``.`` or ``..`` is refused with :class:`SecretError` (no path traversal out of the
  credentials directory); an empty name means no credential is configured;
- no ``$CREDENTIALS_DIRECTORY``, or no such file: not set (None);
- a credential file that exists but cannot be read (permissions, a directory, not UTF-8)
  raises :class:`SecretError`, which names the file and the cause, never the value.

Nothing here logs; a secret's value is never in a message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from edged.errors import ConfigError

#: The directory systemd puts ``LoadCredential=`` files in (set for the service only).
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"


class SecretError(ConfigError):
    """A secret is configured but cannot be read, or its credential name is unsafe."""


def _clean(value: str) -> str | None:
    value = value.rstrip("\r\n")
    return value if value.strip() else None


def read_credential(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The systemd credential ``name`` from ``$CREDENTIALS_DIRECTORY``, trailing newlines
    stripped; None when there is no such directory, no such file, or it is blank.

    Raises :class:`SecretError` for a name that is not a plain file name, and for a file
    that exists but cannot be read.
    """
    env = os.environ if environ is None else environ
    if not name:
        return None
    if name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise SecretError(
            f"credential name {name!r} is not a plain file name (it must not leave "
            f"${CREDENTIALS_DIRECTORY})"
        )
    cred_dir = env.get(CREDENTIALS_DIRECTORY)
    if not cred_dir:
        return None
    path = Path(cred_dir) / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SecretError(f"credential {path} cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"credential {path} is not UTF-8 text") from None
    return _clean(text)


def read_secret(
    env_var: str, credential: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """The secret in ``$<env_var>``, else in the systemd credential ``credential``, else None.

    ``environ`` defaults to ``os.environ``. See the module's rules; never logged.
    """
    env = os.environ if environ is None else environ
    value = _clean(env.get(env_var, "")) if env_var else None
    if value is not None:
        return value
    return read_credential(credential, env)
