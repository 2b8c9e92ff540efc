"""Configuration: pydantic models that reject unknown keys, loaded from TOML plus environment.

Every key can be overridden from the environment: top-level keys as ``EDGED_<KEY>``
(``EDGED_DEVICE_ID``), nested keys as ``EDGED_<SECTION>__<KEY>`` (``EDGED_MQTT__PORT=1884``).
Lists and tables are given as JSON (``EDGED_GUARDIAN__PACKS='["a.toml"]'``); scalars as plain
text, converted to the field's type.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edged.config_accel import OffloadSettings as OffloadSettings  # noqa: PLC0414 (re-export)
from edged.config_agent import AgentConfig, AgentField, ToolConfig, ToolsField  # [agent], [tools]
from edged.config_backends import NamedBackends, OffloadReason, TierPolicy
from edged.config_env import ENV_PREFIX as ENV_PREFIX  # noqa: PLC0414 (re-export)
from edged.config_env import ENV_RESERVED as ENV_RESERVED  # noqa: PLC0414
from edged.config_env import env_override_vars as env_override_vars  # noqa: PLC0414
from edged.config_env import env_overrides, merge
from edged.config_http import HttpConfig as HttpConfig  # noqa: PLC0414 (re-export)
from edged.config_ingress import IngressConfig as IngressConfig  # noqa: PLC0414 (re-export)
from edged.config_sessions import SessionCacheKeys, StreamKeys
from edged.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_TOPIC_SEGMENT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class MqttConfig(_Model):
    """Connection to the MQTT broker."""

    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    client_id: str | None = Field(
        None,
        description="MQTT client id; default 'edged-<device_id>'. Must be stable so the "
        "broker keeps the session (queued QoS 1 requests) across restarts.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval, seconds.")
    session_expiry_s: int = Field(
        3600,
        ge=0,
        description="How long the broker keeps our session (and queues requests) "
        "while edged is away, seconds.",
    )
    username: str | None = Field(None, description="Broker user name, if the broker wants one.")
    password_env: str = Field(
        "EDGED_MQTT_PASSWORD",
        description="Name of the environment variable holding the broker password (never put "
        "the password itself in a config file).",
    )
    password_credential: str = Field(
        "mqtt-password",
        description="systemd credential name holding the broker password (LoadCredential=), "
        "read from $CREDENTIALS_DIRECTORY when the environment variable is unset.",
    )
    tls: bool = Field(False, description="Connect with TLS (the broker's TLS listener).")
    ca_file: Path | None = Field(
        None, description="CA that signed the broker's certificate; default: the system's."
    )
    cert_file: Path | None = Field(None, description="Client certificate (PEM), if required.")
    key_file: Path | None = Field(None, description="Client private key (PEM).")
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect back-off, seconds.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Largest reconnect back-off, seconds.")
    reply_qos: Literal[0, 1] = Field(1, description="QoS of reply messages (chunks and result).")
    allowed_reply_prefixes: list[str] = Field(
        default_factory=lambda: ["edged/", "reply/"],
        description="Replies are only published under these topic prefixes.",
    )
    topic_prefix: str = Field("edged", description="First topic level of every edged topic.")

    @field_validator("allowed_reply_prefixes")
    @classmethod
    def _no_wildcards(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p or "+" in p or "#" in p:
                raise ValueError(f"prefix {p!r} must be non-empty and contain no wildcard")
        return v


#: ``[local] backend``: each value names backend kinds registered in ``backends/base.py``
#: (``tests/unit/test_backend_registry.py`` holds the two lists together).
BackendKind = Literal["llama", "fake"]


class LocalModelConfig(OffloadSettings, SessionCacheKeys, StreamKeys):
    """The local llama.cpp backend (with the GPU offload keys of edged/config_accel.py and
    the session cache and stream keys of edged/config_sessions.py)."""

    backend: BackendKind = Field(
        "llama",
        description="'llama': the GGUF model below; 'fake': echoes the prompt without a model "
        "(tests and demos only).",
    )
    isolation: Literal["process", "thread"] = Field(
        "process",
        description="'process': the model runs in a worker process, so a crash in llama.cpp "
        "(it aborts its process on some errors) cannot take the daemon down; 'thread': in the "
        "daemon, on a decode thread (lower memory, no IPC).",
    )
    fake_delay_s: float = Field(
        0.0, ge=0, description="backend 'fake': pause before each chunk, seconds (tests)."
    )
    model: str = Field("smollm2-135m-instruct", description="Model name from the manifest.")
    n_ctx: int = Field(2048, ge=128, description="Context window, tokens.")
    n_threads: int | None = Field(
        None, ge=1, description="Decode threads; default: half the cores (at least 1)."
    )
    n_batch: int = Field(256, ge=1, description="Prompt evaluation batch size, tokens.")
    seed: int = Field(-1, description="Sampling seed; -1 picks a random one.")
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    min_p: float = Field(0.05, ge=0, le=1)
    repeat_penalty: float = Field(1.1, gt=0)
    system_prompt: str | None = Field(
        None, description="System message prepended when a request has none."
    )


class CloudConfig(_Model):
    """An OpenAI-compatible server to offload to (vLLM, SGLang, LMDeploy, TensorRT-LLM, Ollama,
    llama.cpp's server). The API key never comes from a config file."""

    enabled: bool = Field(False, description="Offer the cloud backend to the router.")
    base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="The server's OpenAI API root, ending in /v1."
    )
    model: str = Field("default", description="Model name sent to the server.")
    api_key_env: str = Field(
        "EDGED_CLOUD_API_KEY", description="Environment variable holding the API key."
    )
    api_key_credential: str = Field(
        "cloud-api-key",
        description="systemd credential name (LoadCredential=), read from "
        "$CREDENTIALS_DIRECTORY when the environment variable is unset.",
    )
    connect_timeout_s: float = Field(3.0, gt=0, description="TCP/TLS connect timeout, seconds.")
    read_timeout_s: float = Field(
        20.0, gt=0, description="Longest wait for the next piece of the stream, seconds."
    )
    first_token_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest wait for the first token (retry included), seconds; then the "
        "request is served locally and the breaker counts a failure. A request with a "
        "deadline waits at most half of the time it has left (then without counting).",
    )
    retries: int = Field(
        1, ge=0, le=1, description="Retries, only ever before the first token (0 or 1)."
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open the circuit breaker."
    )
    breaker_cooldown_s: float = Field(
        30.0, gt=0, description="Seconds the breaker stays open before one trial request."
    )


