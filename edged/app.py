"""Composition root: builds the components, runs them as named tasks, shuts down in order.

Start order: model loaded (so no request waits on a load), then MQTT connected (the broker
then delivers requests queued while we were away), then requests flow. Stop order: stop
admitting, let requests in flight finish within the grace period, publish ``offline``,
disconnect, free the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from edged import __version__
from edged.accel import board_profile, with_board_defaults
from edged.agent.build import reload_agent
from edged.agent.confirm import MqttApprover
from edged.agent.loop import Agent
from edged.agent.mqtt_executor import MqttToolExecutor
from edged.aio import retire
from edged.backends.base import CLOUD_KIND, LOCAL_KINDS, Backend, BackendSpec, build, factory
from edged.backends.named import build_named
from edged.backends.supervisor import Supervisor
from edged.config import Config, load_config
from edged.embeddings.lazy import LazyEmbedder
from edged.energy.meter import EnergyMeter, NullMeter
from edged.energy.sampler import Sampler
from edged.guardian import Guardian, PassGuardian
from edged.guardian.build import build_guardian
from edged.guardian.engine import RuleGuardian
from edged.http_front import build_http
from edged.ingress.journal import Journal
from edged.ingress.service import Ingress
from edged.models import load_manifest, model_file, resolve
from edged.mqtt.connect import daemon_link
from edged.mqtt.link import Incoming
from edged.mqtt.topics import Topics
from edged.pipeline import Pipeline
from edged.power.base import FedSource
from edged.power.build import open_power
from edged.router.build import RouterBuilder
from edged.router.router import Router
from edged.service import systemd
from edged.telemetry.presence import Presence
from edged.telemetry.runtime import Telemetry
from edged.telemetry.stats import backends_report, build_stats
from edged.types import CLOUD, LOCAL, AgentStep, PowerState, ReplyAddress, ToolDecision

log = logging.getLogger("edged.app")

SHUTDOWN_GRACE_S = 10.0


class App:
    """The daemon: one instance per process."""

    def __init__(self, cfg: Config, config_path: Path | None = None) -> None:
        cfg = with_board_defaults(cfg, board_profile(cfg))  # [accel]: GPU offload, ONNX EPs
        self.cfg = cfg
        self.config_path = config_path
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.device_id)
        kind = LOCAL_KINDS[(cfg.local.backend, cfg.local.isolation)]
        model_path = None
        self.model_name = "fake"
        if factory(kind).needs_model_file:
            entry = load_manifest(cfg.models.manifest).get(cfg.local.model)
            self.model_name = entry.name
            model_path = resolve(entry, cfg.models.dir)
        self.local: Backend = build(kind, BackendSpec(LOCAL, cfg, model_path))
        self.backends: dict[str, Backend] = {LOCAL: self.local}
        if cfg.cloud.enabled:
            self.backends[CLOUD] = build(CLOUD_KIND, BackendSpec(CLOUD, cfg))
        self.backends.update(build_named(cfg, lambda m: model_file(cfg, m)))  # [backends.NAME]
        self.embedder = LazyEmbedder(cfg)
        self.sampler: Sampler | None = None  # built in run() (reads sysfs)
        self.profile_name: str | None = None
        self.routers = RouterBuilder(cfg, self.backends, self._power_state, self.embedder)
        # device tools ([tools.NAME]): published on this daemon's link (docs/agents.md)
        self.tools = MqttToolExecutor(cfg.tools, lambda t, p: self.link.publish(t, p, qos=1))
        self.approver = MqttApprover(self._publish_reply, cfg.agent.confirm_timeout_s)
        agent = Agent(cfg.tools, self.tools, cfg.agent.max_steps, self.approver, self._tool_step)
        self.pipeline = Pipeline(
            guardian=PassGuardian(),
            router=self.routers(cfg, semantic=False),
            backends=self.backends,
            meter=NullMeter(),
            agent=agent,  # with no [tools], ingress refuses every device_tools name
        )
        self.presence = Presence(cfg, self.topics, version=__version__, model=self.model_name)
        self.link = daemon_link(
            cfg,
            will=self.presence.will,
            subscriptions=self._subscriptions(cfg),
            on_message=self._on_message,
            on_connected=self._on_connected,
        )
        self.ingress = Ingress(
            cfg,
            self.topics,
            self.link,
            self.link.ack_when_done,
            self.pipeline.handle,
            answered_file=cfg.telemetry.state_dir / "answered-ids.txt",
            journal=Journal(cfg.telemetry.state_dir / "inflight.journal"),
        )
        self.http = build_http(cfg, self.ingress, self.backends, self.link.connected)
        self.telemetry: Telemetry | None = None  # started in run(), once the sampler runs
        self.supervisor = Supervisor(self.backends)
        self.notifier = systemd.Notifier(unset_environment=True)
        self.loop_lag = systemd.LoopLag()
        self._stop = asyncio.Event()
        self._background: set[asyncio.Future[Any]] = set()

    def _subscriptions(self, cfg: Config) -> tuple[tuple[str, int], ...]:
        subs = [(self.topics.request, 1), (self.topics.cancel, 1)]
        if cfg.power.source == "mqtt" and cfg.power.mqtt_topic:
            subs.append((cfg.power.mqtt_topic, 0))  # an external power meter
        subs.extend((t, 0) for t in self.tools.subscriptions)  # device tools' replies
        if cfg.tools:
            subs.append((self.topics.confirm, 1))  # the app's approvals of confirm calls
        return tuple(subs)

    def _build_sampler(self) -> Sampler:
        """Profile, power source and sampler (blocking: reads sysfs). A source that cannot
        be built leaves energy unknown with the reason; serving goes on."""
        power = open_power(self.cfg.power)
        self.profile_name = power.profile_name
        return Sampler(power.source, power.sample_hz, self.cfg.power.buffer_s)

    def _power_state(self) -> PowerState:
        return PowerState() if self.sampler is None else self.sampler.power_state()

    def _stats(self) -> dict[str, Any]:
        cloud = self.backends.get(CLOUD)
        return build_stats(
            local=self.local.stats(),
            cloud=None if cloud is None else cloud.stats(),
            cloud_usage=self.pipeline.router.cloud_usage(),
            in_flight=self.ingress.in_flight,
            ingress=self.ingress.counts,
            idle_w=self.pipeline.meter.idle_w,
            outbox=None if self.telemetry is None else self.telemetry.outbox,
            sampler=self.sampler,
            profile=self.profile_name,
            backends=backends_report(self.backends, self.pipeline.router),
        )

    def _rules(self, cfg: Config) -> tuple[Guardian, Router]:
        """Guardian and router for ``cfg`` (blocking: reads packs and policies, may load the
        embedding model)."""
        return build_guardian(cfg, self.embedder, self._audit_tool), self.routers(cfg)

    def _on_message(self, msg: Incoming) -> None:
        if msg.topic != self.topics.request and msg.topic == self.cfg.power.mqtt_topic:
            source = self.sampler.source if self.sampler else None
            if isinstance(source, FedSource):
                source.feed(msg.payload)
            self.link.ack_when_done(msg)()
            return
        if self.tools.on_message(msg.topic, msg.payload, msg.retain):  # a device tool's reply
            self.link.ack_when_done(msg)()
            return
        if msg.topic == self.topics.confirm:
            self.approver.on_confirm(msg.payload)
            self.link.ack_when_done(msg)()
            return
        self.ingress.on_message(msg)

    def _publish_reply(self, reply: ReplyAddress, payload: bytes) -> None:
        qos = self.cfg.mqtt.reply_qos
        self.link.publish(reply.topic, payload, qos=qos, correlation_data=reply.correlation_data)

    def _on_connected(self, session_present: bool) -> None:
        self.notifier.status(self._serving_status())
        self.presence.online(self.link)
        self._spawn(self.presence.announce(self.link))

    async def reload(self) -> bool:
        """SIGHUP: re-read the config; swap in new guardian rules, ingress limits and device
        tools ([tools], [agent]).

        A config or pack that fails to load is refused with a log line, and the rules already
        running stay. Requests in flight finish under the rules they started with.
        """
        loop = asyncio.get_running_loop()
        try:
            cfg = await loop.run_in_executor(None, load_config, self.config_path)
            guardian, router = await loop.run_in_executor(None, self._rules, cfg)
            # last: [tools] and [agent] checked, then new reply topics subscribed
            agent = reload_agent(cfg, self.pipeline.agent, self.topics, self.link)
        except Exception as e:
            log.error("event=reload_refused error=%r", str(e))
            return False
        old = (self.pipeline.guardian, self.pipeline.router)
        if isinstance(guardian, RuleGuardian) and isinstance(old[0], RuleGuardian):
            guardian.tool_rules.adopt(old[0].tool_rules)  # rate caps go on counting
        router.adopt(self.pipeline.router)  # type: ignore[arg-type]
        self.pipeline.guardian = guardian
        self.pipeline.router = router
        self.pipeline.agent = agent  # requests in flight keep the one they started with
        self.ingress.reconfigure(cfg)
        if self.http is not None:  # new limits for HTTP requests too (not host/port/key)
            self.http.front.cfg = cfg
        if self.telemetry is not None:  # audit events carry arguments only with log_prompts
            self.telemetry.reporter.log_arguments = cfg.log.log_prompts
        self.cfg = self.presence.cfg = cfg
        self._spawn(
            retire(
                old,
                self.ingress.in_flight_tasks(),
                lambda: (self.pipeline.guardian, self.pipeline.router),
            )
        )
        log.info("event=reloaded guardian_packs=%d", len(cfg.guardian.packs))
        return True

    def _audit_tool(self, decision: ToolDecision) -> None:
        if self.telemetry is not None:  # decisions before telemetry starts go only to the log
            self.telemetry.reporter.observe_tool(decision)

    def _tool_step(self, step: AgentStep) -> None:
        if self.telemetry is not None:  # telemetry's device-tool counts
            self.telemetry.reporter.observe_step(step)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the app holds until it ends (the loop keeps only weak
        references to tasks, so an unreferenced one can be collected mid-run)."""
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stop(self) -> None:
        """Ask the daemon to shut down (signal handlers call this)."""
        if not self._stop.is_set():
            self.notifier.stopping(f"stopping: {self.ingress.in_flight} requests in flight")
        self._stop.set()

    async def _on_sighup(self) -> None:
        self.notifier.reloading("reloading config")
        ok = await self.reload()
        self.notifier.ready(
            self._serving_status() if ok else "serving; reload refused (see the log)"
        )

    def _serving_status(self) -> str:
        state = "" if self.link.connected.is_set() else "; broker unreachable, retrying"
        return f"serving {self.model_name} on {self.topics.request}{state}"

    def liveness(self) -> str | None:
        """The watchdog's check: None when healthy, else what is wrong (the ping is then
        withheld, and systemd restarts edged after WatchdogSec)."""
        lag = self.loop_lag.over(5.0)
        if lag is not None:
            return lag
        if self.sampler is not None and not self.sampler.alive() and self.sampler.started_at_s:
            return "power sampler thread died"
        return self.supervisor.problem

    async def run(self) -> int:
        """Run until stopped; returns the process exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._on_sighup()))
        watchdog = asyncio.create_task(
            systemd.watchdog_loop(
                self.notifier, systemd.watchdog_interval_s(), self.liveness, lag=self.loop_lag
            ),
            name="watchdog",
        )
        async with systemd.extending_timeout(self.notifier, 30.0, limit_s=600):
            self.notifier.status("loading guardian rules and routing policies")
            rules = await loop.run_in_executor(None, self._rules, self.cfg)
            self.pipeline.guardian, self.pipeline.router = rules
            for name, backend in self.backends.items():
                self.notifier.status(f"starting backend {name} ({self.model_name})")
                await backend.start()
            self.notifier.status("reading the power source")
            self.sampler = sampler = await loop.run_in_executor(None, self._build_sampler)
        sampler.start()
        self.pipeline.meter = EnergyMeter(sampler, idle_w=self.cfg.power.idle_w)
        self.telemetry = telemetry = Telemetry(
            self.cfg, self.topics, self.link, sampler, self._stats
        )
        await telemetry.open()
        self.pipeline.observer = telemetry.reporter.observe
        # requests journalled but unanswered when edged stopped, before the link delivers any
        # (their replies wait in paho's queue until it is connected)
        self.ingress.resume()
        if self.http is not None:
            await self.http.start()
        link_task = asyncio.create_task(self.link.run(), name="mqtt-link")
        self.notifier.status(f"connecting to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}")
        connected = asyncio.create_task(self.link.connected.wait())
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        # a SIGTERM while the broker is still unreachable stops at once, not after 30 s
        await asyncio.wait(
            {connected, link_task, stop_task}, timeout=30.0, return_when=asyncio.FIRST_COMPLETED
        )
        connected.cancel()
        self.notifier.ready(self._serving_status())
        side_tasks = telemetry.start()
        side_tasks.append(asyncio.create_task(self.supervisor.run(), name="supervisor"))
        log.info(
            "event=started device_id=%s request_topic=%s broker=%s:%d",
            self.cfg.device_id,
            self.topics.request,
            self.cfg.mqtt.host,
            self.cfg.mqtt.port,
        )
        done, _ = await asyncio.wait({link_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if link_task in done:  # the link never returns unless it crashed
            stop_task.cancel()
            link_task.result()
            return 1
        log.info("event=stopping in_flight=%d", self.ingress.in_flight)
        await self.ingress.drain(SHUTDOWN_GRACE_S)
        if self.http is not None:
            await self.http.stop()
        for task in side_tasks:
            task.cancel()
        await asyncio.gather(*side_tasks, return_exceptions=True)
        await telemetry.close()  # the last record, and the counter saved
        if self.link.connected.is_set():
            self.presence.offline(self.link)
        await self.link.close()
        link_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link_task
        for backend in self.backends.values():
            await backend.close()
        await loop.run_in_executor(None, sampler.stop)
        watchdog.cancel()
        log.info("event=stopped")
        return 0
