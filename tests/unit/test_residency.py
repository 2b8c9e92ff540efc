"""Model residency (edged/backends/resident.py): the pure load plan, and the wrapper that
loads on demand, unloads after keep_alive_s idle, evicts or refuses with a reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edged.backends.resident import Plan, Residency, Resident, mem_available_mb, plan_load
from edged.errors import BackendFailed
from edged.types import (
    BackendStats,
    Finished,
    ReplyAddress,
    Request,
    Started,
    StreamEvent,
    TextDelta,
    Usage,
)
from tests.unit.doubles import Script

OK: list[StreamEvent | Exception] = [Started(), TextDelta("hi"), Finished("stop", Usage(1, 1))]


class Measured(Script):
    """The scripted backend with the figures a real one has."""

    def stats(self) -> BackendStats:
        return BackendStats(queue_depth=0, tokens_per_s=200.0, ttft_s=0.05)


def test_a_model_that_fits_loads() -> None:
    assert plan_load(250, {}, max_resident_mb=1000, mem_available_mb=4000) == Plan()


def test_idle_models_are_evicted_longest_idle_first_to_fit_the_budget() -> None:
    resident = {"a": (400.0, 5.0), "b": (400.0, 50.0), "busy": (100.0, None)}
    assert plan_load(300, resident, max_resident_mb=1000, mem_available_mb=None) == Plan(
        evict=("b",)
    )


def test_memavailable_counts_what_eviction_frees_and_keeps_a_reserve() -> None:
    resident = {"a": (300.0, 1.0)}
    assert plan_load(300, resident, max_resident_mb=None, mem_available_mb=400) == Plan(
        evict=("a",)
    )
    refused = plan_load(300, {}, max_resident_mb=None, mem_available_mb=500)
    assert refused.refused is not None and "MemAvailable 500 MB" in refused.refused


def test_busy_models_are_never_evicted_so_the_load_is_refused() -> None:
    p = plan_load(300, {"busy": (800.0, None)}, max_resident_mb=1000, mem_available_mb=None)
    assert p.refused is not None and "max_resident_mb 1000" in p.refused


def test_memavailable_is_read_from_proc_meminfo(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 2048000 kB\n")
    assert mem_available_mb(tmp_path) == 2000.0
    assert mem_available_mb(tmp_path / "nowhere") is None


def _request() -> Request:
    return Request(
        id="r",
        messages=(),
        max_tokens=4,
        temperature=0.0,
        stream=False,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=0.0,
    )


async def _drain(b: Resident) -> list[StreamEvent]:
    return [ev async for ev in b.generate(_request())]


def test_loads_on_demand_unloads_when_idle_and_loads_again() -> None:
    async def main() -> tuple[int, bool, bool, int]:
        made: list[Measured] = []

        def make() -> Measured:
            made.append(Measured(list(OK)))
            return made[-1]

        book = Residency(None, lambda: 4000.0)
        r = Resident("gemma", make, size_mb=250, keep_alive_s=0.2, book=book)
        await r.start()
        assert r.inner is None and r.healthy()  # nothing loaded until asked
        await _drain(r)
        loaded = r.inner is not None
        await asyncio.sleep(0.5)
        unloaded = r.inner is None
        await _drain(r)
        await r.close()
        return len(made), loaded, unloaded, int(r.load_s is not None)

    assert asyncio.run(main()) == (2, True, True, 1)


def test_a_load_that_does_not_fit_fails_before_the_first_token_with_the_reason() -> None:
    async def main() -> BackendFailed:
        book = Residency(None, lambda: 100.0)
        r = Resident("gemma", lambda: Measured(list(OK)), size_mb=250, keep_alive_s=1, book=book)
        with pytest.raises(BackendFailed) as e:
            await _drain(r)
        await r.close()
        return e.value

    err = asyncio.run(main())
    assert err.before_first_token and "MemAvailable" in err.message


def test_an_idle_model_is_evicted_for_another() -> None:
    async def main() -> tuple[bool, bool]:
        book = Residency(300, lambda: None)
        a = Resident("a", lambda: Measured(list(OK)), size_mb=200, keep_alive_s=60, book=book)
        b = Resident("b", lambda: Measured(list(OK)), size_mb=200, keep_alive_s=60, book=book)
        await _drain(a)
        await _drain(b)
        out = (a.inner is None, b.inner is not None)
        await a.close()
        await b.close()
        return out

    assert asyncio.run(main()) == (True, True)


def test_an_unloaded_model_counts_its_load_time_in_the_estimate() -> None:
    async def main() -> tuple[BackendStats, bool]:
        book = Residency(None, lambda: None)
        r = Resident("g", lambda: Measured(list(OK)), size_mb=10, keep_alive_s=60, book=book)
        await _drain(r)
        r.load_s = 0.5
        await r._unload("test")
        return r.stats(), r.resident

    stats, resident = asyncio.run(main())
    assert not resident
    assert stats.tokens_per_s == 200.0 and stats.ttft_s == pytest.approx(0.55)
