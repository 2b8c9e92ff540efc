"""Environment overrides of config keys: ``EDGED_<KEY>`` for top-level keys,
``EDGED_<SECTION>__<KEY>`` for nested ones; lists and tables as JSON. Split out of
edged/config.py, which applies them in ``load_config`` and re-exports the names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edged.config_backends import API_KEY_ENV_RE
from edged.errors import ConfigError

ENV_PREFIX = "EDGED_"
#: Environment variables with the prefix that are not config keys: the config path, and the
#: default variables holding the broker password and the cloud API key.
ENV_RESERVED = frozenset(
    {"EDGED_CONFIG", "EDGED_MQTT_PASSWORD", "EDGED_CLOUD_API_KEY", "EDGED_HTTP_API_KEY"}
)


def _parse_env_value(raw: str) -> Any:
    """Lists and tables are JSON; scalars stay strings and pydantic converts them per field
    (so ``EDGED_DEVICE_ID=1234`` stays the string "1234" while ``EDGED_MQTT__PORT=1884``
    becomes an int)."""
    if raw.lstrip().startswith(("[", "{")):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def env_override_vars(environ: Mapping[str, str]) -> list[tuple[str, list[str], str]]:
    """The ``EDGED_*`` variables that override config keys, in ``environ``'s order: (name,
    key path lower-cased, raw value). ``EDGED_MQTT__PORT`` is ``["mqtt", "port"]``; an empty
    segment (``EDGED_A____B``) stays ``""`` for :func:`env_overrides` to reject. Not
    ``EDGED_CONFIG`` nor the variables holding secrets (:data:`ENV_RESERVED`).

    The one reader of the names: :func:`load_config` applies these, ``edged check-config``
    lists them.
    """
    return [
        (name, [p.lower() for p in name[len(ENV_PREFIX) :].split("__")], raw)
        for name, raw in environ.items()
        if name.startswith(ENV_PREFIX)
        and name not in ENV_RESERVED
        and not API_KEY_ENV_RE.match(name)  # a named backend's key, never a config key
    ]


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``EDGED_*`` variables into a nested dict of overrides (keys lower-cased)."""
    out: dict[str, Any] = {}
    for name, path, raw in env_override_vars(environ):
        if any(not p for p in path):
            raise ConfigError(f"{name}: empty key segment")
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: '{part}' is not a section")
            node = child
        node[path[-1]] = _parse_env_value(raw)
    return out


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on it, tables merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
