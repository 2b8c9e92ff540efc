"""Building the guardian from the config: no packs, no rules; else the rule engine."""

from __future__ import annotations

from edged.config import Config
from edged.guardian import Guardian, PassGuardian
from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import load_packs
from edged.types import Embedder, ToolAudit


def build_guardian(cfg: Config, embedder: Embedder, audit: ToolAudit | None = None) -> Guardian:
    """The pass-through guardian without packs, else a RuleGuardian over them (blocking).

    ``embedder`` is used only when some rule is semantic (pass a lazy one, such as
    :class:`edged.embeddings.lazy.LazyEmbedder`, so that no model loads otherwise);
    ``audit`` is told every tool-call decision (the ``events/tool`` telemetry). Raises
    ConfigError / ModelError naming the file, rule id and reason.
    """
    if not cfg.guardian.packs:
        return PassGuardian(audit)  # no rules: every call allowed, and audited so
    packs = load_packs(cfg.guardian.packs)
    semantic = any(r.kind == "semantic" for p in packs for r in p.rule)
    return RuleGuardian(packs, embedder if semantic else None, audit=audit)
