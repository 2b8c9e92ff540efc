from __future__ import annotations

import asyncio
import time

import pytest

from edged.aio import deadline
from edged.errors import Timeout


def test_deadline_cancels_the_body_and_raises_timeout() -> None:
    async def main() -> float:
        t0 = time.monotonic()
        with pytest.raises(Timeout):
            async with deadline(time.monotonic() + 0.05):
                await asyncio.sleep(5)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0


def test_past_deadline_raises_before_the_body_runs() -> None:
    ran = []

    async def main() -> None:
        async with deadline(time.monotonic() - 1):
            ran.append(1)

    with pytest.raises(Timeout, match="before serving began"):
        asyncio.run(main())
    assert ran == []


def test_no_deadline_and_outside_cancellation_pass_through() -> None:
    async def main() -> None:
        async with deadline(None):
            await asyncio.sleep(0)

        async def body() -> None:
            async with deadline(time.monotonic() + 10):
                await asyncio.sleep(5)

        t = asyncio.create_task(body())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(main())