class PolicyConfig(TierPolicy, _Model):
    """One routing policy (a preset in configs/policies/, or inline). docs/routing.md."""

    description: str | None = None
    prefer: Literal["local", "cloud"] = Field(
        "local", description="Where a request goes when no rule says otherwise."
    )
    offload_on: list[OffloadReason] = Field(
        default_factory=lambda: list[OffloadReason](["deadline", "queue_full"]),
        description="Conditions that send a request to the cloud (when it may leave).",
    )
    battery_low_pct: float = Field(20.0, ge=0, le=100, description="Battery is low at or below.")
    battery_hysteresis_pct: float = Field(
        5.0, ge=0, le=50, description="Battery is low again only above low + this."
    )
    power_budget_w: float | None = Field(None, gt=0, description="Offload above this draw, W.")
    queue_full_depth: int = Field(
        2, ge=1, description="Local generations queued or running at which the device is full."
    )
    prefer_by_mode: dict[str, Literal["local", "cloud"]] = Field(
        default_factory=dict, description="Power mode (nvpmodel name) -> prefer, in that mode."
    )


class SemanticRoute(_Model):
    """Requests whose prompt resembles these examples prefer this backend."""

    name: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    backend: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")  # local, cloud, a device backend
    examples: list[str] = Field(min_length=1)
    threshold: float = Field(0.5, gt=0, le=1)


class RouterConfig(_Model):
    """Per-request routing between the local model and the cloud."""

    default_policy: str = Field("voice-agent", description="Policy when a request names none.")
    policy_dir: Path = Field(
        Path("configs/policies"), description="Directory of policy presets (<name>.toml)."
    )
    policies: dict[str, PolicyConfig] = Field(
        default_factory=dict, description="Policies defined inline (override presets)."
    )
    cloud_daily_requests: int | None = Field(
        None, ge=0, description="Cloud requests allowed per UTC day; None: no limit."
    )
    cloud_daily_tokens: int | None = Field(
        None, ge=0, description="Cloud completion tokens allowed per UTC day; None: no limit."
    )
    local_j_per_token: float | None = Field(
        None, gt=0, description="Energy of one local token, J (board profile or edged bench)."
    )
    radio_j_per_request: float | None = Field(
        None, gt=0, description="Energy of sending a request and receiving its answer, J."
    )
    semantic_routes: list[SemanticRoute] = Field(
        default_factory=list, description="Routes by meaning (embedding similarity)."
    )


#: Every power source kind, the one list: each is registered by name in edged/power/
#: (``@register``) and built through that registry; tests/unit/test_power_sources.py holds
#: the registry to this list. A board profile's ``power.source`` is one of these.
PowerSourceKind = Literal[
    "ina3221", "power_supply", "rapl", "jtop", "trace", "estimate", "mqtt", "null"
]


