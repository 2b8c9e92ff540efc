"""Which onnxruntime execution providers a session gets: the board's wish list against what
the installed onnxruntime offers (``onnxruntime.get_available_providers()``).

Pure: :func:`choose_providers` takes both lists and returns the providers to pass (always
ending in ``CPUExecutionProvider``) and, when a wanted one is missing, the line to log. The
wish list is ``guardian.onnx_providers``, filled from the board profile's ``[accel]
onnx_providers`` (CUDA, TensorRT on Jetson; QNN on Snapdragon; CPU elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("edged.embeddings")

CPU = "CPUExecutionProvider"
#: Options a provider needs to start: QNN runs on the Hexagon NPU through its HTP backend
#: library (onnxruntime's QNN execution provider documentation, ``backend_path``).
DEFAULT_OPTIONS: dict[str, dict[str, str]] = {
    "QNNExecutionProvider": {"backend_path": "libQnnHtp.so"}
}


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    """The providers a session is created with, and why any wanted one is not among them."""

    providers: tuple[str, ...]
    options: tuple[dict[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    available: tuple[str, ...] = field(default=())

    @property
    def first(self) -> str:
        """The provider that takes the work it supports first."""
        return self.providers[0]

    @property
    def fallback_reason(self) -> str | None:
        """A log line when a wanted provider is missing (None when all were there)."""
        if not self.missing:
            return None
        return (
            f"onnxruntime offers no {', '.join(self.missing)} (available: "
            f"{', '.join(self.available) or 'none'}); using {', '.join(self.providers)}"
        )


def choose_providers(
    wanted: Sequence[str] | None,
    available: Sequence[str],
    options: Mapping[str, Mapping[str, str]] | None = None,
) -> ProviderChoice:
    """The wanted providers that ``available`` has, in the wanted order, then CPU."""
    chosen = [p for p in (wanted or ()) if p in available and p != CPU]
    missing = tuple(p for p in (wanted or ()) if p not in available and p != CPU)
    chosen.append(CPU)
    table = DEFAULT_OPTIONS if options is None else options
    opts = tuple(dict(table.get(p, {})) for p in chosen)
    return ProviderChoice(tuple(chosen), opts, missing, tuple(available))


def session_providers(choice: ProviderChoice) -> list[str | tuple[str, dict[str, str]]]:
    """``InferenceSession(providers=...)``: names, with options where there are any."""
    return [(p, o) if o else p for p, o in zip(choice.providers, choice.options, strict=True)]
