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
from edged.config_backends import BackendEntry
from edged.errors import BackendFailed, BadRequest, ConfigError
from edged.router.policy import RouteInputs, RouterState, battery_low
from edged.router.tiers import Candidate, decide_tiers, fallback_tiers
from edged.types import (
    CLOUD,
    LOCAL,
    BackendStats,
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

    def stats(self) -> BackendStats:
        """Its queue and measured speeds (read for device backends other than ``local``)."""
        ...


@dataclass(frozen=True, slots=True)
class LocalStats:
    """Measured local model figures (None until measured)."""

    queue: int = 0
    tokens_per_s: float | None = None
    ttft_s: float | None = None


def default_table(names: Mapping[str, object]) -> dict[str, BackendEntry]:
    """The backend table when none is given: ``local`` on the device, ``cloud`` public."""
    out = {}
    for name in names:
        if name not in (LOCAL, CLOUD):
            raise ValueError(f"backend {name!r} needs a table entry (its trust class)")
        kind = "local" if name == LOCAL else "cloud"
        out[name] = BackendEntry(
            name=name, kind=kind, trust="device" if name == LOCAL else "public"
        )
    return out


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
        table: Mapping[str, BackendEntry] | None = None,
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
        #: Every backend's name, kind, trust class and daily budget (config_backends).
        self.table = dict(table) if table is not None else default_table(backends)
        #: Today's [requests, completion tokens] per backend (the daily budgets).
        self.today_usage: dict[str, list[int]] = {}
        self.counts: dict[str, int] = {}
        self._embedder = embedder
        self._route_vecs: list[tuple[str, str, float, Any]] = []
        if cfg.semantic_routes:
            if embedder is None:
                raise ValueError("semantic routes need the embedding model")
            import numpy as np

            for r in cfg.semantic_routes:
                if r.backend not in (LOCAL, CLOUD) and r.backend not in self.table:
                    raise ConfigError(
                        f"router.semantic_routes {r.name!r}: no backend {r.backend!r}; "
                        f"known: {sorted(self.table)}"
                    )
                vecs = np.asarray(embedder.embed(list(r.examples)), dtype=np.float32)
                self._route_vecs.append((r.name, r.backend, r.threshold, vecs))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router")

    @property
    def cloud_requests_today(self) -> int:
        """Requests routed to ``cloud`` today."""
        return self._used(CLOUD)[0]

    @property
    def cloud_tokens_today(self) -> int:
        """Completion tokens ``cloud`` answered with today."""
        return self._used(CLOUD)[1]

    def _used(self, name: str) -> list[int]:
        today = self._today()
        if today != self._day:
            self._day, self.today_usage = today, {}
        return self.today_usage.setdefault(name, [0, 0])

    def _budget_left(self, name: str = CLOUD) -> bool:
        requests, tokens = self._used(name)
        entry = self.table.get(name)
        if name == CLOUD:  # [router] cloud_daily_* (a table built from the config agrees)
            max_requests, max_tokens = self.cfg.cloud_daily_requests, self.cfg.cloud_daily_tokens
        else:
            max_requests = entry.daily_requests if entry else None
            max_tokens = entry.daily_tokens if entry else None
        if max_requests is not None and requests >= max_requests:
            return False
        return not (max_tokens is not None and tokens >= max_tokens)

    def candidates(self, tools: bool) -> list[Candidate]:
        """Every backend as the tier policy sees it (cached values, no I/O)."""
        out = []
        for name, backend in self.backends.items():
            entry = self.table.get(name)
            if entry is None:
                continue
            if name == LOCAL:
                st = self._local_stats()
                queue, tps, ttft = st.queue, st.tokens_per_s, st.ttft_s
            elif entry.trust == "device":
                bs = backend.stats()
                queue, tps, ttft = bs.queue_depth or 0, bs.tokens_per_s, bs.ttft_s
            else:
                queue, tps, ttft = 0, None, None
            out.append(
                Candidate(
                    name=name,
                    trust=entry.trust,
                    ok=backend.healthy(),
                    budget_left=entry.trust == "device" or self._budget_left(name),
                    tools=not tools or backend.supports_tools,
                    queue=queue,
                    tokens_per_s=tps,
                    ttft_s=ttft,
                )
            )
        return out

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
            and len(self.backends) > 1
            and not (request.sensitivity == "private" or verdict.force_local)
        )
        if self._route_vecs and may_use_meaning:
            text = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
            loop = asyncio.get_running_loop()
            semantic = await loop.run_in_executor(self._pool, self._semantic, text)
        inputs = self.inputs(request, verdict, semantic)
        # The battery state moves even when no backend can serve (decide raises then).
        self.state = RouterState(battery_low(inputs.power, policy, self.state.battery_low))
        decision, self.state = decide_tiers(
            inputs, self.candidates(inputs.needs_tools), policy, self.state
        )
        self.record(decision)
        return decision

    def fallback(
        self, route: RouteDecision, failed: BackendFailed, verdict: Verdict
    ) -> RouteDecision:
        """After ``route``'s backend failed: the other backend if it may serve
        (:func:`~edged.router.policy.fallback`), else ``failed`` is raised again."""
        tools = needs_tools(verdict.request)
        decision = fallback_tiers(
            route,
            before_first_token=failed.before_first_token,
            pinned=verdict.request.sensitivity == "private" or verdict.force_local,
            needs_tools=tools,
            backends=self.candidates(tools),
            policy=self.policy_for(verdict.request),
        )
        if decision is None:
            raise failed
        log.warning(
            "event=%s_fallback_%s error=%r",
            decision.reasons[-1],
            decision.backend,
            failed.message,
        )
        return decision

    def record(self, decision: RouteDecision) -> None:
        """Count a decision (telemetry) and a cloud request against today's budget."""
        key = f"{decision.backend}:{','.join(decision.reasons)}"
        self.counts[key] = self.counts.get(key, 0) + 1
        entry = self.table.get(decision.backend)
        if entry is not None and entry.trust != "device":
            self._used(decision.backend)[0] += 1

    def served(self, route: RouteDecision, usage: Usage) -> None:
        """Count the completion tokens a remote answer took against today's budget."""
        entry = self.table.get(route.backend)
        if entry is not None and entry.trust != "device":
            self._used(route.backend)[1] += usage.completion_tokens

    def usage_today(self, name: str) -> CloudUsage:
        """Today's requests and completion tokens of backend ``name`` (telemetry)."""
        requests, tokens = self._used(name)
        return CloudUsage(requests, tokens)

    def cloud_usage(self) -> CloudUsage:
        """Today's cloud requests and completion tokens (telemetry)."""
        return CloudUsage(self.cloud_requests_today, self.cloud_tokens_today)

    def adopt(self, old: Router) -> None:
        """Keep what the previous router remembered (after a reload)."""
        self.state = old.state
        self._day = old._day
        self.today_usage = {k: list(v) for k, v in old.today_usage.items()}
        self.counts = dict(old.counts)

    def close(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=False)