class PowerConfig(_Model):
    """Where power, battery and temperature readings come from (docs/energy.md)."""

    source: Literal["auto", PowerSourceKind] = Field(
        "auto", description="'auto': what the detected board profile names."
    )
    profile: str = Field(
        "auto", description="Board profile (hwprofiles/<name>.toml); 'auto' detects it."
    )
    profiles_dir: Path = Field(Path("hwprofiles"), description="Directory of board profiles.")
    sysfs_root: Path = Field(
        Path("/"), description="Root of /sys and /proc (tests point it at a fake tree)."
    )
    sample_hz: float = Field(50.0, gt=0, le=1000, description="Sampling rate, Hz.")
    buffer_s: float = Field(600.0, gt=1, description="Seconds of samples kept in memory.")
    trace_file: Path | None = Field(
        None, description="source='trace': CSV with header t_s,power_w, replayed, looping."
    )
    mqtt_topic: str | None = Field(
        None, description="source='mqtt': topic on which an external meter publishes watts."
    )
    battery: str | None = Field(
        None,
        description="power_supply name of the battery (default: the profile's, or the "
        "first supply of type Battery).",
    )
    idle_w: float | None = Field(
        None,
        ge=0,
        description="Idle baseline, W; default: measured (low percentile of "
        "samples while no request runs).",
    )


class TelemetryConfig(_Model):
    """Periodic telemetry, per-request events, and the store-and-forward spool."""

    interval_s: float = Field(10.0, gt=0, description="Seconds between telemetry messages.")
    events: bool = Field(True, description="Publish edged/<id>/events/request per request.")
    spool_dir: Path = Field(
        Path(".run/spool"), description="Where telemetry waits while the broker is away."
    )
    spool_max_bytes: int = Field(
        16 * 1024 * 1024, ge=4096, description="Spool bound; past it the oldest is dropped."
    )
    state_dir: Path = Field(
        Path(".run/state"), description="Persistent state (the cumulative energy counter)."
    )
    homeassistant_discovery: bool = Field(
        False, description="Publish Home Assistant MQTT discovery for battery, power, tokens/J."
    )
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's prefix.")


class ModelsConfig(_Model):
    """Where model files live and where their manifest is."""

    dir: Path = Field(Path("models"), description="Directory holding model files.")
    manifest: Path = Field(Path("models/manifest.toml"), description="Model manifest (TOML).")
    max_resident_mb: float | None = Field(
        None, gt=0, description="Most MB of on-demand models resident at once; None: MemAvailable."
    )


class GuardianConfig(_Model):
    """On-device rules on every input and on the streamed output."""

    packs: list[Path] = Field(
        default_factory=list,
        description="Rule pack files (TOML), in order; empty: no rules (guardian: null). "
        "Env: EDGED_GUARDIAN__PACKS='[\"configs/guardian/default.toml\"]'.",
    )
    threads: int = Field(1, ge=1, description="Threads for embedding (semantic rules).")
    onnx_providers: list[str] | None = Field(
        None, description="onnxruntime execution providers, in order; default: the board's."
    )


class LogConfig(_Model):
    """Logging to stdout (journald picks it up)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["logfmt", "json"] = "logfmt"
    log_prompts: bool = Field(False, description="Log prompt and answer text (off by default).")


class Config(_Model):
    """The whole daemon configuration."""

    device_id: str = Field(
        default_factory=socket.gethostname,
        description="This device's id; one MQTT topic level, so no '/', '+' or '#'.",
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    local: LocalModelConfig = Field(default_factory=LocalModelConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    power: PowerConfig = Field(default_factory=PowerConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    guardian: GuardianConfig = Field(default_factory=GuardianConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    backends: NamedBackends = Field(default_factory=dict, description="[backends.NAME] tables.")
    agent: AgentField = Field(default_factory=AgentConfig)  # after mqtt: checked against it
    tools: ToolsField = Field(default_factory=dict[str, ToolConfig])  # device tools (agents.md)

    @field_validator("device_id")
    @classmethod
    def _topic_safe(cls, v: str) -> str:
        if not v or not set(v) <= _TOPIC_SEGMENT_CHARS or len(v) > 64:
            raise ValueError("must be 1-64 characters of [A-Za-z0-9._-]")
        return v

    @property
    def client_id(self) -> str:
        """The MQTT client id in use."""
        return self.mqtt.client_id or f"edged-{self.device_id}"


def read_toml(path: Path, what: str, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """A TOML file as a dict; ``error`` (naming the file and ``what`` it is) when it is
    missing or not valid TOML."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise error(f"{path}: {what} not found") from e
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: not valid TOML: {e}") from e


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the key path: ``mqtt.port: Input should be ...``."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{source}: {path}: {msg}")
    return "\n".join(lines)


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load a TOML config file (or defaults when ``path`` is None) and apply env overrides.

    Raises ConfigError with one line per problem, each naming the key path.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = read_toml(path, "config file")
    overrides = env_overrides(os.environ if environ is None else environ)
    if overrides:
        source = f"{source} + environment"
    try:
        return Config.model_validate(merge(data, overrides))
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from e
