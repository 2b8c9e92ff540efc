"""Telemetry: the periodic report, per-request events, the on-disk spool and outbox."""
