"""The backend interface and the registry of backend kinds.

A backend turns a :class:`~edged.types.Request` into a stream of events: one ``Started``,
any number of ``TextDelta``, then one ``Finished``. Closing the stream early (``aclose`` or
task cancellation) cancels the generation. Errors are raised as :mod:`edged.errors` types.

Backends are built by kind, the way Frigate builds detectors: each class registers itself
with ``@register("<kind>")`` and builds itself from a :class:`BackendSpec`
(``from_spec``); :data:`LOCAL_KINDS` maps the config's ``[local] backend`` and
``isolation`` to a kind, and :func:`build` makes one.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar, runtime_checkable

from edged.config import BackendKind, Config
from edged.types import BackendStats, Request, StreamEvent


@runtime_checkable
class Backend(Protocol):
    """What the pipeline needs from any backend, local or remote."""

    name: str

    @property
    def supports_tools(self) -> bool:
        """Whether it honours ``tools``, ``tool_choice`` and ``response_format`` (the router
        sends a request that carries them only to a backend that does)."""
        ...

    def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """Stream events for one request; closing the iterator cancels the generation."""
        ...

    def healthy(self) -> bool:
        """Whether the backend can take requests now."""
        ...

    def stats(self) -> BackendStats:
        """Its figures now (cached values, no I/O)."""
        ...

    @property
    def resident(self) -> bool:
        """Whether its model is in memory now (telemetry): False only for one that loads on
        demand and is unloaded; True for one loaded at start, and for a remote one."""
        ...

    async def restart(self) -> None:
        """End a stuck decode and be ready again (the supervisor calls it when
        ``stats().stuck`` says why); a backend that cannot get stuck does nothing."""
        ...

    async def start(self) -> None:
        """Load models / open connections. Called once before the first request."""
        ...

    async def close(self) -> None:
        """Release everything; pending generations are cancelled."""
        ...


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """What a backend is built from: its name (``local``, ``cloud``), the whole config,
    and the local model file (kinds with ``needs_model_file``)."""

    name: str
    cfg: Config
    model_path: Path | None = None


class BackendClass(Protocol):
    """A registered backend kind: a class that builds itself from a spec."""

    #: Whether it runs the model file named by ``[local] model``.
    needs_model_file: ClassVar[bool]

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> Backend:
        """A backend for ``spec`` (not started)."""
        ...


_C = TypeVar("_C", bound=BackendClass)
_REGISTRY: dict[str, type[BackendClass]] = {}

#: ``([local] backend, [local] isolation)`` -> the registered kind that serves it.
LOCAL_KINDS: dict[tuple[BackendKind, str], str] = {
    ("llama", "process"): "llama_process",
    ("llama", "thread"): "llama",
    ("fake", "process"): "fake",
    ("fake", "thread"): "fake",
}
#: The kind of the cloud backend (``[cloud] enabled``).
CLOUD_KIND = "cloud"
#: The modules whose classes register the kinds (imported on the first look-up; none of
#: them imports llama.cpp or the OpenAI SDK at module import).
MODULES = (
    "edged.backends.fake",
    "edged.backends.llama.thread",
    "edged.backends.llama.process",
    "edged.backends.cloud",
)


def _discover() -> None:
    for module in MODULES:
        importlib.import_module(module)


def register(kind: str) -> Callable[[type[_C]], type[_C]]:
    """Class decorator: make a backend kind constructible by name."""

    def deco(cls: type[_C]) -> type[_C]:
        _REGISTRY[kind] = cls
        return cls

    return deco


def factory(kind: str) -> type[BackendClass]:
    """The class registered for ``kind``; KeyError names the known kinds."""
    _discover()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown backend kind {kind!r}; known: {sorted(_REGISTRY)}") from None


def kinds() -> frozenset[str]:
    """Every registered kind."""
    _discover()
    return frozenset(_REGISTRY)


def build(kind: str, spec: BackendSpec) -> Backend:
    """A backend of ``kind`` for ``spec`` (not started)."""
    return factory(kind).from_spec(spec)
