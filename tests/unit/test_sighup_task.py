"""The SIGHUP handler's reload runs as a task the app holds (issue 13): the event loop keeps
only weak references to tasks, so an unreferenced one may be collected mid-run."""

from __future__ import annotations

import asyncio
import gc
import inspect
from types import SimpleNamespace

from edged.app import App


def test_a_spawned_task_is_held_until_it_ends_then_let_go() -> None:
    async def main() -> None:
        app = SimpleNamespace(_background=set())
        release, done = asyncio.Event(), asyncio.Event()

        async def reload() -> None:
            await release.wait()
            done.set()

        App._spawn(app, reload())  # type: ignore[arg-type]  # only _background is used
        gc.collect()
        assert len(app._background) == 1  # held while it runs
        release.set()
        await asyncio.wait_for(done.wait(), 2)
        await asyncio.sleep(0)
        assert not app._background  # let go once it ended

    asyncio.run(main())


def test_the_sighup_handler_spawns_its_reload() -> None:
    src = inspect.getsource(App)
    assert "self._spawn(self._on_sighup())" in src
    assert "ensure_future" not in src.replace("asyncio.ensure_future(coro)", "")
