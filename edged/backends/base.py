"""The backend interface and the registry of backend kinds.

A backend turns a :class:`~edged.types.Request` into a stream of events: one ``Started``,
any number of ``TextDelta``, then one ``Finished``. Closing the stream early (``aclose`` or
task cancellation) cancels the generation. Errors are raised as :mod:`edged.errors` types.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Protocol, runtime_checkable

from edged.types import BackendStats, Request, StreamEvent


@runtime_checkable
class Backend(Protocol):
    """What the pipeline needs from any backend, local or remote."""

    name: str

    def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """Stream events for one request; closing the iterator cancels the generation."""
        ...

    def healthy(self) -> bool:
        """Whether the backend can take requests now."""
        ...

    def stats(self) -> BackendStats:
        """Its figures now (cached values, no I/O)."""
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


BackendFactory = Callable[..., Backend]
_REGISTRY: dict[str, BackendFactory] = {}


def register(kind: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class decorator: make a backend kind constructible by name."""

    def deco(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[kind] = factory
        return factory

    return deco


def factory(kind: str) -> BackendFactory:
    """The factory registered for ``kind``; KeyError names the known kinds."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown backend kind {kind!r}; known: {sorted(_REGISTRY)}") from None
