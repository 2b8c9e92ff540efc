"""How edged connects to its broker, from the config: the password, the TLS context and the
link itself. The daemon and the command line (``edged doctor``, ``edged ask``) connect the
same way."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from edged.config import Config
from edged.mqtt.link import Incoming, MqttLink, Will


def mqtt_password(cfg: Config) -> str | None:
    """The broker password: $<password_env>, else the systemd credential (edged.secrets)."""
    from edged.secrets import read_secret

    return read_secret(cfg.mqtt.password_env, cfg.mqtt.password_credential)


def tls_context(cfg: Config) -> ssl.SSLContext:
    """TLS for the broker: verify its certificate (and host name) against ``ca_file`` or the
    system store; present a client certificate when one is configured."""
    ctx = ssl.create_default_context(cafile=str(cfg.mqtt.ca_file) if cfg.mqtt.ca_file else None)
    if cfg.mqtt.cert_file is not None:
        ctx.load_cert_chain(
            str(cfg.mqtt.cert_file), str(cfg.mqtt.key_file) if cfg.mqtt.key_file else None
        )
    return ctx


def daemon_link(
    cfg: Config,
    *,
    will: Callable[[], Will],
    subscriptions: tuple[tuple[str, int], ...],
    on_message: Callable[[Incoming], None],
    on_connected: Callable[[bool], None],
) -> MqttLink:
    """The daemon's link: its client id and session, flow control sized to the admission
    queue, the credentials and TLS of ``[mqtt]``."""
    return MqttLink(
        host=cfg.mqtt.host,
        port=cfg.mqtt.port,
        client_id=cfg.client_id,
        keepalive_s=cfg.mqtt.keepalive_s,
        session_expiry_s=cfg.mqtt.session_expiry_s,
        receive_maximum=max(64, cfg.ingress.queue_limit * 4),
        username=cfg.mqtt.username,
        password=mqtt_password(cfg) if cfg.mqtt.username else None,
        will=will,
        subscriptions=subscriptions,
        on_message=on_message,
        on_connected=on_connected,
        reconnect_min_s=cfg.mqtt.reconnect_min_s,
        reconnect_max_s=cfg.mqtt.reconnect_max_s,
        tls=tls_context(cfg) if cfg.mqtt.tls else None,
    )
