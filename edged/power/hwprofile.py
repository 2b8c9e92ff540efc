"""The old home of board profiles, kept as names only: ``cli.py`` (``edged doctor``) and
``devbench.py`` still import from here until they move (issue 13 item 1). New code imports
from :mod:`edged.power.profile` (schema, loading), :mod:`edged.power.detect` (board
detection), :mod:`edged.power.board` (the board source) and :mod:`edged.power.build`
(building a source through the registry)."""

from __future__ import annotations

from edged.power.board import BoardSource, ThermalReader, augment
from edged.power.build import build_source, sample_hz, source_kind, unavailable_reason
from edged.power.detect import (
    BoardFacts,
    Detection,
    detect,
    detect_reason,
    read_board_facts,
    select_profile,
)
from edged.power.profile import (
    DetectRules,
    EstimateFacts,
    HwProfile,
    Ina3221Facts,
    PowerFacts,
    PowerMode,
    RailRole,
    RouterHints,
    SourceKind,
    load_profile,
    load_profiles,
)

__all__ = [
    "BoardFacts",
    "BoardSource",
    "DetectRules",
    "Detection",
    "EstimateFacts",
    "HwProfile",
    "Ina3221Facts",
    "PowerFacts",
    "PowerMode",
    "RailRole",
    "RouterHints",
    "SourceKind",
    "ThermalReader",
    "augment",
    "build_source",
    "detect",
    "detect_reason",
    "load_profile",
    "load_profiles",
    "read_board_facts",
    "sample_hz",
    "select_profile",
    "source_kind",
    "unavailable_reason",
]
