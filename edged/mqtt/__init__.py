"""MQTT plumbing shared by ingress, responder and telemetry: the link and topic names."""
