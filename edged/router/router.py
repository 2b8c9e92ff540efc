"""The router: gathers a snapshot of the device's state and asks the policy.

It holds the little state routing needs between requests (battery hysteresis, today's cloud
usage) and the named policies. Reading the snapshot does no I/O: power state, backend
health and measured speeds are cached values other tasks keep fresh. The semantic route
embedding is the one piece of real work, and it runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from edged.config import PolicyConfig, RouterConfig, format_validation_error
from edged.errors import BackendFailed, BadRequest, ConfigError
from edged.router.policy import RouteInputs, RouterState, battery_low, decide, fallback
from edged.types import (
    CLOUD,
    LOCAL,
    CloudUsage,
    Embedder,
    PowerState,
    Request,
    RouteDecision,
    Usage,
    Verdict,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("edged.router")


def needs_tools(request: Request) -> bool:
    """Whether ``request`` needs a backend that supports tools (or a response format)."""
    fmt = request.response_format
    return bool(request.tools) or (fmt is not None and fmt.type != "text")


class BackendView(Protocol):
    """What the router reads from a backend (cached values, no I/O)."""

    def healthy(self) -> bool:
        """Whether it may be routed to now."""
        ...

    @property
    def supports_tools(self) -> bool:
        """Whether it honours tools, tool_choice and response_format."""
        ...


@dataclass(frozen=True, slots=True)
class LocalStats:
    """Measured local model figures (None until measured)."""

    queue: int = 0
    tokens_per_s: float | None = None
    ttft_s: float | None = None


def load_policies(cfg: RouterConfig) -> dict[str, PolicyConfig]:
    """Presets from ``policy_dir`` (``<name>.toml``), then inline policies over them."""
    out: dict[str, PolicyConfig] = {}
    if cfg.policy_dir.is_dir():
        for path in sorted(cfg.policy_dir.glob("*.toml")):
            try:
                with open(path, "rb") as f:
                    out[path.stem] = PolicyConfig.model_validate(tomllib.load(f))
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: not valid TOML: {e}") from e
            except ValidationError as e:
                raise ConfigError(format_validation_error(e, str(path))) from e
    out.update(cfg.policies)
    if cfg.default_policy not in out:
        raise ConfigError(
            f"router.default_policy: no policy {cfg.default_policy!r}; known: "
            f"{sorted(out)} (presets in {cfg.policy_dir})"
        )
    return out


class Router:
    """Per-request routing with named policies."""

    def __init__(
        self,
        cfg: RouterConfig,
        policies: Mapping[str, PolicyConfig],
        backends: Mapping[str, BackendView],
        *,
        power: Callable[[], PowerState] = PowerState,
        local_stats: Callable[[], LocalStats] = LocalStats,
        embedder: Embedder | None = None,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.timezone.utc).date(),
    ) -> None:
        self.cfg = cfg
        self.policies = dict(policies)
        self.backends = backends
        self._power = power
        self._local_stats = local_stats
        self._clock = clock
        self._today = today
        self.state = RouterState()
        self._day = today()
        self.cloud_requests_today = 0
        self.cloud_tokens_today = 0
        self.counts: dict[str, int] = {}
        self._embedder = embedder
        self._route_vecs: list[tuple[str, str, float, Any]] = []
        if cfg.semantic_routes:
            if embedder is None:
                raise ValueError("semantic routes need the embedding model")
            import numpy as np

            for r in cfg.semantic_routes:
                vecs = np.asarray(embedder.embed(list(r.examples)), dtype=np.float32)
                self._route_vecs.append((r.name, r.backend, r.threshold, vecs))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router")

    def _budget_left(self) -> bool:
        today = self._today()
        if today != self._day:
            self._day, self.cloud_requests_today, self.cloud_tokens_today = today, 0, 0
        if (
            self.cfg.cloud_daily_requests is not None
            and self.cloud_requests_today >= self.cfg.cloud_daily_requests
        ):
            return False
        return not (
            self.cfg.cloud_daily_tokens is not None
            and self.cloud_tokens_today >= self.cfg.cloud_daily_tokens
        )

    def _semantic(self, text: str) -> dict[str, tuple[str, bool]]:
        import numpy as np

        assert self._embedder is not None
        v = np.asarray(self._embedder.embed([text]), dtype=np.float32)[0]
        return {
            name: (backend, float(np.max(vecs @ v)) >= threshold)
            for name, backend, threshold, vecs in self._route_vecs
        }

    def inputs(
        self,
        request: Request,
        verdict: Verdict,
        semantic: Mapping[str, tuple[str, bool]] | None = None,
    ) -> RouteInputs:
        """The snapshot the policy sees for this request (no I/O)."""
        local = self.backends.get(LOCAL)
        cloud = self.backends.get(CLOUD)
        stats = self._local_stats()
        tools = needs_tools(request)
        remaining = None
        if request.deadline_at_s is not None:
            remaining = request.deadline_at_s - self._clock()
        return RouteInputs(
            hint=request.route,
            pinned=request.sensitivity == "private" or verdict.force_local,
            max_tokens=request.max_tokens,
            remaining_s=remaining,
            power=self._power(),
            local_ok=local is not None and local.healthy(),
            local_queue=stats.queue,
            local_tokens_per_s=stats.tokens_per_s,
            local_ttft_s=stats.ttft_s,
            cloud_configured=cloud is not None,
            cloud_ok=cloud is not None and cloud.healthy(),
            cloud_budget_left=self._budget_left(),
            local_j_per_token=self.cfg.local_j_per_token,
            radio_j_per_request=self.cfg.radio_j_per_request,
            semantic=semantic or {},
            needs_tools=tools,
            # read only for a request that needs them
            local_tools=not tools or local is None or local.supports_tools,
            cloud_tools=not tools or cloud is None or cloud.supports_tools,
        )

    def policy_for(self, request: Request) -> PolicyConfig:
        """The request's named policy, else the device's default."""
        name = request.policy or self.cfg.default_policy
        try:
            return self.policies[name]
        except KeyError:
            raise BadRequest(
                f"policy: no policy {name!r} on this device; known: {sorted(self.policies)}"
            ) from None

    async def route(self, request: Request, verdict: Verdict) -> RouteDecision:
        """Decide where ``request`` is served (semantic embedding off the event loop)."""
        policy = self.policy_for(request)
        semantic: dict[str, tuple[str, bool]] = {}
        # The embedding only matters for 'auto' requests that may leave, on a device with a
        # cloud: anything else is decided before the policy looks at meaning.
        may_use_meaning = (
            request.route == "auto"
            and CLOUD in self.backends
            and not (request.sensitivity == "private" or verdict.force_local)
        )
        if self._route_vecs and may_use_meaning:
            text = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
            loop = asyncio.get_running_loop()
            semantic = await loop.run_in_executor(self._pool, self._semantic, text)
        inputs = self.inputs(request, verdict, semantic)
        # The battery state moves even when no backend can serve (decide raises then).
        self.state = RouterState(battery_low(inputs.power, policy, self.state.battery_low))
        decision, self.state = decide(inputs, policy, self.state)
        self.record(decision)
        return decision

    def fallback(
        self, route: RouteDecision, failed: BackendFailed, verdict: Verdict
    ) -> RouteDecision:
        """After ``route``'s backend failed: the other backend if it may serve
        (:func:`~edged.router.policy.fallback`), else ``failed`` is raised again."""
        local = self.backends.get(LOCAL)
        cloud = self.backends.get(CLOUD)
        tools = needs_tools(verdict.request)
        decision = fallback(
            route,
            before_first_token=failed.before_first_token,
            pinned=verdict.request.sensitivity == "private" or verdict.force_local,
            local_ok=local is not None and local.healthy() and (not tools or local.supports_tools),
            cloud_ok=cloud is not None and cloud.healthy() and (not tools or cloud.supports_tools),
        )
        if decision is None:
            raise failed
        log.warning(
            "event=%s_fallback_%s error=%r",
            "cloud_failed" if decision.backend == LOCAL else "local_failed",
            decision.backend,
            failed.message,
        )
        return decision

    def record(self, decision: RouteDecision) -> None:
        """Count a decision (telemetry) and a cloud request against today's budget."""
        key = f"{decision.backend}:{','.join(decision.reasons)}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if decision.backend == CLOUD:
            self.cloud_requests_today += 1

    def served(self, route: RouteDecision, usage: Usage) -> None:
        """Count the completion tokens a cloud answer took against today's budget."""
        if route.backend == CLOUD:
            self.cloud_tokens_today += usage.completion_tokens

    def cloud_usage(self) -> CloudUsage:
        """Today's cloud requests and completion tokens (telemetry)."""
        return CloudUsage(self.cloud_requests_today, self.cloud_tokens_today)

    def adopt(self, old: Router) -> None:
        """Keep what the previous router remembered (after a reload)."""
        self.state = old.state
        self._day = old._day
        self.cloud_requests_today = old.cloud_requests_today
        self.cloud_tokens_today = old.cloud_tokens_today
        self.counts = dict(old.counts)

    def close(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=False)
