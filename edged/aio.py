"""Small asyncio helpers that work the same on Python 3.10 and later."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
