"""``edged status``: a device's retained status and its next telemetry message
(the observing and formatting are in :mod:`edged.cli.observe`)."""

from __future__ import annotations

import argparse
import sys

from edged.cli.common import Commands, load, with_config


def cmd_status(args: argparse.Namespace) -> int:
    """Show a device's retained status and its next telemetry message."""
    from edged.cli import observe
    from edged.mqtt.topics import Topics

    cfg = load(args)
    device = args.device or cfg.device_id
    if not device or any(ch in device for ch in "/+#"):
        print(f"edged status: invalid device id {device!r}", file=sys.stderr)
        return 2
    topics = Topics(cfg.mqtt.topic_prefix, device)
    timeout_s = args.timeout_s
    if timeout_s is None:
        timeout_s = observe.default_timeout_s(cfg.telemetry.interval_s)
    # the broker credentials and TLS exactly as the daemon uses them
    from edged.mqtt.connect import mqtt_password, tls_context

    password = mqtt_password(cfg) if cfg.mqtt.username else None
    obs = observe.observe(
        host=args.host or cfg.mqtt.host,
        port=args.port or cfg.mqtt.port,
        device_id=device,
        status_topic=topics.status,
        telemetry_topic=topics.telemetry,
        timeout_s=timeout_s,
        username=cfg.mqtt.username,
        password=password,
        tls=tls_context(cfg) if cfg.mqtt.tls else None,
    )
    print(observe.format_json(obs) if args.json else observe.format_report(obs), flush=True)
    return obs.exit_code


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged status``."""
    st = sub.add_parser("status", help="show a device's status and telemetry from MQTT")
    with_config(st)
    st.add_argument("--device", help="device id (default: from the config, else the hostname)")
    st.add_argument("--host", help="broker host (default: from the config)")
    st.add_argument("--port", type=int, help="broker port (default: from the config)")
    st.add_argument("--json", action="store_true", help="print the raw messages as JSON")
    st.add_argument(
        "--timeout-s",
        type=float,
        help="how long to wait for a telemetry message (not retained; default: the "
        "config's telemetry.interval_s plus 2 s)",
    )
    st.set_defaults(func=cmd_status)
