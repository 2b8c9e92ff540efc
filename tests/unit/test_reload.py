"""A reload's replaced guardian and router are closed, but only once nothing uses them."""

from __future__ import annotations

import asyncio
from typing import Any

from edged.aio import retire


class Part:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_replaced_parts_close_after_the_requests_that_use_them() -> None:
    async def main() -> None:
        guardian, router = Part(), Part()
        release = asyncio.Event()

        async def request() -> None:
            await release.wait()

        user = asyncio.create_task(request())
        new: tuple[Any, Any] = (Part(), Part())
        task = asyncio.create_task(retire((guardian, router), [user], lambda: new))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert guardian.closed == router.closed == 0  # a request still runs under them
        release.set()
        await asyncio.wait_for(task, 2)
        assert guardian.closed == router.closed == 1
        assert new[0].closed == new[1].closed == 0

    asyncio.run(main())


def test_a_part_that_is_in_use_again_is_not_closed() -> None:
    """A reload that kept the router (no semantic routes) must not close it."""

    async def main() -> None:
        guardian, router = Part(), Part()
        await retire((guardian, router), [], lambda: (Part(), router))  # type: ignore[arg-type]
        assert guardian.closed == 1 and router.closed == 0

    asyncio.run(main())
