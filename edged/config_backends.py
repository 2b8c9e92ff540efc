"""``[backends.NAME]``: named backends with a trust class (docs/routing.md, issue 16).

The pinned shape::

    [backends.edge]
    kind = "openai"                 # an OpenAI-compatible server
    trust = "lan"                   # device | lan | public
    base_url = "http://192.168.1.20:8000/v1"
    model = "qwen2.5-7b-instruct"
    # API key: $EDGED_EDGE_API_KEY or the systemd credential "edge-api-key"

    [backends.gemma]
    kind = "llama"                  # a second local model, from the manifest
    trust = "device"
    model = "gemma3-270m"

``[local]`` and ``[cloud]`` keep working: they are the backends named ``local`` (trust
``device``) and ``cloud`` (trust ``public``); :func:`backend_table` gives the whole table.
Each named ``openai`` backend has its own timeouts, breaker, Retry-After handling and daily
budget.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from edged.config_accel import OFFLOAD_KEYS, OffloadSettings

if TYPE_CHECKING:
    from edged.config import CloudConfig, Config

#: Trust classes, from the most to the least trusted: the device itself, a server on the
#: same network, a public cloud.
Trust = Literal["device", "lan", "public"]
TRUSTS: tuple[Trust, ...] = ("device", "lan", "public")
#: Names a ``[backends.NAME]`` table may not take: the two built-in backends (configured by
#: ``[local]`` and ``[cloud]``), the route hint ``auto``, and the trust classes (a policy's
#: ``order`` names both).
RESERVED_NAMES = frozenset({"local", "cloud", "auto", "device", "lan", "public"})
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: An environment variable holding a named backend's API key (never a config key).
API_KEY_ENV_RE = re.compile(r"^EDGED_(?!.*__)[A-Z0-9_]+_API_KEY$")


def api_key_env(name: str) -> str:
    """``$EDGED_<NAME>_API_KEY``: ``edge`` -> ``EDGED_EDGE_API_KEY`` (``-`` becomes ``_``)."""
    return f"EDGED_{name.upper().replace('-', '_')}_API_KEY"


def api_key_credential(name: str) -> str:
    """The systemd credential holding a named backend's API key: ``<name>-api-key``."""
    return f"{name}-api-key"


