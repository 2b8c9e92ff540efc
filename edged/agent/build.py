"""The agent loop of a reloaded config (SIGHUP reloads ``[tools]`` and ``[agent]`` too).

The daemon keeps one executor and one approver for its life, so that a reply or an approval
for a call still in flight reaches it across a reload; a reload builds a new
:class:`~edged.agent.loop.Agent` over the new tool definitions, and a request keeps the
agent it started with (the pipeline reads the attribute once per request).

A config that loads has its tools checked already (edged.config_agent: every topic under
``agent.tool_topic_prefixes``, every placeholder a declared parameter, nothing under
``mqtt.topic_prefix``). The one check left is against the prefix the daemon *runs* under:
``mqtt.topic_prefix`` is not reloaded, so a reloaded config that changed it is checked
against the old one. Nothing is changed before every check passed.
"""

from __future__ import annotations

from typing import Protocol

from edged.config import Config
from edged.config_agent import check_tools_topics

from .confirm import MqttApprover
from .loop import Agent
from .mqtt_executor import MqttToolExecutor


class DaemonTopics(Protocol):
    """The daemon's topics (edged.mqtt.topics.Topics): the prefix it runs under."""

    @property
    def prefix(self) -> str:
        """``mqtt.topic_prefix`` at start."""
        ...

    @property
    def confirm(self) -> str:
        """Where apps answer confirm messages."""
        ...


class Subscriber(Protocol):
    """The daemon's link (edged.mqtt.link.MqttLink)."""

    def subscribe(self, topic: str, qos: int) -> None:
        """Add a subscription, kept for the link's life."""
        ...


def reload_agent(cfg: Config, old: Agent | None, topics: DaemonTopics, link: Subscriber) -> Agent:
    """The agent loop of ``cfg`` (its tools, ``max_steps``) in place of ``old``, whose
    executor, approver and observer it keeps. First ``cfg``'s tool topics are checked against
    ``topics.prefix``, the prefix the daemon runs under (ValueError, and nothing changed,
    when one is under it). Then an MQTT executor also takes the new tools' reply topics, the
    link is given each reply filter and the confirm topic (it keeps what it holds), and an
    MQTT approver takes the new ``confirm_timeout_s`` (for confirmations asked from now on)."""
    if old is None:
        raise ValueError("this daemon has no agent loop to reload")
    check_tools_topics(dict(cfg.tools), cfg.agent, topics.prefix)
    if isinstance(old.executor, MqttToolExecutor):
        for sub in old.executor.add_tools(cfg.tools):
            link.subscribe(sub, 0)
    if cfg.tools:
        link.subscribe(topics.confirm, 1)
    if isinstance(old.approver, MqttApprover):
        old.approver.timeout_s = cfg.agent.confirm_timeout_s
    return Agent(cfg.tools, old.executor, cfg.agent.max_steps, old.approver, old.observe)
