"""``[http]``: the OpenAI-compatible HTTP front door (docs/http.md); re-exported by config.py.

A base module like :mod:`edged.config`: it imports nothing of edged.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field


class HttpConfig(BaseModel):
    """The HTTP ingress: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /healthz``."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(False, description="Serve the OpenAI-compatible HTTP API.")
    host: str = Field(
        "127.0.0.1",
        description="Address to listen on. Any address that is not loopback needs an API key "
        "(edged refuses to start without one).",
    )
    port: int = Field(8090, ge=0, le=65535, description="TCP port (0: any free port).")
    api_key_env: str = Field(
        "EDGED_HTTP_API_KEY",
        description="Environment variable holding the API key clients send as "
        "'Authorization: Bearer <key>'.",
    )
    api_key_credential: str = Field(
        "http-api-key",
        description="systemd credential holding the API key when the variable is unset.",
    )
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request body must arrive whole within this time, seconds (a client "
        "trickling it gets 408 and the connection is closed).",
    )
    keepalive_s: float = Field(5.0, gt=0, description="Idle keep-alive connections close after.")

    def loopback(self) -> bool:
        """True when ``host`` is a loopback address (or ``localhost``)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