class NamedBackendConfig(OffloadSettings):
    """One ``[backends.NAME]`` table. A ``llama`` one may set the GPU offload keys of
    ``[local]`` (edged/config_accel.py); those it leaves unset are ``[local]``'s."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    kind: Literal["openai", "llama"] = Field(
        description="'openai': an OpenAI-compatible server; 'llama': a model from the "
        "manifest, run on this device like [local]."
    )
    trust: Trust = Field(
        description="device | lan | public: where the data goes; policies say which classes "
        "a request may use (private_on)."
    )
    base_url: str | None = Field(
        None, description="kind openai: the server's OpenAI API root, ending in /v1."
    )
    model: str = Field(
        description="kind openai: the model name sent to the server; kind llama: a model "
        "name from the manifest."
    )
    connect_timeout_s: float = Field(3.0, gt=0, description="TCP/TLS connect timeout, s.")
    read_timeout_s: float = Field(20.0, gt=0, description="Longest wait for the stream, s.")
    first_token_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for the first token (retry included), s."
    )
    retries: int = Field(1, ge=0, le=1, description="Retries before the first token (0 or 1).")
    breaker_failures: int = Field(3, ge=1, description="Failures in a row that open the breaker.")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="Seconds the breaker stays open.")
    daily_requests: int | None = Field(
        None, ge=0, description="Requests allowed per UTC day; None: no limit."
    )
    daily_tokens: int | None = Field(
        None, ge=0, description="Completion tokens allowed per UTC day; None: no limit."
    )
    n_threads: int | None = Field(
        None, ge=1, description="kind llama: decode threads; default: [local] n_threads."
    )
    keep_alive_s: float | None = Field(
        None,
        description="kind llama: unload after this many seconds idle and load again on "
        "demand (-1: load at start, never unload); None: loaded at start like [local].",
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> NamedBackendConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("kind 'openai' needs base_url")
        if self.kind == "llama":
            if self.trust != "device":
                raise ValueError("kind 'llama' runs on this device: trust must be 'device'")
            if self.base_url is not None:
                raise ValueError("kind 'llama' has no base_url")
        if self.kind == "openai":
            set_here = [k for k in OFFLOAD_KEYS if getattr(self, k) is not None]
            if set_here:
                raise ValueError(
                    f"kind 'openai' runs elsewhere: {', '.join(set_here)} are for llama"
                )
        if self.kind == "openai" and self.trust == "device":
            raise ValueError("kind 'openai' is a server: trust must be 'lan' or 'public'")
        return self


def check_names(backends: dict[str, NamedBackendConfig]) -> dict[str, NamedBackendConfig]:
    """Reject reserved or malformed names (the validator of ``Config.backends``)."""
    for name in backends:
        if name in RESERVED_NAMES:
            raise ValueError(
                f"{name!r} is reserved ([local] and [cloud] configure 'local' and 'cloud')"
            )
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r}: a name is 1-32 of [a-z0-9_-], starting with a letter")
    return backends


#: ``Config.backends``: the ``[backends.NAME]`` tables, names checked.
NamedBackends = Annotated[dict[str, NamedBackendConfig], AfterValidator(check_names)]

OffloadReason = Literal[
    "deadline", "queue_full", "battery_low", "thermal", "power_budget", "energy", "semantic"
]


class TierPolicy(BaseModel):
    """A policy's tier keys (``PolicyConfig`` has them; edged.router.tiers reads them)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    private_on: list[Trust] = Field(
        default_factory=lambda: list[Trust](["device"]),
        description="Trust classes a private request may be served on.",
    )
    order: list[str] | None = Field(
        None,
        description="Where work may go, in order of preference: trust classes (device, lan, "
        "public) or backend names; a backend not named (nor its class) is never used. "
        "Default: prefer local: device, lan, public; prefer cloud: public, lan, device.",
    )
    offload_on_tier: dict[Literal["lan", "public"], list[OffloadReason]] = Field(
        default_factory=dict,
        description="Per remote tier, the conditions that may send work there (a tier not "
        "listed: any of offload_on).",
    )


class BackendEntry(BaseModel):
    """One backend of the effective table: its name, kind, trust and budget."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["local", "cloud", "openai", "llama"]
    trust: Trust
    daily_requests: int | None = None
    daily_tokens: int | None = None


def backend_table(cfg: Config) -> dict[str, BackendEntry]:
    """Every backend this config has, in order: ``local``, ``cloud`` (when enabled), then
    each ``[backends.NAME]`` in the file's order."""
    out = {"local": BackendEntry(name="local", kind="local", trust="device")}
    if cfg.cloud.enabled:
        out["cloud"] = BackendEntry(
            name="cloud",
            kind="cloud",
            trust="public",
            daily_requests=cfg.router.cloud_daily_requests,
            daily_tokens=cfg.router.cloud_daily_tokens,
        )
    for name, b in cfg.backends.items():
        out[name] = BackendEntry(
            name=name,
            kind=b.kind,
            trust=b.trust,
            daily_requests=b.daily_requests,
            daily_tokens=b.daily_tokens,
        )
    return out


def as_cloud_config(name: str, b: NamedBackendConfig) -> CloudConfig:
    """A named ``openai`` backend as the ``CloudConfig`` its client is built from (its own
    timeouts, retries and breaker; its key from ``$EDGED_<NAME>_API_KEY`` or the
    credential ``<name>-api-key``)."""
    from edged.config import CloudConfig

    assert b.base_url is not None
    return CloudConfig(
        enabled=True,
        base_url=b.base_url,
        model=b.model,
        api_key_env=api_key_env(name),
        api_key_credential=api_key_credential(name),
        connect_timeout_s=b.connect_timeout_s,
        read_timeout_s=b.read_timeout_s,
        first_token_timeout_s=b.first_token_timeout_s,
        retries=b.retries,
        breaker_failures=b.breaker_failures,
        breaker_cooldown_s=b.breaker_cooldown_s,
    )
