"""The on-device agent loop: device tools that edged executes over MQTT (docs/agents.md)."""
