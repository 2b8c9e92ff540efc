"""Small asyncio helpers that work the same on Python 3.10 and later."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Protocol

from edged.errors import Timeout

log = logging.getLogger("edged.reload")


@asynccontextmanager
async def deadline(at_s: float | None, what: str = "deadline") -> AsyncIterator[None]:
    """Cancel the body at monotonic instant ``at_s`` and raise :class:`Timeout` instead.

    ``None`` means no deadline. A deadline already past raises at once, before the body runs.
    """
    if at_s is None:
        yield
        return
    loop = asyncio.get_running_loop()
    remaining = at_s - time.monotonic()
    if remaining <= 0:
        raise Timeout(f"{what} passed {-remaining * 1000:.0f} ms before serving began")
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = loop.call_at(loop.time() + remaining, expire)
    try:
        yield
    except asyncio.CancelledError:
        if not expired:
            raise
        uncancel = getattr(task, "uncancel", None)
        if uncancel is not None:
            uncancel()
        raise Timeout(f"{what} passed before the answer was complete") from None
    finally:
        handle.cancel()


class Closable(Protocol):
    def close(self) -> None: ...


async def retire(
    parts: tuple[Closable, ...],
    users: list[asyncio.Task[None]],
    current: Callable[[], tuple[Closable, ...]],
) -> None:
    """Close the parts a reload replaced (their thread pools) once the requests that started
    under them have finished; never one that is in use again (``current``: what is in use
    now)."""
    if users:
        await asyncio.wait(users)
    now = current()
    closed = 0
    for part in parts:
        if all(part is not p for p in now):
            part.close()
            closed += 1
    log.debug("event=retired closed=%d waited_for=%d", closed, len(users))


class CancelScope:
    """One request's client-side cancel (barge-in): recorded at any time, acted on only while
    the request is in its backend stage (:meth:`armed`), where the task is cancelled and the
    stage turns the cancellation into a ``cancelled`` result (:func:`take_cancel`).

    Outside that stage a cancel is only recorded; the stage sees it as it begins.
    """

    __slots__ = ("_fired", "_task", "requested")

    def __init__(self) -> None:
        self.requested = False
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    def request(self) -> bool:
        """Ask the request to stop; False when it was asked already (nothing changes)."""
        if self.requested:
            return False
        self.requested = True
        if self._task is not None and not self._fired:
            self._fired = True
            self._task.cancel()
        return True

    @asynccontextmanager
    async def armed(self) -> AsyncIterator[None]:
        """The block in which a cancel cancels the current task at once. A cancel that
        fired but was not absorbed in the block (it came as the block ended) is absorbed
        on the way out, so it never reaches the code after it."""
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        try:
            yield
        finally:
            self._task = None
            if self._fired:
                try:
                    await asyncio.sleep(0)  # the pending cancellation lands here
                except asyncio.CancelledError:
                    if not take_cancel():
                        raise
                self._fired = False


_scope: ContextVar[CancelScope | None] = ContextVar("edged_cancel_scope", default=None)


def set_cancel_scope(scope: CancelScope) -> None:
    """Make ``scope`` the current task's cancel scope (call inside the request's task)."""
    _scope.set(scope)


def cancel_scope() -> CancelScope | None:
    """The current request's cancel scope, or None (no ingress set one)."""
    return _scope.get()


def take_cancel() -> bool:
    """In an ``except CancelledError``: True when the cancellation was the client's cancel
    (it is then absorbed: the task is no longer cancelling), False when it must be re-raised
    (shutdown, deadline)."""
    scope = _scope.get()
    if scope is None or not scope._fired:
        return False
    scope._fired = False  # absorbed once
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:  # Python 3.11+
        uncancel()
    return True
