"""Wiring of the HTTP front door (edged.ingress.http) into the daemon; app.py calls these."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edged import __version__
from edged.config import Config
from edged.errors import ConfigError
from edged.ingress.service import Ingress
from edged.secrets import read_secret

if TYPE_CHECKING:
    from edged.ingress.http import HttpServer


def model_ids(backends: Mapping[str, object]) -> list[str]:
    """The ``model`` names a client may send: ``auto`` (the router decides), then every
    backend by name (today ``local``, and ``cloud`` when enabled)."""
    return ["auto", *backends]


def build_http(
    cfg: Config, ingress: Ingress, backends: Mapping[str, object], connected: Any
) -> HttpServer | None:
    """The HTTP server when ``[http] enabled``; raises ConfigError for a non-loopback bind
    without an API key. ``connected``: the MQTT link's connected event (for /healthz)."""
    if not cfg.http.enabled:
        return None
    from edged.ingress.http import HttpFront, HttpServer  # uvicorn only when it serves

    key = read_secret(cfg.http.api_key_env, cfg.http.api_key_credential)
    if key is None and not cfg.http.loopback():
        raise ConfigError(
            f"http.host {cfg.http.host!r} is not loopback: set ${cfg.http.api_key_env} or "
            f"the credential {cfg.http.api_key_credential!r} (refusing to serve without a key)"
        )

    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "mqtt_connected": connected.is_set(),
            "in_flight": ingress.in_flight,
        }

    # a clean cancel (issue 17's Ingress.cancel) where the ingress has one
    cancel = getattr(ingress, "cancel", None)
    front = HttpFront(
        cfg, ingress.admit, lambda: model_ids(backends), health, api_key=key, cancel=cancel
    )
    return HttpServer(front)
